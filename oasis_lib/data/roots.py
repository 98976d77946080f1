"""Which data root a run reads: an explicit folder, ``$OASIS_DATA``, or the demo dataset."""

from __future__ import annotations

import os
from pathlib import Path

from .demo import ensure_demo_dataset
from .layout import DataError, default_demo_root


def resolve_data_root(root=None) -> Path:
    """The data root: ``root`` if given, else ``$OASIS_DATA``, else the demo dataset (built on
    first use by :func:`oasis_lib.data.demo.ensure_demo_dataset`)."""
    if root is not None:
        path, source = Path(root).expanduser(), "root argument"
    elif os.environ.get("OASIS_DATA"):
        path, source = Path(os.environ["OASIS_DATA"]).expanduser(), "OASIS_DATA variable"
    else:
        return ensure_demo_dataset(default_demo_root())
    if not path.is_dir():
        raise DataError(f"data root {path} (from the {source}) does not exist; expected a folder "
                        "holding keras_png_slices_{train,validate,test} and "
                        "keras_png_slices_seg_{train,validate,test}")
    return path
