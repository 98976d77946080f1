"""The series as a student meets it: linked, short, honest, with solutions hidden.

Reads the committed notebooks only (running them is ``make test-notebooks``). The prose
measures follow the project's writing rules: sentences of at most 18 words on average and no
markdown cell over 200 words, counted on prose with code, maths, tables and headings removed.
The series list that ``tools/notebooks.py nav`` writes at the end of every notebook is left out
of the prose measures (a list of titles is not prose).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SERIES_HEADING = "### The series"  # as tools/notebooks.py writes it
MAX_MEAN_SENTENCE, MAX_CELL_WORDS = 18.0, 200
PROJECT_WORDS = re.compile(
    r"\bissues? #?\d+|\bsessions? \d+|\bin (?:this|a|the) session\b"
    r"|\bgoals? (?:is |was )?(?:not )?met\b|\bcriterion of the issue|\bthe issue's\b"
    r"|\bthe seed(?:'s)? (?:project|title|code|recipe|README)"
    r"|\bseed project\b|\bhelper\b|\bTODO\b|\bFIXME\b", re.IGNORECASE)
MACHINE_PATHS = re.compile(r"/(?:work|tmp|root|home|Users)/[A-Za-z]")
REVEAL = re.compile(r"\bexercises\.(?:reveal|solution)\(")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _prose_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"
            and not c.source.startswith(SERIES_HEADING)]


def prose(md: str) -> str:
    """The words a student reads as prose: no code, maths, tables, headings or link targets."""
    md = re.sub(r"```.*?```", " ", md, flags=re.S)
    md = re.sub(r"\$\$.*?\$\$", " X ", md, flags=re.S)
    md = re.sub(r"\$[^$]+\$", " X ", md)
    md = re.sub(r"^\s*\|.*\|\s*$", " ", md, flags=re.M)
    md = re.sub(r"^\s*#+ .*$", " ", md, flags=re.M)
    md = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", md)
    md = re.sub(r"`[^`]*`", "X", md)
    return md


def sentence_lengths(text: str) -> list[int]:
    parts = re.split(r"(?<=[.!?:;])\s+(?=[A-Z(*_\"'])|\n\s*[-*]\s+|\n\s*\d+\.\s+|\n\n+", text)
    return [len(p.split()) for p in parts if len(p.split()) >= 3]


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def nb_path(request) -> Path:
    return request.param


def test_links_the_whole_series_and_the_next_notebook(nb_path):
    nb = _read(nb_path)
    last = nb.cells[-1]
    assert last.cell_type == "markdown"
    assert last.source.startswith(SERIES_HEADING), \
        "the last cell lists the series (run `python tools/notebooks.py nav`)"
    for other in NOTEBOOKS:
        if other != nb_path:
            assert f"]({other.name})" in last.source, f"the series list misses {other.name}"
    i = NOTEBOOKS.index(nb_path)
    if i + 1 < len(NOTEBOOKS):
        nxt = NOTEBOOKS[i + 1].name
        before = [c for c in nb.cells[:-1] if c.cell_type == "markdown"][-1]
        assert re.search(rf"\*\*Next\*\*:.*\]\({re.escape(nxt)}\)", before.source, re.S), \
            f"the last prose cell has a '**Next**:' link to {nxt}"


def test_every_link_to_a_notebook_resolves(nb_path):
    for cell in _read(nb_path).cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\((?!https?:)([^)#\s]+\.ipynb)(?:#[^)]*)?\)", cell.source):
                assert (NOTEBOOK_DIR / target).is_file(), f"broken link to {target}"


def test_no_solution_is_committed_under_its_exercise(nb_path):
    nb = _read(nb_path)
    reveals = [c for c in nb.cells if c.cell_type == "code" and REVEAL.search(c.source)]
    assert reveals, "every notebook has an exercise with a reveal cell"
    for cell in reveals:
        assert "exercises.reveal(" in cell.source, "reveal with exercises.reveal, not .solution"
        assert cell.source.startswith("# NBVAL_IGNORE_OUTPUT")
        assert not cell.outputs, "a reveal cell is committed without output " \
            "(`python tools/notebooks.py execute` empties it)"


def test_no_project_words_in_reader_facing_text(nb_path):
    found = []
    for i, cell in enumerate(_read(nb_path).cells):
        texts = [cell.source] if cell.cell_type == "markdown" else [
            "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            for o in cell.get("outputs", [])]
        found += [f"cell {i}: {m.group(0)!r}" for t in texts for m in PROJECT_WORDS.finditer(t)]
    assert not found, found


def test_no_build_machine_path_in_any_output(nb_path):
    hits = []
    for i, cell in enumerate(_read(nb_path).cells):
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(
                v if isinstance(v, str) else "".join(v)
                for k, v in o.get("data", {}).items() if k.startswith("text/"))
            hits += [f"cell {i}: {m}" for m in MACHINE_PATHS.findall(text)]
    assert not hits, hits


def test_prose_targets(nb_path):
    cells = [prose(s) for s in _prose_cells(_read(nb_path))]
    lengths = [n for t in cells for n in sentence_lengths(t)]
    mean = sum(lengths) / max(len(lengths), 1)
    long = {i: len(t.split()) for i, t in enumerate(cells) if len(t.split()) > MAX_CELL_WORDS}
    assert mean <= MAX_MEAN_SENTENCE, f"mean sentence length {mean:.1f} words > {MAX_MEAN_SENTENCE}"
    assert not long, f"markdown cells over {MAX_CELL_WORDS} words (prose cell: words): {long}"


def test_sentence_measure_on_a_known_text():
    text = prose("One short sentence here. Another one, with `code` and $x_t$ maths!\n\n"
                 "| a | table |\n|---|---|\n- a list item of words\n## A heading")
    assert sentence_lengths(text) == [4, 7, 5]
