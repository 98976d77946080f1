"""The tissue-mask field: long ``[B, H, W]`` in {0, 1, 2, 3} (background, CSF, grey, white
matter), concatenated to x_t as extra input channels (Konz et al. 2024, "Anatomically-
Controllable Medical Image Generation with Segmentation-Guided Diffusion Models").

Null mask (classifier-free guidance): the encoding carries one extra **presence channel**, 1
where a mask is given and 0 for the null mask, whose class channels are all zero too. A one-hot
of zeros alone would read as "all background", a legal mask (the top slices of a stack are
nearly empty). Training ablates tissue classes at random (:func:`ablate_classes`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data.conditional import read_masks
from ...data.layout import CLASS_LABELS
from .base import (
    ConditionField,
    check_choice,
    check_flags,
    check_probability,
    stack,
    values_checkable,
)

NUM_CLASSES = len(CLASS_LABELS)  # background, CSF, grey matter, white matter
#: The classes that ablation may drop (background is never "dropped": it is what remains).
TISSUE_CLASSES = (1, 2, 3)
#: Default per-class ablation probability: Konz et al. 2024 remove each class with p = 0.5.
DEFAULT_ABLATION_P = 0.5
MASK_ENCODINGS = ("onehot", "scalar")
POOLINGS = ("area", "nearest")


def check_mask(mask: Tensor) -> None:
    """Raise ValueError unless ``mask`` is an integer tensor ``[B, H, W]`` with values 0..3."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor [B, H, W], got {type(mask).__name__}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.dtype == torch.bool:
        raise ValueError(f"mask must be an integer (long) tensor of classes 0..3, got {mask.dtype}")
    if mask.ndim != 3:
        raise ValueError(f"expected mask of shape [B, H, W], got {tuple(mask.shape)}")
    if not values_checkable(mask):
        return
    bad = torch.unique(mask[(mask < 0) | (mask >= NUM_CLASSES)])
    if bad.numel():
        values = bad[:8].tolist()
        hint = ""
        if set(torch.unique(mask).tolist()) <= {0, 85, 170, 255}:
            hint = " (these are PNG grey levels 0/85/170/255: divide by 85)"
        raise ValueError(f"mask values must be classes in {{0, 1, 2, 3}} "
                         f"({', '.join(CLASS_LABELS)}); found {values}{hint}")


def mask_channels(encoding: str = "onehot") -> int:
    """Channels added to the U-Net input by :func:`encode_mask`: 3 + 1 (one-hot) or 1 + 1."""
    check_choice("mask encoding", encoding, MASK_ENCODINGS)
    return (NUM_CLASSES - 1 if encoding == "onehot" else 1) + 1


