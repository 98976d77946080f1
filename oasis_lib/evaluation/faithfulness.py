"""Mask faithfulness (issue 12): does a mask-conditioned sample have the anatomy it was asked for?

The tissue segmenter (:mod:`oasis_lib.evaluation.segmenter`) segments each generated slice and
the segmentation is compared with the mask the slice was conditioned on: per tissue (CSF, grey,
white matter), Dice ``2|A ∩ B| / (|A| + |B|)`` pooled over the batch
(:func:`~oasis_lib.evaluation.tissue.dice_per_class`, the one Dice of the package). The
segmenter is not perfect, so even real slices do not reach 1: the **floor** is the same Dice for
real slices and their own masks. A model whose samples reach the floor obeys its masks as well
as real anatomy agrees with its own segmentation; the gap ``floor - generated`` is what to quote.
"""

from __future__ import annotations

from torch import Tensor

from ..data.layout import TISSUE_NAMES
from .reference import segment
from .tissue import dice_per_class


def _tissue_dice(images: Tensor, masks: Tensor, segmenter, batch_size: int) -> dict[str, float]:
    if images.ndim != 4 or masks.ndim != 3 or images.shape[0] != masks.shape[0] \
            or tuple(images.shape[-2:]) != tuple(masks.shape[-2:]):
        raise ValueError(f"expected images [N, 1, H, W] and masks [N, H, W] of the same N, H, W; "
                         f"got {tuple(images.shape)} and {tuple(masks.shape)}")
    predicted = segment(segmenter, images, batch_size=batch_size)["masks"]
    dice = dice_per_class(predicted, masks.long().cpu())[1:].tolist()  # CSF, grey, white
    out = dict(zip(TISSUE_NAMES, (round(d, 6) for d in dice), strict=True))
    out["mean"] = round(sum(dice) / len(dice), 6)
    return out


def mask_faithfulness(images: Tensor, masks: Tensor, segmenter, *,
                      real_images: Tensor | None = None, real_masks: Tensor | None = None,
                      batch_size: int = 64) -> dict:
    """Per-tissue Dice between conditioning ``masks`` (long [N, H, W]) and the segmenter's
    segmentation of the generated ``images`` (float [N, 1, H, W] in [-1, 1]), and its floor.

    Returns ``{"generated": {csf, grey_matter, white_matter, mean}, "real": the same for
    real_images against real_masks (None if not given), "gap": real - generated per entry
    (None without real)}``.
    """
    generated = _tissue_dice(images, masks, segmenter, batch_size)
    if (real_images is None) != (real_masks is None):
        raise ValueError("pass both real_images and real_masks (the floor), or neither")
    real = gap = None
    if real_images is not None:
        real = _tissue_dice(real_images, real_masks, segmenter, batch_size)
        gap = {k: round(real[k] - generated[k], 6) for k in generated}
    return {"generated": generated, "real": real, "gap": gap}
