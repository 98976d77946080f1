"""The house rules of the package: light import, no import cycles, small modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "oasis_lib"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_does_not_draw():
    code = ("import sys, oasis_lib, oasis_lib.cli, oasis_lib.training, oasis_lib.evaluation.report;"
            "bad = [m for m in ('matplotlib.pyplot', 'ipywidgets') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of oasis_lib imported at module level (function-level imports are lazy)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("oasis_lib"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("oasis_lib"))
    known = {_module_name(p) for p in MODULES}
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    graph = {_module_name(p): _imports(p) for p in MODULES}
    # Importing a package runs its __init__: a module depends on its parents' __init__ too.
    for mod in list(graph):
        for dep in list(graph[mod]):
            parts = dep.split(".")
            graph[mod].update(".".join(parts[:k]) for k in range(2, len(parts)))
        graph[mod].discard(mod)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 420, f"{path.name} has {lines} lines; split it by concept (~400 at most)"