def pool_mask(channels: Tensor, size: tuple[int, int], pooling: str) -> Tensor:
    """Encoded mask channels ``[B, C, h, w]`` to the grid ``size``: ``"area"`` averages each
    cell (integer factors only), ``"nearest"`` takes each cell's centre (``nearest-exact``)."""
    check_choice("pooling", pooling, POOLINGS)
    h, w = channels.shape[-2:]
    if tuple(size) == (h, w):
        return channels
    if pooling == "nearest":
        return F.interpolate(channels, size=tuple(size), mode="nearest-exact")
    if h % size[0] or w % size[1]:
        raise ValueError(f"area pooling needs a mask size divisible by the target: {h}x{w} -> "
                         f"{size[0]}x{size[1]}; use pooling='nearest' or resize the mask first")
    return F.avg_pool2d(channels, kernel_size=(h // size[0], w // size[1]))


def encode_mask(
    mask: Tensor | None,
    *,
    encoding: str = "onehot",
    present: Tensor | None = None,
    batch_size: int | None = None,
    size: int | tuple[int, int] | None = None,
    pooling: str | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Mask -> float channels ``[B, mask_channels(encoding), h, w]`` for concatenation to x_t.

    Encodings (``MASK_ENCODINGS``); the last channel is always the presence flag (1 = a mask is
    given, 0 = null mask, whose class channels are then 0 as well):

    - ``"onehot"``: channels k = 0, 1, 2 are [mask == 1], [mask == 2], [mask == 3] (CSF, grey,
      white); background is implied by all three being 0. Classes are unordered categories, so
      the network gets no false "CSF < grey < white" ordering.
    - ``"scalar"``: one channel mask / 3 in {0, 1/3, 2/3, 1}, a single channel of class codes
      like Konz et al.'s single-channel mode; cheaper, but it imposes an order on the classes.

    Resizing to a latent grid ``size`` (after encoding; :func:`pool_mask`). ``pooling``
    (``POOLINGS``): ``"area"`` averages each cell (integer factors only), so one-hot channels
    become the tissue *fractions* of the cell and thin CSF survives downsampling; ``"nearest"``
    takes the pixel at each cell's centre (``nearest-exact``), which aliases thin structures but
    keeps class codes exact, so it is the right choice for ``"scalar"`` (averaging class codes
    would turn CSF next to white matter into "grey"). Default (None): ``"area"`` for one-hot,
    ``"nearest"`` for scalar.

    ``mask=None`` gives the null encoding (zeros, on ``device``) and then needs ``batch_size``
    and ``size``.
    """
    check_choice("mask encoding", encoding, MASK_ENCODINGS)
    if pooling is None:
        pooling = "area" if encoding == "onehot" else "nearest"
    check_choice("pooling", pooling, POOLINGS)
    if isinstance(size, int):
        size = (size, size)
    if mask is None:
        if batch_size is None or size is None:
            raise ValueError("encode_mask(None) (the null mask) needs batch_size and size")
        return torch.zeros(batch_size, mask_channels(encoding), *size, device=device)
    check_mask(mask)
    b, h, w = mask.shape
    if encoding == "onehot":
        classes = F.one_hot(mask.long(), NUM_CLASSES)[..., 1:].permute(0, 3, 1, 2).float()
    else:
        classes = (mask.float() / (NUM_CLASSES - 1))[:, None]
    flag = torch.ones(b, 1, h, w, device=mask.device)
    if present is not None:
        check_flags("present", present, b)
        keep = present.to(device=mask.device, dtype=torch.float32)[:, None, None, None]
        classes, flag = classes * keep, flag * keep
    out = torch.cat([classes, flag], dim=1)
    return out if size is None else pool_mask(out, size, pooling)


def decode_mask(channels: Tensor, *, encoding: str = "onehot") -> Tensor:
    """Inverse of :func:`encode_mask`: long ``[B, h, w]``. One-hot: argmax over (background =
    1 - sum, CSF, grey, white), i.e. the majority class of an area-pooled cell (ties go to the
    lower class); scalar: round(3 v). The presence channel is ignored (null decodes to 0)."""
    check_choice("mask encoding", encoding, MASK_ENCODINGS)
    if channels.ndim != 4 or channels.shape[1] != mask_channels(encoding):
        raise ValueError(f"expected channels [B, {mask_channels(encoding)}, h, w] for "
                         f"{encoding!r}, got {tuple(channels.shape)}")
    classes = channels[:, :-1]
    if encoding == "onehot":
        background = 1.0 - classes.sum(dim=1, keepdim=True)
        return torch.cat([background, classes], dim=1).argmax(dim=1)
    return (classes[:, 0] * (NUM_CLASSES - 1)).round().clamp(0, NUM_CLASSES - 1).long()


def ablate_classes(
    mask: Tensor, p: float = DEFAULT_ABLATION_P, *, generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Random per-class mask ablation (Konz et al. 2024, "mask-ablated training"): each tissue
    class (CSF, grey, white) of each sample is removed, i.e. its pixels set to background,
    independently with probability ``p``, so the model also learns from partial masks.

    Draws: one ``torch.rand((B, 3), generator=generator)`` on the CPU (column k: class k + 1).
    Konz et al.'s code draws once per batch; we draw per sample, which gives the same marginal
    rate with more varied batches. Note that an ablated class reads as background: the network
    learns that a "background" label inside the head may hide any tissue.

    Returns ``(ablated mask, dropped)`` with ``dropped`` bool ``[B, 3]``.
    """
    check_mask(mask)
    check_probability("ablation probability", p)
    dropped = torch.rand((mask.shape[0], len(TISSUE_CLASSES)), generator=generator) < p
    dropped = dropped.to(mask.device)
    # remove[b, h, w] = dropped[b, mask[b, h, w] - 1] for tissue pixels; background stays
    table = torch.cat([torch.zeros_like(dropped[:, :1]), dropped], dim=1)  # [B, 4], class 0 kept
    remove = torch.gather(table, 1, mask.long().flatten(1)).view_as(mask)
    return mask.masked_fill(remove, 0), dropped


class MaskField(ConditionField):
    """The tissue mask: ``Condition(mask=...)``, spec ``"mask"``, ``UNetConfig.mask_encoding``
    (one-hot by default; :func:`encode_mask`)."""

    name = key = "mask"
    noun = "mask"
    kind = "channels"
    encodings = MASK_ENCODINGS
    default_encoding = "onehot"
    unet_option = "mask_encoding"
    spatial = True

    def check(self, value: Tensor) -> None:
        check_mask(value)

    def read(self, dataset) -> Tensor:
        """uint8 ``[N, H, W]``: the dataset's masks, untransformed (an OASISDataset's seg_*
        files; other datasets: their items' ``"mask"``)."""
        return read_masks(dataset)

    def collate(self, values) -> Tensor:
        return stack(values).long()

    def augment(self, value: Tensor, *, generator: torch.Generator | None = None,
                ablation_p: float = 0.0, **options) -> Tensor:
        """Class ablation (:func:`ablate_classes`: one ``[B, 3]`` draw) when ablation_p > 0."""
        if ablation_p > 0:
            return ablate_classes(value, ablation_p, generator=generator)[0]
        return value

    def channels(self, encoding: str) -> int:
        return mask_channels(encoding)

    def encode(self, value, present, *, encoding, batch_size, size, device, pooling=None,
               **options) -> Tensor:
        return encode_mask(value, encoding=encoding, present=present, batch_size=batch_size,
                           size=tuple(size), pooling=pooling, device=device)

    def resize(self, channels: Tensor, size: tuple[int, int], *, encoding: str = "onehot",
               pooling: str | None = None, **options) -> Tensor:
        """Area pooling for one-hot (tissue fractions), nearest for scalar (:func:`pool_mask`)."""
        if pooling is None:
            pooling = "area" if encoding == "onehot" else "nearest"
        return pool_mask(channels, size, pooling)
