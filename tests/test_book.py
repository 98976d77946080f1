"""The book (``make book``, docs/book/conf.py) as a reader sees it, in a real headless Chromium.

The test builds the site if it is missing or older than the notebooks and the book's pages
(``sphinx-build``, incremental; ``make test-browser`` builds it first), serves
``_build/book/html`` on 127.0.0.1 (``http.server`` in a thread) and opens the site root, the
index, the appendix and every numbered notebook's page. It checks that

- the page renders: its ``<h1>`` is the notebook's title (the first line of its first cell);
- every figure is there: one ``<img>`` per stored PNG output of the notebook, each loaded
  (``naturalWidth > 0``);
- the Colab badge and the theme's Colab button open this notebook in the repository
  (``oasis_lib.paths.REPO_URL``);
- every internal link answers HTTP 200 on the local server, and an anchor (``#...``) names an
  element of its page; every file the page itself loads from the server (CSS, JS, MathJax's
  fonts, images) answers without an error;
- the maths is typeset by the MathJax served with the site (no CDN);
- the index lists every notebook, in order.

The browser reaches nothing but 127.0.0.1: every other request is aborted, so no page waits on
the network (the badge image and the widget manager come from CDNs; their absence is expected
offline). External links are not followed. Screenshots go to ``test-artifacts/book/``. Needs
Debian's Chromium and playwright for Python, as tests/test_browser.py.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright for Python is not installed (pip install playwright; use Debian's "
           "chromium, never `playwright install`)")

from lab_server import chromium_path  # noqa: E402
from test_browser import CHROMIUM_ARGS, VIEWPORT  # noqa: E402

from oasis_lib.paths import REPO_URL  # noqa: E402

CHROMIUM = chromium_path()
if CHROMIUM is None:
    pytest.skip("browser tests: /usr/bin/chromium not found (apt-get install chromium)",
                allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "_build" / "book" / "html"
ARTIFACTS = REPO / "test-artifacts" / "book"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BOOK_SOURCES = [*NOTEBOOKS, *(REPO / "docs" / "book").rglob("*"),
                *(REPO / "benchmarks" / "results").glob("*.md")]
SPHINX_BUILD = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
                "-c", "docs/book", ".", str(SITE)]  # as `make book`
COLAB = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"
MATHJAX_BUDGET = 30.0  # seconds for MathJax to typeset a page (a busy 2-core CPU)
# The one kind of local file a page may ask for in vain: MathJax's TeX fonts, which the
# jupyter-server-mathjax package does not ship (it has STIX-Web, which the visible maths uses).
# Chromium asks for them for the hidden MathML copy that MathJax adds for screen readers
# (its CSS names MathJax_Script etc. for \mathcal and the like).
MAY_BE_MISSING = "/_static/mathjax/fonts/HTML-CSS/TeX/"


def notebook_title(path: Path) -> str:
    """The first line of the notebook's first cell, without its ``# ``."""
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    return first.removeprefix("# ").strip()


def stored_pngs(path: Path) -> int:
    """The PNG outputs stored in the notebook's code cells (not those inside widget state)."""
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in output.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs)


def page_url(base: str, notebook: Path) -> str:
    return f"{base}/notebooks/{notebook.stem}.html"


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site: built (or brought up to date) unless newer than every source."""
    index = SITE / "docs" / "book" / "index.html"
    newest = max(p.stat().st_mtime for p in BOOK_SOURCES if p.is_file())
    if not index.exists() or index.stat().st_mtime < newest:
        if not all(importlib.util.find_spec(m) for m in ("sphinx", "myst_nb")):
            pytest.skip("the book is not built and its tools are missing: make book")
        start = time.perf_counter()
        subprocess.run(SPHINX_BUILD, cwd=REPO, check=True)
        print(f"\nbook built in {time.perf_counter() - start:.1f} s")
    return SITE


@pytest.fixture(scope="module")
def server(site):
    """``http.server`` on 127.0.0.1 (a free port) serving the site, in a thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    """A page that reaches only the local server; ``page.failed`` collects the local requests
    that failed or answered an error status, ``page.blocked`` the hosts it was kept from."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.failed, page.blocked = [], set()

    def route(r):
        host = urllib.parse.urlsplit(r.request.url).hostname
        if host == "127.0.0.1" or r.request.url.startswith("data:"):
            r.continue_()
        else:
            page.blocked.add(host)
            r.abort()

    page.route("**/*", route)

    def local(url: str) -> bool:
        return url.startswith(server) and MAY_BE_MISSING not in url

    page.on("response", lambda response: response.status >= 400 and local(response.url)
            and page.failed.append(f"{response.status} {response.url}"))
    page.on("requestfailed", lambda request: local(request.url)
            and page.failed.append(f"failed {request.url}"))
    try:
        yield page
    finally:
        context.close()


@functools.cache
def fetch(url: str) -> tuple[int, str]:
    """HTTP status and body of a local URL (cached: many pages link to the same files)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            kind = response.headers.get_content_type()
            return response.status, body.decode("utf-8", "replace") if kind == "text/html" else ""
    except urllib.error.HTTPError as error:
        return error.code, ""


