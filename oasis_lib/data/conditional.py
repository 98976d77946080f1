"""What a conditional run reads besides the slices, as named fields.

An item of a conditional run is a dict: ``{"image": float32 [1, H, W], "mask": long [H, W],
"slice_index": long [], ...}``, one key per condition field (the field's ``key``,
:mod:`oasis_lib.models.fields`); the default collate batches it into a dict of ``[B, ...]``.

For OASIS slices: the mask is the dataset's own (loaded ``with_masks=True``); the slice index
is the ``N`` of ``case_XXX_slice_N.nii.png`` (0..31, the position in the OASIS stack;
:data:`~oasis_lib.data.layout.SLICES_PER_CASE`), parsed when the folder is scanned
(``OASISDataset.items``). :class:`ConditionalSlices` names the items of a dataset and adds the
columns its items lack (read once per dataset); :func:`condition_tensors` reads a whole
dataset's columns (latent runs keep them next to the cached latents, so the latent cache itself
stays images-only) and :class:`NamedTensors` serves them with the latents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from .layout import SLICES_PER_CASE, DataError

#: A column reader: a dataset -> its values ``[N, ...]``.
Reader = Callable[[Dataset], torch.Tensor]


def _parts(dataset: Dataset) -> list:
    if isinstance(dataset, ConcatDataset):
        return [p for d in dataset.datasets for p in _parts(d)]
    return [dataset]


def _is_oasis(dataset: Dataset) -> bool:
    return all(hasattr(p, "items") and hasattr(p, "raw") for p in _parts(dataset))


def slice_indices(dataset: Dataset) -> torch.Tensor:
    """Long ``[N]``: the slice index of every item of an OASISDataset (or a ConcatDataset of
    them), in order; DataError for an index outside 0..31."""
    out = torch.tensor([s for part in _parts(dataset) for _, s, _, _ in part.items],
                       dtype=torch.long)
    bad = out[(out < 0) | (out >= SLICES_PER_CASE)]
    if bad.numel():
        raise DataError(f"slice indices must be in 0..{SLICES_PER_CASE - 1} (the file names' "
                        f"slice_N); found {sorted(set(bad.tolist()))[:8]}")
    return out


def _check_masks(part) -> None:
    if getattr(part, "label_path", None) is None:
        raise DataError(f"{part!r} was loaded without masks; a conditional run needs "
                        "with_masks=True (the seg_* folders)")


def dataset_masks(dataset: Dataset) -> torch.Tensor:
    """uint8 ``[N, H, W]``: the untransformed masks of an OASISDataset (or a ConcatDataset)."""
    stacks = []
    for part in _parts(dataset):
        _check_masks(part)
        if getattr(part, "masks", None) is not None:
            stacks.append(part.masks)
        else:
            stacks.append(torch.stack([part.raw(i)[1] for i in range(len(part))]))
    return torch.cat(stacks)


#: The columns an OASIS dataset provides (by field key).
OASIS_COLUMNS: dict[str, Reader] = {"mask": dataset_masks, "slice_index": slice_indices}
#: The keys of a positional item ``(image, mask, slice index)`` (synthetic data in tests).
POSITIONAL_KEYS = ("image", "mask", "slice_index")


def named_item(item) -> dict:
    """A data item as a dict: a dict as it is, a tuple ``(image, mask[, slice index])`` by
    position (``POSITIONAL_KEYS``), a tensor as ``{"image": item}``."""
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, list | tuple):
        if len(item) > len(POSITIONAL_KEYS):
            raise DataError(f"a positional item has at most {len(POSITIONAL_KEYS)} parts "
                            f"{POSITIONAL_KEYS}; got {len(item)}: give dict items")
        return dict(zip(POSITIONAL_KEYS, item, strict=False))
    return {"image": item}


def read_column(dataset: Dataset, key: str) -> torch.Tensor:
    """The values under ``key`` of every item of ``dataset``, stacked ``[N, ...]``: an OASIS
    dataset's masks or file-name slice indices (``OASIS_COLUMNS``; untransformed), else its
    items' ``key``. DataError when the items have no such key."""
    if isinstance(dataset, ConditionalSlices):
        dataset = dataset.dataset
    if _is_oasis(dataset) and key in OASIS_COLUMNS:
        return OASIS_COLUMNS[key](dataset)
    values = []
    for i in range(len(dataset)):
        item = named_item(dataset[i])
        if key not in item:
            raise DataError(f"the items of {type(dataset).__name__} have no {key!r} (they "
                            f"have {sorted(item)}); a conditional run needs it")
        values.append(torch.as_tensor(item[key]))
    return torch.stack(values)


