"""The slice-level field: long ``[B]`` in 0..31, the position of the slice in the OASIS stack
(the ``N`` of ``case_XXX_slice_N``), embedded by :class:`SliceEmbedding` into a vector added to
the time embedding (as class labels are in Dhariwal & Nichol 2021 and Ho & Salimans 2022).

Null slice (classifier-free guidance): the extra token ``NULL_SLICE = 32`` with its own learned
embedding (:func:`slice_tokens`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...data.conditional import read_slice_indices
from ...data.layout import SLICES_PER_CASE
from ..embeddings import sinusoidal_embedding
from .base import ConditionField, check_choice, check_integer, stack, values_checkable

#: Slice token of the null (dropped) slice condition (the real ones: 0..SLICES_PER_CASE-1).
NULL_SLICE = SLICES_PER_CASE
SLICE_EMBEDDINGS = ("learned", "sinusoidal")


def check_slice_index(slice_index: Tensor) -> None:
    """Raise ValueError unless ``slice_index`` is an integer tensor ``[B]`` with values 0..31."""
    check_integer("slice_index", slice_index, 1, "[B]")
    if not values_checkable(slice_index):
        return
    bad = slice_index[(slice_index < 0) | (slice_index >= SLICES_PER_CASE)]
    if bad.numel():
        raise ValueError(f"slice_index must be in 0..{SLICES_PER_CASE - 1}; "
                         f"found {bad[:8].tolist()}")


def slice_tokens(slice_index: Tensor | None, present: Tensor | None = None, *,
                 batch_size: int | None = None) -> Tensor:
    """Long [B] tokens for :class:`SliceEmbedding`: the slice index, or ``NULL_SLICE`` (32)
    where the slice is absent (``present`` False; all of them when ``slice_index`` is None,
    which then needs ``batch_size``)."""
    if slice_index is None:
        if batch_size is None:
            raise ValueError("slice_tokens of an empty Condition needs batch_size")
        return torch.full((batch_size,), NULL_SLICE, dtype=torch.long)
    if present is None:
        present = torch.ones(slice_index.shape[0], dtype=torch.bool, device=slice_index.device)
    return torch.where(present, slice_index.long(),
                       torch.full_like(slice_index.long(), NULL_SLICE))


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
        check_choice("slice embedding", kind, SLICE_EMBEDDINGS)
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


class SliceField(ConditionField):
    """The slice level: ``Condition(slice_index=...)``, spec ``"slice"``,
    ``UNetConfig.slice_embedding`` (a learned table by default; :class:`SliceEmbedding`)."""

    name = "slice"
    key = "slice_index"
    noun = "slice index"
    kind = "embedding"
    encodings = SLICE_EMBEDDINGS
    default_encoding = "learned"
    unet_option = "slice_embedding"

    def check(self, value: Tensor) -> None:
        check_slice_index(value)

    def read(self, dataset) -> Tensor:
        """Long ``[N]``: parsed from the file names (``case_XXX_slice_N``) of an OASISDataset;
        other datasets: their items' ``"slice_index"``."""
        return read_slice_indices(dataset)

    def collate(self, values) -> Tensor:
        return stack(values).long().reshape(-1)

    def embedding(self, dim: int, encoding: str) -> nn.Module:
        return SliceEmbedding(dim, kind=encoding)

    def encode(self, value, present, *, encoding, batch_size, size, device, **options) -> Tensor:
        return slice_tokens(value, present, batch_size=batch_size).to(device)
