"""Every notebook of the series follows one skeleton (STYLE.md sections 8-10).

Title and "What you will learn" first, an "Open in Colab" badge, a setup cell that installs
oasis_lib only when it cannot be imported, imports with versions printed, one config cell of cost
knobs read from the environment, short cells, figures with captions, and stored outputs that
come from one clean top-to-bottom run without errors (what nbval compares against).
These checks read the JSON only; running the notebooks is ``make test-notebooks``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from oasis_lib.pretrained import REPO_URL

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
MAX_LINES = 25
COLAB = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _has_figure(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def test_series_is_numbered_and_complete():
    names = [p.stem for p in NOTEBOOKS]
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)]
    assert len(names) >= 6, names


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def nb_path(request) -> Path:
    return request.param


def test_valid_notebook_format(nb_path):
    nbformat.validate(_read(nb_path))


def test_title_and_what_you_will_learn_first(nb_path):
    first = _read(nb_path).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# "), "the first cell starts with a '# ' title"
    assert "What you will learn" in first.source
    assert "Prerequisites" in first.source


def test_open_in_colab_badge(nb_path):
    first = _read(nb_path).cells[0].source
    repo = REPO_URL.removeprefix("https://github.com/")
    match = re.search(COLAB.format(repo=re.escape(repo), name=re.escape(nb_path.name)), first)
    assert match, f"no Open in Colab link to {repo}/notebooks/{nb_path.name} in the first cell"


def test_setup_cell_clones_and_installs_only_when_missing(nb_path):
    setup = _code(_read(nb_path))[0].source
    assert re.search(r"^try:\n\s+import oasis_lib\nexcept ImportError:\n", setup, re.MULTILINE), \
        "the first code cell is the guarded install"
    # The clone carries checkpoints/ (a pip install of the package would not), from our URL.
    assert f"git clone -q --depth 1 {REPO_URL}.git" in setup
    assert "%pip install -q -e oasis-ddpm-tutorial" in setup


def test_setup_cell_is_valid_ipython():
    """What IPython makes of the setup cell: shell and magic calls inside the except branch."""
    from IPython.core.inputtransformer2 import TransformerManager

    setup = _code(_read(NOTEBOOKS[0]))[0].source
    python = TransformerManager().transform_cell(setup)
    compile(python, "setup-cell", "exec")  # raises SyntaxError if the transform went wrong
    branch = python.split("except ImportError:")[1]
    assert "get_ipython().system(" in branch
    assert "get_ipython().run_line_magic('pip', 'install -q -e oasis-ddpm-tutorial')" in branch
    assert all(_code(_read(nb))[0].source == setup for nb in NOTEBOOKS), "one setup cell for all"


def test_repository_url_is_the_one_in_pyproject():
    toml = (NOTEBOOK_DIR.parent / "pyproject.toml").read_text()
    assert f'Repository = "{REPO_URL}"' in toml


def test_imports_cell_uses_inline_backend_and_prints_versions(nb_path):
    imports = _code(_read(nb_path))[1]
    assert imports.source.startswith("%matplotlib inline")  # same backend under nbval and Lab
    text = "".join(o.get("text", "") for o in imports.outputs)
    assert re.search(r"^versions: python \S+ \| torch \S+ .*oasis_lib \S+", text, re.MULTILINE)


def test_one_config_cell_reading_the_environment(nb_path):
    cells = _code(_read(nb_path))
    configs = [c for c in cells if c.source.startswith("# Config")]
    assert len(configs) == 1, "exactly one cell starts with '# Config'"
    config = configs[0].source
    uses_ci = any(re.search(r"\bCI\b", c.source) for c in cells if c is not configs[0])
    if uses_ci:  # CI shrinks cost through the environment, never through edits (STYLE.md 9)
        assert 'CI = os.environ.get("OASIS_CI"' in config
    for c in cells:
        if c is not configs[0]:
            assert "os.environ" not in c.source, "only the config cell reads the environment"


def test_cells_are_short(nb_path):
    long = {i: len(c.source.splitlines()) for i, c in enumerate(_read(nb_path).cells)
            if c.cell_type == "code" and len(c.source.splitlines()) > MAX_LINES}
    assert not long, f"code cells longer than {MAX_LINES} lines (cell: lines): {long}"


def test_executed_top_to_bottom_without_errors(nb_path):
    cells = _code(_read(nb_path))
    counts = [c.execution_count for c in cells]
    assert None not in counts, "every code cell has been executed"
    assert counts == list(range(1, len(cells) + 1)), "outputs come from one run, in order"
    errors = [i for i, c in enumerate(cells) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"stored error outputs in code cells {errors}"


def test_figures_are_embedded_and_captioned(nb_path):
    cells = _read(nb_path).cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        for o in cell.outputs:
            plain = "".join(o.get("data", {}).get("text/plain", ""))
            if plain.startswith("<Figure size"):
                assert "image/png" in o.data, f"cell {i}: figure stored without its PNG"
        if _has_figure(cell):
            around = [cells[j] for j in (i - 1, i + 1) if 0 <= j < len(cells)]
            assert any(c.cell_type == "markdown" for c in around), f"cell {i}: figure without " \
                "a caption in a markdown cell right before or after it"


def test_sliders_are_one_line_and_ignored_by_nbval(nb_path):
    for i, cell in enumerate(_code(_read(nb_path))):
        if re.search(r"\b\w+_slider\(|\binteract(ive)?\(", cell.source):
            lines = cell.source.splitlines()
            assert lines[0] == "# NBVAL_IGNORE_OUTPUT", f"code cell {i}: slider without marker"
            assert len(lines) == 2, f"code cell {i}: a slider cell is the marker and one call"


def test_no_semicolon_to_hide_output(nb_path):
    """nbval runs cells without storing history, so IPython ignores a trailing ';' there and the
    value is shown anyway (a mismatch with the stored output): assign to a name instead."""
    for i, cell in enumerate(_code(_read(nb_path))):
        lines = [ln for ln in cell.source.splitlines() if ln.strip()]
        assert not (lines and lines[-1].rstrip().endswith(";")), f"code cell {i} ends with ';'"


def _notebook_conftest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_conftest", NOTEBOOK_DIR / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nbval_output_timeout_is_raised_on_every_cell():
    """nbval waits a fixed 5 s for each output message; notebooks/conftest.py raises that wait
    (a loaded machine failed with "Timeout of 5 seconds exceeded waiting for output")."""
    import inspect

    from nbval.plugin import IPyNbCell

    assert "self.output_timeout = 5" in inspect.getsource(IPyNbCell.__init__), \
        "nbval changed how it sets its output timeout: revisit notebooks/conftest.py"
    conftest = _notebook_conftest()

    class IPyNbCell:  # noqa: N801 - stands in for nbval's item class, matched by name
        output_timeout = 5

    class Other:
        output_timeout = 5

    class Config:
        def __init__(self, value):
            self.value = value

        def getoption(self, name):
            assert name == "nbval_output_timeout"
            return self.value

    items = [IPyNbCell(), Other()]
    conftest.pytest_collection_modifyitems(Config(conftest.OUTPUT_TIMEOUT), items)
    assert [i.output_timeout for i in items] == [conftest.OUTPUT_TIMEOUT, 5]
    assert conftest.OUTPUT_TIMEOUT >= 60
    with pytest.raises(ValueError, match="must be > 0"):
        conftest.pytest_collection_modifyitems(Config(0.0), items)


def test_every_notebook_runs_a_checker_on_its_solution(nb_path):
    """Each notebook has an exercise whose checker is run on the library's solution, and the
    stored output says it passed (nbval re-runs the cell, so CI checks the solution)."""
    ran = []
    for cell in _code(_read(nb_path)):
        m = re.search(r"exercises\.check_(\w+)\(exercises\.solution_(\w+)\)", cell.source)
        if m and m.group(1) == m.group(2):
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert text.startswith(f"{m.group(1)}: passed"), f"{m.group(1)}: {text!r}"
            ran.append(m.group(1))
    assert ran, "no exercise checker is run on its solution"


SOURCE_BLOCK = re.compile(r"\A```python\n# (oasis_lib/[\w/]+\.py): ([\w.]+)"
                          r"(?:, lines (\d+)-(\d+))?\n(.*)\n```\Z", re.DOTALL)


def _source_of(path: Path, qualname: str) -> list[str] | None:
    """The lines of the class or function ``qualname`` in ``path`` (decorators included, as
    :func:`inspect.getsource` gives them), found by name with ``ast``; None if there is none."""
    text = path.read_text()
    nodes, node = ast.parse(text).body, None
    for part in qualname.split("."):
        node = next((n for n in nodes if isinstance(n, ast.ClassDef | ast.FunctionDef |
                                                    ast.AsyncFunctionDef) and n.name == part), None)
        if node is None:
            return None
        nodes = node.body
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return text.splitlines()[first - 1:node.end_lineno]


def test_source_of_finds_by_name():
    lines = _source_of(NOTEBOOK_DIR.parent / "oasis_lib/training/ema.py", "EMA.update")
    assert lines[0].strip() == "@torch.no_grad()"
    assert lines[1].strip().startswith("def update(")
    assert _source_of(NOTEBOOK_DIR.parent / "oasis_lib/training/ema.py", "EMA.nothing") is None


def test_shown_source_is_the_current_source(nb_path):
    """A cell that shows library code (``show_source``, ``exercises.solution``) stores the code
    under its file and name (``# oasis_lib/x.py: Class.method[, lines a-b]``, a and b within
    the object); after a change to that object the stored copy must be re-executed. A change
    elsewhere in the file does not matter."""
    root = NOTEBOOK_DIR.parent
    stale = []
    for i, cell in enumerate(_code(_read(nb_path))):
        for o in cell.outputs:
            text = "".join(o.get("data", {}).get("text/markdown", ""))
            if not text.startswith("```python\n# oasis_lib/"):
                continue
            m = SOURCE_BLOCK.match(text)
            if not m:
                stale.append(f"code cell {i}: a source header of another format")
                continue
            path, name, a, b, shown = m.groups()
            lines = _source_of(root / path, name)
            if lines is not None and a is not None:
                lines = lines[int(a) - 1:int(b)]
            if lines is None or "\n".join(lines) != shown:
                stale.append(f"code cell {i}: {path}: {name}" + (f", lines {a}-{b}" if a else ""))
    assert not stale, f"stale source outputs (re-execute the notebook): {stale}"


def test_plain_nbval_gets_the_settings_of_the_stored_outputs(monkeypatch):
    """A teacher's plain `pytest --nbval notebooks/` (no Makefile) must run the kernels with the
    settings the outputs were stored with, whatever the machine's core count."""
    conftest = _notebook_conftest()
    assert conftest.KERNEL_ENV == {"OASIS_CI": "1", "OMP_NUM_THREADS": "1"}
    for key in conftest.KERNEL_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a user set stays
    conftest.pytest_configure(None)
    import os

    assert os.environ["OASIS_CI"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "1"
