"""Tissue metrics of class masks: Dice overlap and the CSF/grey/white fractions of the brain.

Masks are ``long`` tensors of class ids 0..3 (background, CSF, grey, white matter; see
:mod:`oasis_lib.data.layout`).
"""

from __future__ import annotations

import torch


def dice_per_class(pred: torch.Tensor, target: torch.Tensor,
                   num_classes: int = 4) -> torch.Tensor:
    """Dice ``2|A ∩ B| / (|A| + |B|)`` of each class, ``float32 [num_classes]``.

    ``pred`` and ``target`` are class masks of the same shape (e.g. ``long [B, H, W]``); the
    counts are summed over all their pixels (one Dice per class for the whole batch, not a mean
    of per-image Dice). A class absent from both gives 1.0 (nothing to find, nothing found).
    """
    return dice_from_counts(*dice_counts(pred, target, num_classes))


def dice_counts(pred: torch.Tensor, target: torch.Tensor,
                num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, ``|A ∩ B|`` and ``|A| + |B|`` (long ``[num_classes]`` each): the sums that
    :func:`dice_from_counts` turns into Dice, so that batches can be pooled."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    both = torch.bincount(target[pred == target], minlength=num_classes)[:num_classes]
    sizes = (torch.bincount(pred, minlength=num_classes)[:num_classes]
             + torch.bincount(target, minlength=num_classes)[:num_classes])
    return both, sizes


def dice_from_counts(both: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Dice ``2 |A ∩ B| / (|A| + |B|)`` from :func:`dice_counts`; 1.0 where both are empty."""
    dice = (2 * both).double() / sizes.clamp(min=1).double()
    return torch.where(sizes == 0, torch.ones_like(dice), dice).float()


def tissue_fractions(masks: torch.Tensor) -> torch.Tensor:
    """CSF, grey and white matter fractions of the brain, ``float32 [B, 3]``.

    ``masks`` are class masks ``[B, H, W]``; the brain is every non-background pixel, so each
    row sums to 1. A slice without brain pixels gives a row of zeros.
    """
    if masks.ndim != 3:
        raise ValueError(f"expected class masks [B, H, W], got {tuple(masks.shape)}")
    flat = masks.reshape(len(masks), -1).long()
    counts = torch.stack([(flat == k).sum(1) for k in (1, 2, 3)], dim=1).double()
    brain = counts.sum(1, keepdim=True)
    return (counts / brain.clamp(min=1)).float()
