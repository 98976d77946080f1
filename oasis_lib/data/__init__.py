"""The data room: the OASIS layout, the slice datasets, the data root, the offline demo build.

``layout`` (names, folders, class ids) <- ``demo`` (builds the demo dataset in that layout)
<- ``roots`` (which folder a run reads) <- ``oasis`` (``OASISDataset``, ``load_split(s)``)
<- ``summary``. Nothing here imports the rest of the package.
"""

from .._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "build_demo_dataset": ".demo",
    "ensure_demo_dataset": ".demo",
    "CLASS_LABELS": ".layout",
    "CLASS_NAMES": ".layout",
    "DEFAULT_TRAIN_SPLITS": ".layout",
    "MASK_VALUES": ".layout",
    "SEED_TRAIN_SPLITS": ".layout",
    "SLICES_PER_CASE": ".layout",
    "SPLITS": ".layout",
    "TISSUE_NAMES": ".layout",
    "TRAINABLE_SPLITS": ".layout",
    "DataError": ".layout",
    "check_train_splits": ".layout",
    "default_demo_root": ".layout",
    "held_out_split": ".layout",
    "image_dir": ".layout",
    "image_name": ".layout",
    "mask_dir": ".layout",
    "mask_name": ".layout",
    "OASISDataset": ".oasis",
    "check_disjoint_splits": ".oasis",
    "default_transform": ".oasis",
    "load_split": ".oasis",
    "load_splits": ".oasis",
    "resolve_data_root": ".roots",
    "DataSummary": ".summary",
    "format_summary": ".summary",
    "summarize": ".summary",
    "tissue_fractions": ".summary",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
