"""Where things live: the source checkout, its shipped checkpoints, the project's URL.

One home for the repository-root lookup (the data layer, the shipped weights and the
segmenter all need it). The weights travel with a clone of the repository, not with a pip
install of the package, so every lookup of a shipped file goes through
:func:`shipped_checkpoint`, which says where to get a missing one.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_URL = "https://github.com/oasis-ddpm/oasis-ddpm-tutorial"  # also in pyproject and notebooks
#: The folder holding the ``oasis_lib`` package (a source checkout: ``checkpoints/`` beside it).
REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
DEMO_CHECKPOINT = CHECKPOINTS_DIR / "demo_cpu64_ema.safetensors"
SEGMENTER_CHECKPOINT = CHECKPOINTS_DIR / "segmenter_demo64.safetensors"


def repo_root() -> Path | None:
    """The source checkout holding this package (the folder with our pyproject.toml), if any."""
    for parent in Path(__file__).resolve().parents:
        toml = parent / "pyproject.toml"
        if toml.is_file() and re.search(r'name\s*=\s*"oasis_lib"', toml.read_text(errors="ignore")):
            return parent
    return None


def shipped_checkpoint(name: str) -> Path:
    """The path of a weights file shipped in the repository's ``checkpoints/`` folder.

    A missing file raises :class:`~oasis_lib.checkpoint.CheckpointError` that says where it was
    looked for and how to get it (a clone of the repository, not a pip install).
    """
    from .checkpoint import CheckpointError

    path = REPO_ROOT / "checkpoints" / name
    if not path.is_file():
        raise CheckpointError(
            f"the shipped weights {path} are missing: they come with a clone of the repository "
            f"({REPO_URL}), not with a pip install of oasis_lib. Clone it and run "
            "`pip install -e .` there (the notebooks' setup cell does this on Colab), or pass "
            "the path of your own checkpoint")
    return path
