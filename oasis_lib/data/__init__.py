"""The data room: the OASIS layout, the slice datasets, the data root, the offline demo build.

``layout`` (names, folders, class ids) <- ``demo`` (builds the demo dataset in that layout)
<- ``roots`` (which folder a run reads) <- ``oasis`` (``OASISDataset``, ``load_split(s)``)
<- ``summary``. Nothing here imports the rest of the package.
"""

from .demo import build_demo_dataset, ensure_demo_dataset
from .layout import (
    CLASS_LABELS,
    CLASS_NAMES,
    DEFAULT_TRAIN_SPLITS,
    MASK_VALUES,
    SEED_TRAIN_SPLITS,
    SLICES_PER_CASE,
    SPLITS,
    TISSUE_NAMES,
    TRAINABLE_SPLITS,
    DataError,
    check_train_splits,
    default_demo_root,
    held_out_split,
    image_dir,
    image_name,
    mask_dir,
    mask_name,
)
from .oasis import (
    OASISDataset,
    check_disjoint_splits,
    default_transform,
    load_split,
    load_splits,
)
from .roots import resolve_data_root
from .summary import DataSummary, format_summary, summarize, tissue_fractions

__all__ = [
    "CLASS_LABELS", "CLASS_NAMES", "DEFAULT_TRAIN_SPLITS", "MASK_VALUES", "SEED_TRAIN_SPLITS",
    "SLICES_PER_CASE", "SPLITS", "TISSUE_NAMES", "TRAINABLE_SPLITS",
    "DataError", "DataSummary", "OASISDataset", "build_demo_dataset", "check_disjoint_splits",
    "check_train_splits", "default_demo_root", "default_transform", "ensure_demo_dataset",
    "format_summary", "held_out_split",
    "image_dir", "image_name", "load_split", "load_splits", "mask_dir", "mask_name",
    "resolve_data_root", "summarize", "tissue_fractions",
]
