"""The house rules of the package: light import, no import cycles, the arrows of
docs/INTERFACES.md, small modules.

Every import counts: module-level and inside functions (a function-level import is a
dependency that runs later, not a lighter one), relative imports resolved, and a name taken
from a lazy package (``from ..data import load_split``) counted as an import of the module
that defines it (the package's ``_EXPORTS`` table).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "oasis_lib"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

#: docs/INTERFACES.md's arrows as data: room -> what it may import. A room is a module or a
#: package of oasis_lib (names without the ``oasis_lib.`` prefix); a module belongs to the
#: longest room its name starts with, and may import its own room, its own packages and what
#: the arrows name (a name covers its submodules). Change this and the doc together.
EVERYTHING_BELOW_CLI = {
    "autoencoder_train_config", "checkpoint", "config", "config_knobs", "data",
    "decoder_train_config", "device", "diffusion", "evaluation", "file_layout", "models", "paths",
    "pretrained", "pretrained_autoencoder", "pretrained_decoder", "run_config", "seeding",
    "training", "viz"}
ARROWS: dict[str, set[str]] = {
    "__main__": {"cli"},
    "_lazy": set(),
    "cli": EVERYTHING_BELOW_CLI,
    "teaching": {"config", "data", "diffusion", "evaluation.metrics", "evaluation.reference",
                 "evaluation.tissue", "models", "training"},
    "viz": {"data.layout", "data.mask_edit", "diffusion", "evaluation.reconstruction",
            "evaluation.reference", "evaluation.texture", "evaluation.tissue",
            "models.conditioning", "models.embeddings"},
    "evaluation": {"checkpoint", "data", "device", "diffusion", "models.conditioning", "paths",
                   "seeding"},
    # evaluate(path) loads the checkpoint it scores; write_report draws the report's figures
    "evaluation.report": {"checkpoint", "data", "device", "diffusion", "evaluation",
                          "models.conditioning", "paths", "pretrained", "seeding",
                          "viz.evaluation", "viz.plotting"},
    "training": {"autoencoder_train_config", "checkpoint", "config", "config_knobs", "data",
                 "decoder_train_config", "device",
                 "diffusion", "evaluation.reconstruction", "evaluation.segmenter",
                 "evaluation.ssim", "models", "pretrained", "pretrained_autoencoder",
                 "run_config", "seeding"},
    "pretrained": {"checkpoint", "config", "device", "diffusion.pipeline", "file_layout",
                   "models", "paths", "pretrained_autoencoder", "pretrained_decoder"},
    "pretrained_decoder": {"checkpoint", "decoder_train_config", "device", "file_layout",
                           "models.lite_decoder", "pretrained_autoencoder"},
    "pretrained_autoencoder": {"autoencoder_train_config", "checkpoint", "device",
                               "file_layout", "models.autoencoder", "models.autoencoder_config"},
    "models.factory": {"config", "diffusion", "models", "pretrained_autoencoder"},
    "config": {"autoencoder_train_config", "config_knobs", "decoder_train_config", "diffusion",
               "models.conditioning", "models.unet_config", "run_config"},
    "decoder_train_config": {"config_knobs", "models.lite_decoder", "run_config"},
    "autoencoder_train_config": {"config_knobs", "models.autoencoder_config",
                                 "models.discriminator", "run_config"},
    "run_config": {"config_knobs", "data.layout"},
    "config_knobs": set(),  # a field's flag, help and resume rule (the standard library only)
    "diffusion.pipeline": {"diffusion", "file_layout", "models.conditioning"},
    "diffusion": {"diffusion.processes"},
    "diffusion.processes": {"diffusion.flow_matching", "diffusion.multistep",
                            "diffusion.parameterization", "diffusion.schedule"},
    "models": {"data.layout", "models.fields"},
    # a field reads its values from a dataset; the slice embedding's sinusoid
    "models.fields": {"data.conditional", "data.layout", "models.embeddings"},
    "data": {"paths"},
    "file_layout": {"checkpoint"},
    "paths": {"checkpoint"},  # the error of a missing shipped file (imported when raised)
    "checkpoint": set(),
    "device": set(),
    "seeding": set(),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


KNOWN = {_module_name(p): p for p in MODULES}


def _lazy_table(name: str) -> dict[str, str]:
    """A package's ``_EXPORTS`` (public name -> defining module, absolute), or {}."""
    path = KNOWN.get(name)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {k: _resolve(v.lstrip("."), len(v) - len(v.lstrip(".")), name, True)
                    for k, v in table.items()}
    return {}


def _resolve(module: str, level: int, name: str, is_package: bool) -> str:
    if not level:
        return module
    base = (name if is_package else name.rpartition(".")[0]).split(".")
    base = base[:len(base) - level + 1]
    return ".".join(base + ([module] if module else []))


