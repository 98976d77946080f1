"""The condition of a conditional diffusion model, as data: a tissue mask and/or a slice index.

Two conditions exist for OASIS slices (issue 12):

- the tissue **mask**, long ``[B, H, W]`` in {0, 1, 2, 3} (background, CSF, grey, white matter),
  fed to the U-Net as extra input channels concatenated to x_t (Konz et al. 2024,
  "Anatomically-Controllable Medical Image Generation with Segmentation-Guided Diffusion
  Models"); see :func:`~oasis_lib.models.condition_encoding.encode_mask` for the encodings;
- the **slice index**, long ``[B]`` in 0..31 (the position of the slice in the OASIS stack),
  embedded by :class:`~oasis_lib.models.condition_encoding.SliceEmbedding` into a vector that
  is added to the time embedding.

Null condition (classifier-free guidance, Ho & Salimans 2022). One network learns p(x | c) and
p(x) when the condition is dropped at random in training (:func:`drop_condition`); the dropped
condition must be told apart from every real one:

- mask: the encoding carries one extra **presence channel**, 1 where a mask is given and 0 for
  the null mask, whose class channels are all zero too. A one-hot of zeros alone would read as
  "all background", a legal mask (the top slices of a stack are nearly empty);
- slice: the extra index ``NULL_SLICE = 32`` with its own learned embedding.

Per-sample absence is stored as the boolean flags ``mask_present`` / ``slice_present`` of
:class:`Condition`; a field left ``None`` means "absent for the whole batch".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..data.layout import CLASS_LABELS, SLICES_PER_CASE

NUM_CLASSES = len(CLASS_LABELS)  # background, CSF, grey matter, white matter
#: The classes that ablation may drop (background is never "dropped": it is what remains).
TISSUE_CLASSES = (1, 2, 3)
#: Slice token of the null (dropped) slice condition (the real ones: 0..SLICES_PER_CASE-1).
NULL_SLICE = SLICES_PER_CASE
DROPOUT_MODES = ("joint", "independent")
#: Default per-class ablation probability: Konz et al. 2024 remove each class with p = 0.5.
DEFAULT_ABLATION_P = 0.5
#: Default condition-dropout probability for classifier-free guidance (Ho & Salimans use 0.1-0.2).
DEFAULT_P_UNCOND = 0.1
#: What a model can be conditioned on (``TrainConfig.condition``, ``DiffusionPipeline.condition``).
CONDITIONS = ("none", "mask", "slice", "mask+slice")


def condition_fields(spec: str | None) -> tuple[bool, bool]:
    """``(uses mask, uses slice)`` of a condition spec (one of ``CONDITIONS``; None = "none")."""
    spec = "none" if spec is None else spec
    _check_choice("condition", spec, CONDITIONS)
    return "mask" in spec, "slice" in spec


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {valid}")


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_flags(name: str, flags: Tensor | None, batch: int) -> None:
    if flags is not None and (flags.dtype != torch.bool or tuple(flags.shape) != (batch,)):
        raise ValueError(f"{name} must be a bool tensor of shape [B]=[{batch}], got "
                         f"{flags.dtype} {tuple(flags.shape)}")


def values_checkable(x: Tensor) -> bool:
    """Whether a check may read ``x``'s values: not on the meta device (the memory probe has
    none) and not while ``torch.compile`` traces (a data-dependent shape would break the graph;
    a Condition's values were checked when it was built, outside the compiled network)."""
    return x.device.type != "meta" and not torch.compiler.is_compiling()


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


def check_slice_index(slice_index: Tensor) -> None:
    """Raise ValueError unless ``slice_index`` is an integer tensor ``[B]`` with values 0..31."""
    if not isinstance(slice_index, Tensor):
        raise ValueError("slice_index must be a torch.Tensor [B], got "
                         f"{type(slice_index).__name__}")
    if slice_index.dtype.is_floating_point or slice_index.dtype == torch.bool:
        raise ValueError(f"slice_index must be an integer (long) tensor, got {slice_index.dtype}")
    if slice_index.ndim != 1:
        raise ValueError(f"expected slice_index of shape [B], got {tuple(slice_index.shape)}")
    if not values_checkable(slice_index):
        return
    bad = slice_index[(slice_index < 0) | (slice_index >= SLICES_PER_CASE)]
    if bad.numel():
        raise ValueError(f"slice_index must be in 0..{SLICES_PER_CASE - 1}; "
                         f"found {bad[:8].tolist()}")


@dataclass(frozen=True, eq=False)
class Condition:
    """What a conditional model is asked for, validated on construction.

    Args:
        mask (long Tensor [B, H, W] or None): tissue classes 0..3; None: no mask (null).
        slice_index (long Tensor [B] or None): slice 0..31; None: no slice (null).
        mask_present (bool Tensor [B] or None): False where this sample's mask is dropped (the
            null mask); None: all present. Only allowed together with ``mask``.
        slice_present (bool Tensor [B] or None): the same for the slice.
    """

    mask: Tensor | None = None
    slice_index: Tensor | None = None
    mask_present: Tensor | None = None
    slice_present: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mask is not None:
            check_mask(self.mask)
        if self.slice_index is not None:
            check_slice_index(self.slice_index)
        if self.mask is not None and self.slice_index is not None \
                and self.mask.shape[0] != self.slice_index.shape[0]:
            raise ValueError(f"mask has batch size {self.mask.shape[0]} but slice_index has "
                             f"{self.slice_index.shape[0]}")
        for name, value, flags in (("mask", self.mask, self.mask_present),
                                   ("slice_index", self.slice_index, self.slice_present)):
            if flags is not None and value is None:
                raise ValueError(f"{name.split('_')[0]}_present given without {name}")
            _check_flags(f"{name.split('_')[0]}_present", flags,
                         0 if value is None else value.shape[0])

    @property
    def batch_size(self) -> int | None:
        """B, or None when neither field is set (the null condition of any batch)."""
        for value in (self.mask, self.slice_index):
            if value is not None:
                return int(value.shape[0])
        return None

    def present(self, field: str) -> Tensor | None:
        """Bool [B] presence of ``"mask"`` or ``"slice"`` (None when that field is None)."""
        _check_choice("condition field", field, ("mask", "slice"))
        value = self.mask if field == "mask" else self.slice_index
        flags = self.mask_present if field == "mask" else self.slice_present
        if value is None:
            return None
        return flags if flags is not None else torch.ones(value.shape[0], dtype=torch.bool,
                                                          device=value.device)

    def null_like(self) -> Condition:
        """The same shapes with every sample marked absent: the unconditional twin for CFG."""
        return Condition(
            mask=None if self.mask is None else torch.zeros_like(self.mask),
            slice_index=None if self.slice_index is None else torch.zeros_like(self.slice_index),
            mask_present=None if self.mask is None else torch.zeros(
                self.mask.shape[0], dtype=torch.bool, device=self.mask.device),
            slice_present=None if self.slice_index is None else torch.zeros(
                self.slice_index.shape[0], dtype=torch.bool, device=self.slice_index.device),
        )

    def select(self, index) -> Condition:
        """The condition of ``x[index]`` (a slice or an index tensor over the batch)."""
        return Condition(*(None if v is None else v[index] for v in
                           (self.mask, self.slice_index, self.mask_present, self.slice_present)))

    def to(self, device: torch.device | str) -> Condition:
        """A copy with every tensor on ``device``."""
        return Condition(*(None if v is None else v.to(device) for v in
                           (self.mask, self.slice_index, self.mask_present, self.slice_present)))

    @classmethod
    def cat(cls, conditions: list[Condition]) -> Condition:
        """Concatenate along the batch (used to batch the two passes of CFG). All must set the
        same fields."""
        first = conditions[0]
        for c in conditions[1:]:
            if (c.mask is None) != (first.mask is None) or \
                    (c.slice_index is None) != (first.slice_index is None):
                raise ValueError("Condition.cat needs conditions that set the same fields")
        kwargs = {}
        for name, field in (("mask", "mask"), ("slice_index", "slice")):
            if getattr(first, name) is not None:
                kwargs[name] = torch.cat([getattr(c, name) for c in conditions])
                kwargs[f"{field}_present"] = torch.cat([c.present(field) for c in conditions])
        return cls(**kwargs)


# --------------------------------------------------------------------------- training-time
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
    _check_probability("ablation probability", p)
    dropped = torch.rand((mask.shape[0], len(TISSUE_CLASSES)), generator=generator) < p
    dropped = dropped.to(mask.device)
    # remove[b, h, w] = dropped[b, mask[b, h, w] - 1] for tissue pixels; background stays
    table = torch.cat([torch.zeros_like(dropped[:, :1]), dropped], dim=1)  # [B, 4], class 0 kept
    remove = torch.gather(table, 1, mask.long().flatten(1)).view_as(mask)
    return mask.masked_fill(remove, 0), dropped


def drop_condition(
    cond: Condition, p_uncond: float = DEFAULT_P_UNCOND, *, mode: str = "joint",
    generator: torch.Generator | None = None,
) -> Condition:
    """Condition dropout for classifier-free guidance (Ho & Salimans 2022, Algorithm 1).

    ``mode`` (``DROPOUT_MODES``):

    - ``"joint"`` (default): one draw ``torch.rand(B)``; where it is < ``p_uncond`` both the mask
      and the slice become null. Exactly the single-condition scheme of the paper: a fraction
      p_uncond of the batch trains the unconditional model used by the guidance.
    - ``"independent"``: one draw ``torch.rand((B, 2))``, column 0 for the mask, 1 for the
      slice, each dropped with ``p_uncond``. The network also learns p(x | mask) and
      p(x | slice), so the two could be guided separately, but only p_uncond^2 of the batch is
      fully unconditional (1% at 0.1): raise p_uncond if you guide on both at once.

    Draws are on the CPU with ``generator``; samples already absent stay absent.
    """
    _check_choice("dropout mode", mode, DROPOUT_MODES)
    _check_probability("p_uncond", p_uncond)
    b = cond.batch_size
    if b is None:
        return cond
    if mode == "joint":
        keep = (torch.rand(b, generator=generator) >= p_uncond)[:, None].expand(b, 2)
    else:
        keep = torch.rand((b, 2), generator=generator) >= p_uncond
    out = {}
    for k, field in enumerate(("mask", "slice")):
        present = cond.present(field)
        if present is not None:
            out[f"{field}_present"] = present & keep[:, k].to(present.device)
    return replace(cond, **out)


def training_condition(
    cond: Condition, *, ablation_p: float = DEFAULT_ABLATION_P,
    p_uncond: float = DEFAULT_P_UNCOND, mode: str = "joint",
    generator: torch.Generator | None = None,
) -> Condition:
    """The condition a training step sees: class ablation of the mask first (one [B, 3] draw,
    made when a mask is set and ``ablation_p > 0``), then condition dropout (the draws of
    :func:`drop_condition`, always made)."""
    if cond.mask is not None and ablation_p > 0:
        cond = replace(cond, mask=ablate_classes(cond.mask, ablation_p, generator=generator)[0])
    return drop_condition(cond, p_uncond, mode=mode, generator=generator)


def slice_tokens(cond: Condition, batch_size: int | None = None) -> Tensor:
    """Long [B] tokens for :class:`~oasis_lib.models.condition_encoding.SliceEmbedding`: the
    slice index, or ``NULL_SLICE`` (32) where the slice is absent (all of them when
    ``cond.slice_index`` is None)."""
    if cond.slice_index is None:
        b = cond.batch_size if cond.batch_size is not None else batch_size
        if b is None:
            raise ValueError("slice_tokens of an empty Condition needs batch_size")
        return torch.full((b,), NULL_SLICE, dtype=torch.long)
    return torch.where(cond.present("slice"), cond.slice_index.long(),
                       torch.full_like(cond.slice_index.long(), NULL_SLICE))