def check_links(page, server: str) -> int:
    """Every link of the page into the site answers 200, and its anchor is an id of its target.
    Returns the number of distinct internal targets checked."""
    hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)")
    internal = sorted({h for h in hrefs if h.startswith(server + "/")})
    assert internal, "no internal links on the page"
    broken = []
    for href in internal:
        target, _, anchor = href.partition("#")
        status, body = fetch(target)
        if status != 200:
            broken.append(f"{status} {href}")
        elif anchor and body and not re.search(
                rf'id="{re.escape(urllib.parse.unquote(anchor))}"', body):
            broken.append(f"no id {anchor!r} in {target}")
    assert not broken, f"{page.url}: broken internal links:\n" + "\n".join(broken)
    return len(internal)


def wait_for_maths(page) -> int:
    """Wait until MathJax has typeset every maths node of the page; returns how many."""
    maths = "span.math.notranslate, div.math.notranslate"  # Sphinx's maths nodes
    count = page.eval_on_selector_all(maths, "ns => ns.length")
    if count:
        page.wait_for_function(
            """() => window.MathJax && MathJax.Hub && MathJax.Hub.queue &&
                     MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running === 0 &&
                     document.querySelectorAll('.MathJax_Processing').length === 0 &&
                     document.querySelectorAll('.MathJax, .MathJax_Display').length > 0""",
            timeout=MATHJAX_BUDGET * 1000)
        errors = page.eval_on_selector_all(".MathJax_Error, .MathJax merror", "es => es.length")
        typeset = page.eval_on_selector_all(
            maths,
            "ns => ns.filter(n => n.querySelector('.MathJax, .MathJax_Display')).length")
        assert errors == 0, f"{page.url}: {errors} maths expressions failed in MathJax"
        assert typeset >= count, f"{page.url}: MathJax typeset {typeset} of {count} expressions"
    return count


def test_book_index(page, server, artifacts):
    """The site root leads to the index, which lists every notebook in order."""
    page.goto(f"{server}/index.html")
    page.wait_for_url("**/docs/book/index.html")
    h1 = page.eval_on_selector("article h1", "h => h.firstChild.textContent.trim()")
    assert h1 == "Denoising diffusion on brain MRI"
    listed = page.eval_on_selector_all(
        "article .toctree-wrapper a.reference.internal",
        "as => as.map(a => [a.getAttribute('href'), a.textContent.trim()])")
    expected = [(f"../../notebooks/{nb.stem}.html", notebook_title(nb)) for nb in NOTEBOOKS]
    assert [tuple(x) for x in listed if "notebooks/" in x[0]] == expected
    assert any(href.endswith("benchmarks.html") for href, _ in listed)
    check_links(page, server)
    page.screenshot(path=artifacts / "index.png", full_page=True)
    assert not page.failed, page.failed
    print(f"\nindex: {len(expected)} notebooks listed; blocked hosts {sorted(page.blocked)}")


def test_book_benchmarks(page, server, artifacts):
    """The appendix shows the four benchmark tables."""
    page.goto(f"{server}/docs/book/benchmarks.html")
    assert page.eval_on_selector("article h1", "h => h.firstChild.textContent.trim()") == \
        "Benchmarks"
    assert page.eval_on_selector_all("article table", "ts => ts.length") == 4
    check_links(page, server)
    page.screenshot(path=artifacts / "benchmarks.png")
    assert not page.failed, page.failed


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem[:2] for nb in NOTEBOOKS])
def test_book_notebook_page(page, server, artifacts, notebook):
    start = time.perf_counter()
    page.goto(page_url(server, notebook))
    # The page renders: its title is the notebook's.
    h1 = page.eval_on_selector("article h1", "h => h.firstChild.textContent.trim()")
    assert h1 == notebook_title(notebook)

    # The figures: one loaded <img> per stored PNG output (the badge is an external image).
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all(
        "article img",
        """is => is.filter(i => i.src.startsWith(location.origin)).map(i => ({
               src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))""")
    assert len(images) == stored_pngs(notebook), (
        f"{len(images)} figures on the page, {stored_pngs(notebook)} PNG outputs stored")
    assert all(i["ok"] for i in images), [i["src"] for i in images if not i["ok"]]

    # The Colab badge (first cell) and the theme's launch button open this notebook.
    colab = COLAB.format(repo=REPO_URL.removeprefix("https://github.com/"), name=notebook.name)
    badge = page.eval_on_selector_all(
        "article a[href] img[src*='colab-badge']", "is => is.map(i => i.closest('a').href)")
    assert badge == [colab]
    assert page.eval_on_selector_all(f"a[href='{colab}']", "as => as.length") >= 2

    links = check_links(page, server)
    maths = wait_for_maths(page)
    page.screenshot(path=artifacts / f"{notebook.stem}.png")
    if images:  # the first figure in view, as a reader scrolling down meets it
        page.locator("article img[src^='../_images']").first.scroll_into_view_if_needed()
        page.screenshot(path=artifacts / f"{notebook.stem}-figure.png")
    assert not page.failed, f"local requests failed: {page.failed}"
    print(f"\n{notebook.stem}: {len(images)} figures, {links} internal links, {maths} maths, "
          f"{time.perf_counter() - start:.1f} s; blocked hosts {sorted(page.blocked)}")
