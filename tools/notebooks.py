"""Keep the notebook series in shape: execute it as CI checks it, and keep its links.

    python tools/notebooks.py execute [NOTEBOOK ...]   # run top to bottom, store the outputs
    python tools/notebooks.py nav                      # rewrite the series list and "Next" links

``execute`` runs each notebook (all of them when none is named) in a fresh kernel with the
settings of ``make test-notebooks`` (``OASIS_CI=1``, one torch thread), so that the stored
outputs are the ones nbval compares against. It then empties the outputs of the
"reveal the solution" cells (``exercises.reveal``), so that no solution is committed under its
exercise, and runs ``nav``.

``nav`` writes, in every notebook, a last markdown cell that lists the whole series (the
current notebook in bold), and checks that the cell before it links the next notebook.
Titles come from each notebook's first line, ``# NN · Title: subtitle``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
SERIES_HEADING = "### The series"
REVEAL = re.compile(r"\bexercises\.reveal\(")


def series() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def title(path: Path) -> str:
    """'02 · The forward process' from the first line '# 02 · The forward process: ...'."""
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    m = re.match(r"#\s+(\d\d)\s+·\s+([^:]+)", first)
    if not m:
        raise ValueError(f"{path.name}: the first line must read '# NN · Title: subtitle', "
                         f"got {first!r}")
    return f"{m.group(1)} · {m.group(2).strip()}"


def series_cell(current: Path, paths: list[Path]) -> str:
    lines = [SERIES_HEADING, ""]
    for p in paths:
        lines.append(f"- **{title(p)}** (this notebook)" if p == current
                     else f"- [{title(p)}]({p.name})")
    return "\n".join(lines)


def nav(paths: list[Path] | None = None) -> list[str]:
    """Write the series cell of every notebook; return the problems nobody can fix by script."""
    paths = series() if paths is None else paths
    everything = series()
    problems = []
    for i, path in enumerate(everything):
        nb = nbformat.read(path, as_version=4)
        cells = nb.cells
        if cells and cells[-1].cell_type == "markdown" and cells[-1].source.startswith(
                SERIES_HEADING):
            cells.pop()
        # the older one-line series list in the title cell is replaced by the series cell
        cells[0].source = re.sub(r"\n\n\*\*The series\*\*:[^\n]*(\n[^\n]+)*", "",
                                 cells[0].source)
        text = series_cell(path, everything)
        new = nbformat.v4.new_markdown_cell(text)
        new.id = "series"
        cells.append(new)
        if i + 1 < len(everything):
            nxt = everything[i + 1].name
            last_md = [c for c in cells[:-1] if c.cell_type == "markdown"][-1]
            if f"]({nxt})" not in last_md.source:
                problems.append(f"{path.name}: its last prose cell does not link the next "
                                f"notebook ({nxt}) in a '**Next**:' line")
        if path in paths:
            nbformat.validate(nb)
            nbformat.write(nb, path)
    return problems


def strip_timings(nb) -> None:
    """Drop the kernel's per-cell timestamps: they change on every run and say nothing."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def strip_reveals(nb) -> int:
    """Empty the outputs of the reveal cells (the solution shows only after a click)."""
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and REVEAL.search(cell.source):
            cell.outputs = []
            n += 1
    return n


def execute(paths: list[Path], timeout: int) -> None:
    from nbconvert.preprocessors import ExecutePreprocessor

    os.environ.update(OASIS_CI="1", OMP_NUM_THREADS="1")  # as notebooks/conftest.py KERNEL_ENV
    os.environ.pop("MPLBACKEND", None)  # the notebooks choose %matplotlib inline themselves
    for path in paths:
        start = time.time()
        nb = nbformat.read(path, as_version=4)
        ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
            nb, {"metadata": {"path": str(NOTEBOOK_DIR)}})
        n = strip_reveals(nb)
        strip_timings(nb)
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.time() - start:.0f} s, "
              f"{n} reveal cell(s) emptied", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run notebooks as CI does and store their outputs")
    ex.add_argument("notebooks", nargs="*", type=Path, help="default: the whole series")
    ex.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    sub.add_parser("nav", help="rewrite the series list of every notebook")
    args = parser.parse_args(argv)
    if args.command == "execute":
        paths = [p.resolve() for p in args.notebooks] or series()
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
            return 2
        execute(paths, args.timeout)
    problems = nav()
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
