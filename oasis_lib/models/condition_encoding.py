"""How the condition enters the network: :func:`field_inputs`, which turns a
:class:`~oasis_lib.models.conditioning.Condition` into each field's network input for a given
x_t (what the U-Net calls), and :func:`condition_inputs`, the same for the two built-in fields.

A ``"channels"`` field (the mask) is encoded and resized to x's grid, then concatenated to x_t
as extra input channels (Konz et al. 2024); an ``"embedding"`` field (the slice level) becomes
the input of its embedding module, whose output is added to the time embedding (as class
labels are in Dhariwal & Nichol 2021 and Ho & Salimans 2022). Each field's encoding lives with
its field (:mod:`oasis_lib.models.fields`); the names below are re-exported from there.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .conditioning import Condition
from .fields.mask import MASK_ENCODINGS, POOLINGS, decode_mask, encode_mask, mask_channels
from .fields.registry import get_condition_field
from .fields.slice_level import SLICE_EMBEDDINGS, SliceEmbedding

__all__ = ["MASK_ENCODINGS", "POOLINGS", "SLICE_EMBEDDINGS", "SliceEmbedding",
           "condition_inputs", "decode_mask", "encode_mask", "field_inputs", "mask_channels"]


def field_inputs(cond: Condition | None, x: Tensor, encodings: Mapping[str, str], *,
                 pooling: str | None = None) -> dict[str, Tensor]:
    """What a conditional network gets for x_t ``[B, C, h, w]``: for each field it takes
    (``encodings``: field name -> encoding, e.g. ``{"mask": "onehot", "slice": "learned"}``),
    its input on x's device: channels ``[B, c, h, w]`` in x's dtype (a mask at pixel size is
    pooled to a latent grid) or the embedding's input (slice tokens ``[B]``).

    An absent condition (``cond`` None, a field not set, or a False presence flag) becomes the
    null input the network was trained with. Raises ValueError for a field given to a network
    that does not take it, and for a batch size other than x's.
    """
    cond = Condition() if cond is None else cond
    b = x.shape[0]
    if cond.batch_size is not None and cond.batch_size != b:
        raise ValueError(f"the condition has batch size {cond.batch_size} but x_t has {b}")
    for name in cond.fields:
        if name not in encodings:
            raise ValueError(f"a {get_condition_field(name).noun} was given, but this model is "
                             f"not {name}-conditioned")
    out = {}
    for name, encoding in encodings.items():
        field = get_condition_field(name)
        value = field.encode(cond.values.get(name), cond.flags.get(name), encoding=encoding,
                             batch_size=b, size=tuple(x.shape[-2:]), device=x.device,
                             pooling=pooling)
        out[name] = value.to(device=x.device, dtype=x.dtype) if field.kind == "channels" \
            else value.to(x.device)
    return out


def condition_inputs(
    cond: Condition | None,
    x: Tensor,
    *,
    use_mask: bool,
    use_slice: bool,
    mask_encoding: str = "onehot",
    pooling: str | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """The two built-in fields' inputs for x_t ``[B, C, h, w]``: ``(mask channels
    [B, mask_channels, h, w] or None, slice tokens [B] or None)``, on x's device
    (:func:`field_inputs` with ``{"mask": mask_encoding}`` and/or ``{"slice": "learned"}``)."""
    encodings = {"mask": mask_encoding} if use_mask else {}
    if use_slice:
        encodings["slice"] = "learned"
    inputs = field_inputs(cond, x, encodings, pooling=pooling)
    return inputs.get("mask"), inputs.get("slice")
