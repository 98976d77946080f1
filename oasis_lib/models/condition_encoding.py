"""How the condition enters the network: mask channels for the input, slice embeddings for the
time embedding, and :func:`condition_inputs`, which turns a
:class:`~oasis_lib.models.conditioning.Condition` into both for a given x_t.

The mask is concatenated to x_t as extra input channels (Konz et al. 2024), so a U-Net built with
``cond_channels = mask_channels(encoding)`` takes it; the slice token (0..31, 32 = null) goes
through :class:`SliceEmbedding` to a vector added to the time embedding (as class labels are in
Dhariwal & Nichol 2021 and Ho & Salimans 2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.layout import SLICES_PER_CASE
from .conditioning import (
    NULL_SLICE,
    NUM_CLASSES,
    Condition,
    _check_choice,
    _check_flags,
    check_mask,
    slice_tokens,
    values_checkable,
)
from .embeddings import sinusoidal_embedding

MASK_ENCODINGS = ("onehot", "scalar")
POOLINGS = ("area", "nearest")
SLICE_EMBEDDINGS = ("learned", "sinusoidal")


# --------------------------------------------------------------------------- mask encoding
def mask_channels(encoding: str = "onehot") -> int:
    """Channels added to the U-Net input by :func:`encode_mask`: 3 + 1 (one-hot) or 1 + 1."""
    _check_choice("mask encoding", encoding, MASK_ENCODINGS)
    return (NUM_CLASSES - 1 if encoding == "onehot" else 1) + 1


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

    Resizing to a latent grid ``size`` (after encoding). ``pooling`` (``POOLINGS``):
    ``"area"`` averages each cell (integer factors only), so one-hot channels become the tissue
    *fractions* of the cell and thin CSF survives downsampling; ``"nearest"`` takes the pixel at
    each cell's centre (``nearest-exact``), which aliases thin structures but keeps
    class codes exact, so it is the right choice for ``"scalar"`` (averaging class codes would
    turn CSF next to white matter into "grey"). Default (None): ``"area"`` for one-hot,
    ``"nearest"`` for scalar.

    ``mask=None`` gives the null encoding (zeros, on ``device``) and then needs ``batch_size``
    and ``size``.
    """
    _check_choice("mask encoding", encoding, MASK_ENCODINGS)
    if pooling is None:
        pooling = "area" if encoding == "onehot" else "nearest"
    _check_choice("pooling", pooling, POOLINGS)
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
        _check_flags("present", present, b)
        keep = present.to(device=mask.device, dtype=torch.float32)[:, None, None, None]
        classes, flag = classes * keep, flag * keep
    out = torch.cat([classes, flag], dim=1)
    if size is None or tuple(size) == (h, w):
        return out
    if pooling == "nearest":
        return F.interpolate(out, size=tuple(size), mode="nearest-exact")
    if h % size[0] or w % size[1]:
        raise ValueError(f"area pooling needs a mask size divisible by the target: {h}x{w} -> "
                         f"{size[0]}x{size[1]}; use pooling='nearest' or resize the mask first")
    return F.avg_pool2d(out, kernel_size=(h // size[0], w // size[1]))


def decode_mask(channels: Tensor, *, encoding: str = "onehot") -> Tensor:
    """Inverse of :func:`encode_mask`: long ``[B, h, w]``. One-hot: argmax over (background =
    1 - sum, CSF, grey, white), i.e. the majority class of an area-pooled cell (ties go to the
    lower class); scalar: round(3 v). The presence channel is ignored (null decodes to 0)."""
    _check_choice("mask encoding", encoding, MASK_ENCODINGS)
    if channels.ndim != 4 or channels.shape[1] != mask_channels(encoding):
        raise ValueError(f"expected channels [B, {mask_channels(encoding)}, h, w] for "
                         f"{encoding!r}, got {tuple(channels.shape)}")
    classes = channels[:, :-1]
    if encoding == "onehot":
        background = 1.0 - classes.sum(dim=1, keepdim=True)
        return torch.cat([background, classes], dim=1).argmax(dim=1)
    return (classes[:, 0] * (NUM_CLASSES - 1)).round().clamp(0, NUM_CLASSES - 1).long()


# --------------------------------------------------------------------------- slice embedding
class SliceEmbedding(nn.Module):
    """Slice token (0..31, or ``NULL_SLICE`` = 32) -> a vector ``[B, dim]`` added to the time
    embedding of the U-Net (as class labels are in Dhariwal & Nichol 2021 / Ho & Salimans 2022).

    Args:
        dim (int): the time-embedding size E of the U-Net.
        kind (str, default ``"learned"``): one of ``SLICE_EMBEDDINGS``.
            ``"learned"``: a table ``nn.Embedding(33, dim)``; every slice is its own category
            (no notion that slice 10 is near slice 11).
            ``"sinusoidal"``: sin/cos of the index (``sinusoidal_embedding`` with
            ``max_period=64``, so the slowest component turns by about 0.5 rad over the 32
            slices and neighbouring slices get similar codes) through
            Linear -> SiLU -> Linear; the null token gets its own learned vector instead, since
            the sinusoid of 32 would just be "one slice further".

    The last layer (the table, or the last Linear and the null vector) starts at zero, so adding
    the embedding to a trained unconditional network leaves its output unchanged until trained.
    """

    def __init__(self, dim: int, *, kind: str = "learned"):
        super().__init__()
        _check_choice("slice embedding", kind, SLICE_EMBEDDINGS)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim, self.kind = dim, kind
        if kind == "learned":
            self.table = nn.Embedding(SLICES_PER_CASE + 1, dim)
            nn.init.zeros_(self.table.weight)
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
            self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 1 or tokens.dtype.is_floating_point:
            raise ValueError(f"expected integer slice tokens of shape [B], got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
        bad = tokens[(tokens < 0) | (tokens > NULL_SLICE)] if values_checkable(tokens) \
            else tokens[:0]  # (meta device, or torch.compile tracing: no values to check)
        if bad.numel():
            raise ValueError(f"slice tokens must be in 0..{SLICES_PER_CASE - 1} or NULL_SLICE="
                             f"{NULL_SLICE}; found {bad[:8].tolist()}")
        if self.kind == "learned":
            return self.table(tokens.long())
        is_null = tokens == NULL_SLICE
        codes = sinusoidal_embedding(tokens.clamp(max=SLICES_PER_CASE - 1), self.dim,
                                     max_period=64.0)
        codes = codes.to(self.null.dtype)
        return torch.where(is_null[:, None], self.null.expand(len(tokens), -1), self.mlp(codes))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kind={self.kind!r}, tokens=0..{NULL_SLICE} ({NULL_SLICE} = null)"


# --------------------------------------------------------------------------- network inputs
def condition_inputs(
    cond: Condition | None,
    x: Tensor,
    *,
    use_mask: bool,
    use_slice: bool,
    mask_encoding: str = "onehot",
    pooling: str | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """What a conditional network gets for x_t ``[B, C, h, w]``: ``(mask channels
    [B, mask_channels, h, w] or None, slice tokens [B] or None)``, on x's device.

    The mask is encoded and pooled to x's grid (latent models: :func:`encode_mask`); an absent
    condition (``cond`` None, a None field, or a False presence flag) becomes the null
    encoding the network was trained with. Raises ValueError for a mask or slice given to a
    network that does not use it, and for a batch size other than x's.
    """
    cond = Condition() if cond is None else cond
    b = x.shape[0]
    if cond.batch_size is not None and cond.batch_size != b:
        raise ValueError(f"the condition has batch size {cond.batch_size} but x_t has {b}")
    if cond.mask is not None and not use_mask:
        raise ValueError("a mask was given, but this model is not mask-conditioned")
    if cond.slice_index is not None and not use_slice:
        raise ValueError("a slice index was given, but this model is not slice-conditioned")
    channels = tokens = None
    if use_mask:
        channels = encode_mask(cond.mask, encoding=mask_encoding, present=cond.mask_present,
                               batch_size=b, size=tuple(x.shape[-2:]), pooling=pooling,
                               device=x.device).to(device=x.device, dtype=x.dtype)
    if use_slice:
        tokens = slice_tokens(cond, batch_size=b).to(x.device)
    return channels, tokens
