"""The shipped weights: found in a clone, a clear error where only the package is installed."""

from __future__ import annotations

import pytest

from oasis_lib import paths, pretrained
from oasis_lib.checkpoint import CheckpointError


def test_shipped_checkpoint_is_found_in_the_repository():
    path = pretrained.shipped_checkpoint(pretrained.DEMO_CHECKPOINT.name)
    assert path == pretrained.DEMO_CHECKPOINT
    assert path.is_file()


def test_missing_shipped_weights_say_where_to_get_them(tmp_path, monkeypatch):
    # What a pip install without the repository looks like: no checkpoints/ next to the package.
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    with pytest.raises(CheckpointError, match=r"demo_cpu64_ema.safetensors are missing.*"
                       r"clone of the repository \(https://github.com/.*pip install -e"):
        pretrained.load_model()
