"""What a conditional run reads besides the slices: each slice's tissue mask and slice index.

The slice index is the ``N`` of ``case_XXX_slice_N.nii.png`` (0..31, the position in the
OASIS stack; :data:`~oasis_lib.data.layout.SLICES_PER_CASE`), parsed when the folder is scanned
(``OASISDataset.items``); the mask is the dataset's own (loaded ``with_masks=True``).
:class:`ConditionalSlices` yields ``(image, mask, slice index)`` for the Trainer, and
:func:`condition_tensors` stacks the masks and indices of a whole dataset (latent runs keep
them next to the cached latents, so the latent cache itself stays images-only).
"""

from __future__ import annotations

import torch
from torch.utils.data import ConcatDataset, Dataset

from .layout import SLICES_PER_CASE, DataError


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


def _masks(dataset: Dataset) -> torch.Tensor:
    stacks = []
    for part in _parts(dataset):
        _check_masks(part)
        if getattr(part, "masks", None) is not None:
            stacks.append(part.masks)
        else:
            stacks.append(torch.stack([part.raw(i)[1] for i in range(len(part))]))
    return torch.cat(stacks)


class ConditionalSlices(Dataset):
    """``(image float32 [1, H, W], mask long [H, W], slice index long [])`` items.

    ``dataset`` is an OASISDataset (or a ConcatDataset of them) loaded with masks, or any
    dataset whose items already are such triples (synthetic data in tests)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.oasis = _is_oasis(dataset)
        if self.oasis:
            self.slices = slice_indices(dataset)
            for part in _parts(dataset):
                _check_masks(part)
        else:
            item = dataset[0]
            if not (isinstance(item, list | tuple) and len(item) == 3):
                raise DataError(f"a conditional run needs (image, mask, slice index) items or an "
                                f"OASISDataset with masks; {type(dataset).__name__} items are "
                                f"{type(item).__name__}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if not self.oasis:
            image, mask, slice_index = self.dataset[i]
            return image, torch.as_tensor(mask).long(), torch.as_tensor(slice_index).long()
        image, mask = self.dataset[i]
        return image, mask, self.slices[i]


def condition_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masks uint8 [N, H, W], slice indices long [N])`` of a whole dataset (untransformed,
    as the latent cache encodes it)."""
    if isinstance(dataset, ConditionalSlices):
        dataset = dataset.dataset
    if _is_oasis(dataset):
        return _masks(dataset), slice_indices(dataset)
    items = [dataset[i] for i in range(len(dataset))]
    return (torch.stack([torch.as_tensor(m) for _, m, _ in items]).to(torch.uint8),
            torch.stack([torch.as_tensor(s) for _, _, s in items]).long())
