"""The OASIS folder layout, file names and class ids: the facts every data module shares.

Layout (the preprocessed OASIS-1 slices known as ``keras_png_slices_data``)::

    ROOT/keras_png_slices_{train,validate,test}/case_XXX_slice_N.nii.png      images
    ROOT/keras_png_slices_seg_{train,validate,test}/seg_XXX_slice_N.nii.png   masks

Images are 8-bit grey PNGs; masks hold 0/85/170/255 = background/CSF/grey/white matter.
Every dataset item is an image ``float32 [1, H, W]`` in [-1, 1] and, with masks, a
``long [H, W]`` mask with classes 0..3 (docs/INTERFACES.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..paths import repo_root

SPLITS = ("train", "validate", "test")
# Which splits a model may train on. "validate" never: it chooses best.pt. The default keeps
# "test" untouched for the final numbers; the seed trained on train + test (no split held out).
TRAINABLE_SPLITS = ("train", "test")
DEFAULT_TRAIN_SPLITS = ("train",)
SEED_TRAIN_SPLITS = ("train", "test")
MASK_VALUES = (0, 85, 170, 255)  # PNG value of each class in a mask file
CLASS_NAMES = ("background", "csf", "grey_matter", "white_matter")  # class ids 0..3
TISSUE_NAMES = CLASS_NAMES[1:]  # the three tissues (ids 1..3) whose fractions we report
CLASS_LABELS = ("background", "CSF", "grey matter", "white matter")  # for figure legends
SLICES_PER_CASE = 32
IMAGE_PATTERN = re.compile(r"^case_(\d+)_slice_(\d+)(?:\.nii)?\.png$", re.IGNORECASE)
MASK_PATTERN = re.compile(r"^seg_(\d+)_slice_(\d+)(?:\.nii)?\.png$", re.IGNORECASE)


class DataError(ValueError):
    """A data folder or file is missing or malformed; the message names the path."""


def check_train_splits(splits) -> tuple[str, ...]:
    """``splits`` as a tuple of distinct names from :data:`TRAINABLE_SPLITS` (a string such as
    ``"train,test"`` is split at commas); ValueError naming the valid ones otherwise."""
    names = tuple(s.strip() for s in splits.split(",")) if isinstance(splits, str) else tuple(
        splits)
    bad = [s for s in names if s not in TRAINABLE_SPLITS]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"invalid train_splits {splits!r}; choose distinct names from "
                         f"{TRAINABLE_SPLITS} ('validate' chooses best.pt and is never trained on)")
    return names


def held_out_split(train_splits) -> str:
    """The split the evaluation holds out for a model trained on ``train_splits``: "test"
    (never used for training or selection) when the model did not train on it, else
    "validate" (not trained on, but it chose best.pt)."""
    return "validate" if "test" in check_train_splits(train_splits) else "test"


def image_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / f"keras_png_slices_{split}"


def mask_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / f"keras_png_slices_seg_{split}"


def image_name(case: int, slice_: int) -> str:
    return f"case_{case:03d}_slice_{slice_}.nii.png"


def mask_name(case: int, slice_: int) -> str:
    return f"seg_{case:03d}_slice_{slice_}.nii.png"


def default_demo_root() -> Path:
    """``data/demo`` at the repository root, or under the working directory when installed."""
    return (repo_root() or Path.cwd()) / "data" / "demo"
