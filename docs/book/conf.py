"""Sphinx configuration of the book: the numbered notebooks as a static website (`make book`).

The pages are rendered from the outputs committed in the notebooks; nothing is executed. The
notebooks are read where they live: the source folder is the repository root
(``sphinx-build -c docs/book . _build/book/html``) and only ``docs/book/*.md`` and
``notebooks/NN_*.ipynb`` are pages. So a page's path is the notebook's path in the repository
(``notebooks/02_forward_noising.html``), links between notebooks
(``[02 · ...](02_forward_noising.ipynb)``) resolve to the built pages, and the theme's Colab
button opens ``notebooks/NN_x.ipynb`` of the repository. The site's ``index.html`` sends the
reader on to ``docs/book/index.html``.

Why Sphinx + myst-nb + sphinx-book-theme and not Jupyter Book 2 (mystmd): mystmd downloads its
site template from the internet at build time, which CI and an offline machine cannot reach.
Everything here installs from PyPI (``pip install -e ".[book]"``) and builds offline, MathJax
included (served from the jupyter-server-mathjax package, see ``mathjax_path``).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent.parent


def _repo_url() -> str:
    """``oasis_lib.paths.REPO_URL``, read without importing the package (and torch)."""
    spec = importlib.util.spec_from_file_location("_oasis_paths", REPO / "oasis_lib" / "paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REPO_URL


REPO_URL = _repo_url()

project = "Denoising diffusion on brain MRI"
author = "the oasis-ddpm-tutorial contributors"
copyright = "the oasis-ddpm-tutorial contributors, MIT licence"  # noqa: A001 (Sphinx's name)

extensions = ["myst_nb"]

# The book pages and the numbered notebooks only (not notebooks/conftest.py, the README, ...).
# A new notebook 10 appears without edits: the index's toctree globs the same pattern.
root_doc = "docs/book/index"
include_patterns = ["docs/book/*.md", "notebooks/[0-9][0-9]_*.ipynb"]
# Every other top-level folder is skipped whole (.venv, data, outputs, ... are large to walk).
exclude_patterns = sorted(p.name for p in REPO.iterdir()
                          if p.is_dir() and p.name not in ("docs", "notebooks"))
exclude_patterns += ["**/.ipynb_checkpoints"]

# Render the committed outputs; never run a kernel.
nb_execution_mode = "off"
# $...$ and $$...$$ as in Jupyter; amsmath environments (\begin{aligned}...) in display maths.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# Broken references fail the build (`make book` passes -W --keep-going -n): a link to a missing
# notebook or anchor is a warning, hence an error. Links to a repository file that is not a page
# (../data/README.md) go to GitHub (`LinkOutsideBook` below). The stored widget state and views
# raise no warning (myst-nb embeds them; their manager loads from a CDN in the reader's
# browser), so nothing is suppressed.
nitpicky = True

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "repository_url": REPO_URL,
    "repository_branch": "main",
    # "" because the pages' paths (notebooks/NN_x) are the notebooks' paths in the repository:
    # the Colab button opens REPO_URL/blob/main/notebooks/NN_x.ipynb.
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
}
# The site root redirects to the book's first page (root_doc lives in docs/book/).
html_extra_path = ["root"]
html_static_path = ["_static"]
html_css_files = ["mathjax2.css"]
html_last_updated_fmt = None

# MathJax without a CDN: MathJax 2.7 from the jupyter-server-mathjax package (PyPI; what the
# classic Jupyter Notebook serves), copied into _static/mathjax at build time. Sphinx's default
# is MathJax 4 from a CDN, which does not load offline, and no PyPI package ships MathJax 3 or 4
# as plain files. The package has one full configuration, HTML-CSS output and STIX-Web fonts.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
myst_update_mathjax = False  # it writes a MathJax 3/4 config; ours is the MathJax 2 one below
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processRefs": False,
        "processEnvironments": False,
        # As myst's MathJax 3 setting: typeset only the maths nodes, not the rest of the page.
        "ignoreClass": "tex2jax_ignore|mathjax_ignore|document",
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
    },
    # The fonts the package ships (as the classic Notebook's settings); no image fonts.
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None},
    "messageStyle": "none",
}


def _copy_mathjax(app) -> None:
    """Copy MathJax 2 (fonts, TeX input, CommonHTML output) into the site's _static/mathjax."""
    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dest = Path(app.outdir) / "_static" / "mathjax"
    if not (dest / "MathJax.js").exists():
        shutil.copytree(src, dest, dirs_exist_ok=True)


class LinkOutsideBook(SphinxTransform):
    """A link from a page to a repository file that is not a page of the book (for example
    ``../data/README.md``) becomes a link to that file on GitHub (``REPO_URL/blob/main/<path>``):
    the reader gets the file with its own links, not a broken link or a copy in _downloads."""

    default_priority = 5  # before myst resolves the links and the downloads are collected

    def apply(self) -> None:
        for node in list(self.document.findall(addnodes.download_reference)):
            doc_dir = Path(self.env.doc2path(node["refdoc"])).parent
            self._to_github(node, (doc_dir / node["reftarget"]).resolve())
        for node in list(self.document.findall(addnodes.pending_xref)):
            docname = node.get("reftarget", "")
            if node.get("refdomain") != "doc" or docname in self.env.found_docs:
                continue
            files = [REPO / f"{docname}{suffix}" for suffix in self.config.source_suffix]
            if any(f.is_file() for f in files):
                self._to_github(node, next(f for f in files if f.is_file()))

    @staticmethod
    def _to_github(node, path: Path) -> None:
        uri = f"{REPO_URL}/blob/main/{path.relative_to(REPO).as_posix()}"
        node.replace_self(nodes.reference("", "", *node.children, internal=False, refuri=uri))


def setup(app):
    app.connect("builder-inited", _copy_mathjax)
    app.add_transform(LinkOutsideBook)