def read_masks(dataset: Dataset) -> torch.Tensor:
    """uint8 ``[N, H, W]``: every item's mask (:func:`read_column`)."""
    return read_column(dataset, "mask").to(torch.uint8)


def read_slice_indices(dataset: Dataset) -> torch.Tensor:
    """long ``[N]``: every item's slice index (:func:`read_column`)."""
    return read_column(dataset, "slice_index").long().reshape(-1)


#: The built-in fields' columns (``mask``, ``slice_index``): what ``columns=None`` reads.
BUILTIN_COLUMNS: dict[str, Reader] = {"mask": read_masks, "slice_index": read_slice_indices}


class ConditionalSlices(Dataset):
    """Named items ``{"image": float32 [1, H, W], key: value, ...}`` for the condition
    fields ``columns`` names (key -> a reader of the whole dataset's column).

    A key the items carry themselves is taken from the item (an OASIS item's transformed mask;
    a dict item's values); the others are read once by their reader (an OASIS dataset's
    slice indices from the file names). ``columns=None``: the built-in ``mask`` and
    ``slice_index``. ``dataset`` is an OASISDataset (or a ConcatDataset of them) loaded with
    masks, or any dataset of dict items or ``(image, mask, slice index)`` tuples."""

    def __init__(self, dataset: Dataset, columns: Mapping[str, Reader] | None = None):
        self.dataset = dataset
        columns = dict(BUILTIN_COLUMNS if columns is None else columns)
        if _is_oasis(dataset):
            for part in _parts(dataset):
                _check_masks(part)
        first = named_item(dataset[0])
        if "image" not in first:
            raise DataError(f"a conditional run needs items with an image; "
                            f"{type(dataset).__name__} items are {type(dataset[0]).__name__}")
        self.keys = tuple(columns)
        self.columns = {k: read(dataset) for k, read in columns.items() if k not in first}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = named_item(self.dataset[i])
        out = {"image": item["image"]}
        for key in self.keys:
            value = self.columns[key][i] if key in self.columns else item[key]
            value = torch.as_tensor(value)
            out[key] = value.long() if key in BUILTIN_COLUMNS else value
        return out


class NamedTensors(TensorDataset):
    """A TensorDataset of named columns whose items are dicts (``image`` first): a latent
    run's cached latents with their condition columns. ``tensors`` keeps the order given."""

    def __init__(self, **columns: torch.Tensor):
        super().__init__(*columns.values())
        self.names = tuple(columns)

    def __getitem__(self, i: int) -> dict:
        return dict(zip(self.names, super().__getitem__(i), strict=True))

    def column(self, name: str) -> torch.Tensor:
        return self.tensors[self.names.index(name)]


def condition_tensors(dataset: Dataset, columns: Mapping[str, Reader] | None = None
                      ) -> dict[str, torch.Tensor]:
    """The columns of a whole dataset by key (untransformed, as the latent cache encodes it);
    ``columns=None``: the built-in ``mask`` (uint8 ``[N, H, W]``) and ``slice_index`` (long
    ``[N]``)."""
    if isinstance(dataset, ConditionalSlices):
        dataset = dataset.dataset
    columns = dict(BUILTIN_COLUMNS if columns is None else columns)
    return {key: read(dataset) for key, read in columns.items()}