def _imports(path: Path) -> dict[str, int]:
    """Every oasis_lib module ``path`` imports, anywhere in it (-> the first line), and for a
    package the modules its lazy table names."""
    name = _module_name(path)
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            if not mod.startswith("oasis_lib"):
                continue
            found.setdefault(mod, node.lineno)
            lazy = _lazy_table(mod)
            for alias in node.names:
                target = f"{mod}.{alias.name}"
                target = target if target in KNOWN else lazy.get(alias.name)
                if target is not None:
                    found.setdefault(target, node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("oasis_lib"):
                    found.setdefault(alias.name, node.lineno)
    for target in _lazy_table(name).values():
        found.setdefault(target, 0)
    return {m: line for m, line in found.items() if m in KNOWN and m != name}


GRAPH = {name: _imports(path) for name, path in KNOWN.items()}


def _related(a: str, b: str) -> bool:
    """A package and its own submodules (importing a module runs its packages' __init__)."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_imports_are_parsed():
    """The parser sees what the cycle and arrow tests rely on: function-level imports,
    relative ones, and names from a lazy package."""
    assert "oasis_lib.pretrained" in GRAPH["oasis_lib.cli.main"]  # inside _cmd_sample
    assert "oasis_lib.data.roots" in GRAPH["oasis_lib.cli.main"]  # from ..data import ...
    assert "oasis_lib.models.conditioning" in GRAPH["oasis_lib.diffusion.pipeline"]
    assert "oasis_lib.models.factory" in GRAPH["oasis_lib"]  # the top-level lazy table


def test_no_import_cycles():
    graph = {mod: set(deps) for mod, deps in GRAPH.items()}
    # Importing a module runs its packages' __init__: it depends on them too.
    for mod in list(graph):
        for dep in list(graph[mod]):
            parts = dep.split(".")
            graph[mod].update(".".join(parts[:k]) for k in range(2, len(parts)))
        graph[mod].discard(mod)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if _related(node, nxt):
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def _room(module: str) -> str | None:
    name = module.removeprefix("oasis_lib").removeprefix(".")
    rooms = [r for r in ARROWS if name == r or name.startswith(r + ".")]
    return max(rooms, key=len) if rooms else None


def _allowed(source: str, target: str) -> bool:
    room = _room(source)
    name = target.removeprefix("oasis_lib.")
    return (_related(source, target) or _room(target) in (room, "_lazy")
            or any(name == a or name.startswith(a + ".") for a in ARROWS[room]))


def test_every_module_has_a_room():
    assert [m for m in KNOWN if m != "oasis_lib" and _room(m) is None] == []


def test_imports_follow_the_arrows_of_interfaces():
    """Every import, function-level included, follows docs/INTERFACES.md (``ARROWS``)."""
    bad = [f"{KNOWN[src].relative_to(PACKAGE.parent)}:{line} imports {dst} "
           f"({_room(src)} -> {_room(dst)})"
           for src, deps in sorted(GRAPH.items()) if src != "oasis_lib"
           for dst, line in sorted(deps.items()) if not _allowed(src, dst)]
    assert bad == [], "\n".join(bad)


def _names(text: str) -> set[str]:
    """``"a, b.{c, d} (a comment, ...)"`` -> {"a", "b.c", "b.d"}."""
    text = re.sub(r"\([^)]*\)", "", text)
    names = set()
    for prefix, group, plain in re.findall(r"([\w.]+)\.\{([^}]*)\}|([\w.]+)", text):
        names |= {f"{prefix}.{g.strip()}" for g in group.split(",")} if prefix else {plain}
    return names


def _doc_arrows() -> dict[str, set[str]]:
    """The arrow block of docs/INTERFACES.md ("## The rooms, ...": ``room ──► a, b``, continued
    on indented lines) as ``ARROWS``-style data."""
    doc = (PACKAGE.parent / "docs" / "INTERFACES.md").read_text()
    block = doc.split("## The rooms")[1].split("```")[1]
    lines = []
    for line in block.strip().splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    arrows: dict[str, set[str]] = {}
    for line in lines:
        rooms, _, targets = line.partition("►")
        for room in _names(rooms.rstrip("─ ")):
            arrows[room] = _names(targets)
    return arrows


def test_the_arrows_are_the_docs():
    """``ARROWS`` is docs/INTERFACES.md's arrow block, room for room (change both together)."""
    assert _names("a, b.{c, d} (e, f), g") == {"a", "b.c", "b.d", "g"}
    doc = _doc_arrows()
    assert doc == {room: arrows for room, arrows in ARROWS.items() if room != "_lazy"}


def _loaded(statement: str) -> list[str]:
    code = (f"import sys; {statement}; "
            "print(' '.join(m for m in sys.modules if m.startswith('oasis_lib')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return run.stdout.split()


def test_importing_one_module_loads_only_what_it_needs():
    """The package __init__s import lazily: ``import oasis_lib.paths`` loads a handful of
    modules (before the lazy packages: 48 of 104), and no torch."""
    loaded = _loaded("import oasis_lib.paths; assert 'torch' not in sys.modules")
    assert sorted(loaded) == ["oasis_lib", "oasis_lib._lazy", "oasis_lib.paths"]
    assert len(_loaded("import oasis_lib.diffusion.schedule")) <= 5


def test_the_public_names_stay_importable():
    """What the notebooks and tests take from the packages resolves, lazily."""
    import oasis_lib
    from oasis_lib import data, diffusion, models, teaching, training

    for package in (oasis_lib, data, diffusion, models, teaching, training):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
    assert oasis_lib.evaluation.tissue.dice_per_class is not None  # a submodule, on first use
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = oasis_lib.nothing


def test_import_does_not_draw():
    code = ("import sys, oasis_lib, oasis_lib.cli, oasis_lib.training, oasis_lib.evaluation.report;"
            "from oasis_lib import *;"
            "bad = [m for m in ('matplotlib.pyplot', 'ipywidgets') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 420, f"{path.name} has {lines} lines; split it by concept (~400 at most)"
