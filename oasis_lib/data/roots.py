"""Which data root a run reads: an explicit folder, ``$OASIS_DATA``, or the demo dataset."""

from __future__ import annotations

import os
from pathlib import Path

from .demo import ensure_demo_dataset
from .layout import SPLITS, DataError, default_demo_root, image_dir, mask_dir

#: Why training reads each split (named when one is missing).
SPLIT_ROLES = {"train": "the training fits it", "validate": "validation chooses best.pt with it",
               "test": "it is held out for the final numbers, and training checks that no case "
                       "is in two splits"}


def resolve_data_root(root=None) -> Path:
    """The data root: ``root`` if given, else ``$OASIS_DATA``, else the demo dataset (built on
    first use by :func:`oasis_lib.data.demo.ensure_demo_dataset`)."""
    if root is not None:
        path, source = Path(root).expanduser(), "given as --data-root or data_root"
    elif os.environ.get("OASIS_DATA"):
        path, source = Path(os.environ["OASIS_DATA"]).expanduser(), "from $OASIS_DATA"
    else:
        return ensure_demo_dataset(default_demo_root())
    if not path.is_dir():
        raise DataError(f"data root {path} ({source}) does not exist; expected a folder "
                        "holding keras_png_slices_{train,validate,test} and "
                        "keras_png_slices_seg_{train,validate,test}")
    return path


def check_split_folders(root, root_arg=None, *, trained=("train",), masks: bool = False) -> None:
    """Every split folder training reads exists under ``root`` (the resolved ``root_arg``);
    otherwise a DataError naming the missing one, why it is needed and what to do."""
    root = Path(root)
    for split in SPLITS:
        read_masks = masks and (split in trained or split == "validate")
        folders = [image_dir(root, split)] + ([mask_dir(root, split)] if read_masks else [])
        missing = [f for f in folders if not f.is_dir()]
        if not missing:
            continue
        where = ("$OASIS_DATA" if root_arg is None and os.environ.get("OASIS_DATA")
                 else "--data-root")
        role = ("the training fits it" if split in trained else SPLIT_ROLES[split])
        raise DataError(
            f"data root {root} ({where}) has no {split} split: {missing[0]} does not exist, "
            f"and training needs it ({role}). Add the {split} folders "
            f"({', '.join(f.name for f in missing)}), or point {where} at a complete OASIS "
            "root (`python -m oasis_lib make-demo` builds one)")
