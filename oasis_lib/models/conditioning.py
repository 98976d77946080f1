"""The condition of a conditional diffusion model, as data: a container of named fields.

Each field (the tissue **mask**, the **slice** index, or one a user registers) is described by
its :class:`~oasis_lib.models.fields.base.ConditionField` in the registry
(:mod:`oasis_lib.models.fields`): how it is checked, encoded for the network, resized to a
latent grid, read from the data, and what its null value is. A :class:`Condition` holds a
batch of values by field name and, per field, optional presence flags. Built-in fields:

- the tissue **mask**, long ``[B, H, W]`` in {0, 1, 2, 3} (background, CSF, grey, white
  matter), concatenated to x_t as extra channels (Konz et al. 2024;
  :mod:`oasis_lib.models.fields.mask`);
- the **slice index**, long ``[B]`` in 0..31 (the position of the slice in the OASIS stack),
  embedded into a vector added to the time embedding (:mod:`oasis_lib.models.fields.slice_level`).

Null condition (classifier-free guidance, Ho & Salimans 2022). One network learns p(x | c) and
p(x) when the condition is dropped at random in training (:func:`drop_condition`); the dropped
condition must be told apart from every real one, which each field's encoding does (the mask's
presence channel, the slice's null token ``NULL_SLICE = 32``). Per-sample absence is stored as
the boolean flags ``<name>_present`` (``mask_present``, ``slice_present``); a field left
``None`` means "absent for the whole batch".

Condition specs (``TrainConfig.condition``, ``DiffusionPipeline.condition``): ``"none"`` or field
names joined by ``"+"`` (``CONDITIONS`` for the built-in fields), parsed by splitting on ``"+"``
and looking each name up in the registry (:func:`~oasis_lib.models.fields.parse_condition`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fields.base import check_choice, check_flags, check_probability, values_checkable
from .fields.mask import (
    DEFAULT_ABLATION_P,
    NUM_CLASSES,
    TISSUE_CLASSES,
    ablate_classes,
    check_mask,
)
from .fields.registry import (
    CONDITION_FIELDS,
    condition_specs,
    field_of_keyword,
    get_condition_field,
    parse_condition,
)
from .fields.slice_level import NULL_SLICE, check_slice_index
from .fields.slice_level import slice_tokens as _field_tokens

__all__ = ["CONDITIONS", "DEFAULT_ABLATION_P", "DEFAULT_P_UNCOND", "DROPOUT_MODES", "NULL_SLICE",
           "NUM_CLASSES", "TISSUE_CLASSES", "Condition", "ablate_classes", "check_mask",
           "check_slice_index", "condition_fields", "drop_condition", "get_condition_field",
           "parse_condition",
           "slice_tokens", "training_condition", "values_checkable"]

DROPOUT_MODES = ("joint", "independent")
#: Default condition-dropout probability for classifier-free guidance (Ho & Salimans use 0.1-0.2).
DEFAULT_P_UNCOND = 0.1
#: The specs of the built-in fields (``--condition``'s choices): none, mask, slice, mask+slice.
CONDITIONS = condition_specs()
_check_choice, _check_flags = check_choice, check_flags  # (the names before issue 22)


def condition_fields(spec: str | None) -> tuple[bool, bool]:
    """``(uses mask, uses slice)`` of a condition spec (None = "none"). For any field:
    ``parse_condition(spec)``."""
    names = {f.name for f in parse_condition(spec)}
    return "mask" in names, "slice" in names


class Condition:
    """What a conditional model is asked for: a batch of values by field, validated on
    construction and immutable.

    ``Condition(mask=..., slice_index=..., mask_present=..., slice_present=...)``, or any
    registered field by its ``key`` and ``<name>_present`` keyword (``Condition(age=...)``).

    Args:
        mask (long Tensor [B, H, W] or None): tissue classes 0..3; None: no mask (null).
        slice_index (long Tensor [B] or None): slice 0..31; None: no slice (null).
        mask_present (bool Tensor [B] or None): False where this sample's mask is dropped (the
            null mask); None: all present. Only allowed together with ``mask``.
        slice_present (bool Tensor [B] or None): the same for the slice.
        **fields: the values and flags of other registered fields.

    ``values`` and ``flags`` map field names to tensors, in registry order; ``cond.<key>`` and
    ``cond.<name>_present`` read them (None when absent).
    """

    __slots__ = ("flags", "values")

    def __init__(self, mask: Tensor | None = None, slice_index: Tensor | None = None,
                 mask_present: Tensor | None = None, slice_present: Tensor | None = None,
                 **fields: Tensor | None) -> None:
        given = {"mask": mask, "slice_index": slice_index, "mask_present": mask_present,
                 "slice_present": slice_present, **fields}
        values, flags = {}, {}
        for keyword, value in given.items():
            field, is_flag = field_of_keyword(keyword)
            if value is not None:
                (flags if is_flag else values)[field.name] = value
        order = list(CONDITION_FIELDS)
        values = dict(sorted(values.items(), key=lambda kv: order.index(kv[0])))
        for name, value in values.items():
            CONDITION_FIELDS[name].check(value)
        sizes = {name: int(v.shape[0]) for name, v in values.items()}
        if len(set(sizes.values())) > 1:
            first, n = next(iter(sizes.items()))
            other, m = next((k, v) for k, v in sizes.items() if v != n)
            raise ValueError(f"{CONDITION_FIELDS[first].key} has batch size {n} but "
                             f"{CONDITION_FIELDS[other].key} has {m}")
        for name, value in flags.items():
            field = CONDITION_FIELDS[name]
            if name not in values:
                raise ValueError(f"{field.present_key} given without {field.key}")
            check_flags(field.present_key, value, sizes[name])
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "flags", flags)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        try:
            field, is_flag = field_of_keyword(attr)
        except ValueError:
            raise AttributeError(f"Condition has no attribute {attr!r}") from None
        return (self.flags if is_flag else self.values).get(field.name)

    def __setattr__(self, attr: str, value) -> None:
        raise AttributeError("a Condition is immutable: use replace(...)")

    def __reduce__(self):
        return _rebuild, (self.keywords(),)

    def __repr__(self) -> str:
        parts = [f"{CONDITION_FIELDS[n].key}={tuple(v.shape)}" for n, v in self.values.items()]
        return f"Condition({', '.join(parts)})"

    def keywords(self) -> dict[str, Tensor]:
        """The keywords that rebuild this condition (``Condition(**c.keywords())``)."""
        out = {CONDITION_FIELDS[n].key: v for n, v in self.values.items()}
        out.update({CONDITION_FIELDS[n].present_key: f for n, f in self.flags.items()})
        return out

    def replace(self, **keywords: Tensor | None) -> Condition:
        """A copy with some values or flags replaced (validated again)."""
        return Condition(**{**self.keywords(), **keywords})

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the fields set, in registry order."""
        return tuple(self.values)

    @property
    def batch_size(self) -> int | None:
        """B, or None when no field is set (the null condition of any batch)."""
        for value in self.values.values():
            return int(value.shape[0])
        return None

    def present(self, field: str) -> Tensor | None:
        """Bool [B] presence of field ``field`` (by name: ``"mask"``, ``"slice"``; None when
        that field is not set)."""
        check_choice("condition field", field, tuple(CONDITION_FIELDS))
        value = self.values.get(field)
        if value is None:
            return None
        flags = self.flags.get(field)
        return flags if flags is not None else torch.ones(value.shape[0], dtype=torch.bool,
                                                          device=value.device)

    def null_like(self) -> Condition:
        """The same shapes with every sample marked absent: the unconditional twin for CFG
        (each field's ``null_value`` under False flags)."""
        kw = {}
        for name, value in self.values.items():
            field = CONDITION_FIELDS[name]
            kw[field.key] = field.null_value(value)
            kw[field.present_key] = torch.zeros(value.shape[0], dtype=torch.bool,
                                                device=value.device)
        return Condition(**kw)

    def select(self, index) -> Condition:
        """The condition of ``x[index]`` (a slice or an index tensor over the batch)."""
        return Condition(**{k: v[index] for k, v in self.keywords().items()})

    def to(self, device: torch.device | str) -> Condition:
        """A copy with every tensor on ``device``."""
        return Condition(**{k: v.to(device) for k, v in self.keywords().items()})

    @classmethod
    def cat(cls, conditions: list[Condition]) -> Condition:
        """Concatenate along the batch (used to batch the two passes of CFG). All must set the
        same fields."""
        first = conditions[0]
        for c in conditions[1:]:
            if c.fields != first.fields:
                raise ValueError("Condition.cat needs conditions that set the same fields")
        kw = {}
        for name in first.fields:
            field = CONDITION_FIELDS[name]
            kw[field.key] = torch.cat([c.values[name] for c in conditions])
            kw[field.present_key] = torch.cat([c.present(name) for c in conditions])
        return cls(**kw)


def _rebuild(keywords: dict) -> Condition:
    return Condition(**keywords)


# --------------------------------------------------------------------------- training-time
def drop_condition(
    cond: Condition, p_uncond: float = DEFAULT_P_UNCOND, *, mode: str = "joint",
    generator: torch.Generator | None = None,
) -> Condition:
    """Condition dropout for classifier-free guidance (Ho & Salimans 2022, Algorithm 1).

    ``mode`` (``DROPOUT_MODES``):

    - ``"joint"`` (default): one draw ``torch.rand(B)``; where it is < ``p_uncond`` every field
      becomes null. Exactly the single-condition scheme of the paper: a fraction p_uncond of
      the batch trains the unconditional model used by the guidance.
    - ``"independent"``: one draw ``torch.rand((B, F))``, a column per registered field in
      registry order (F = 2 with the built-ins: column 0 the mask, 1 the slice), each dropped
      with ``p_uncond``. The network also learns p(x | mask) and p(x | slice), so the two could
      be guided separately, but only p_uncond^2 of the batch is fully unconditional (1% at
      0.1): raise p_uncond if you guide on both at once.

    Draws are on the CPU with ``generator``; samples already absent stay absent.
    """
    check_choice("dropout mode", mode, DROPOUT_MODES)
    check_probability("p_uncond", p_uncond)
    b = cond.batch_size
    if b is None:
        return cond
    names = tuple(CONDITION_FIELDS)
    if mode == "joint":
        keep = (torch.rand(b, generator=generator) >= p_uncond)[:, None].expand(b, len(names))
    else:
        keep = torch.rand((b, len(names)), generator=generator) >= p_uncond
    out = {}
    for name in cond.fields:
        present = cond.present(name)
        out[CONDITION_FIELDS[name].present_key] = present & keep[:, names.index(name)].to(
            present.device)
    return cond.replace(**out)


def training_condition(
    cond: Condition, *, ablation_p: float = DEFAULT_ABLATION_P,
    p_uncond: float = DEFAULT_P_UNCOND, mode: str = "joint",
    generator: torch.Generator | None = None,
) -> Condition:
    """The condition a training step sees: each field's augmentation in registry order (the
    mask's class ablation: one [B, 3] draw, made when a mask is set and ``ablation_p > 0``),
    then condition dropout (the draws of :func:`drop_condition`, always made)."""
    augmented = {CONDITION_FIELDS[name].key: CONDITION_FIELDS[name].augment(
        value, generator=generator, ablation_p=ablation_p) for name, value in cond.values.items()}
    return drop_condition(cond.replace(**augmented), p_uncond, mode=mode, generator=generator)


def slice_tokens(cond: Condition, batch_size: int | None = None) -> Tensor:
    """Long [B] tokens for :class:`~oasis_lib.models.fields.slice_level.SliceEmbedding`: the
    slice index, or ``NULL_SLICE`` (32) where the slice is absent (all of them when
    ``cond.slice_index`` is None)."""
    b = cond.batch_size if cond.batch_size is not None else batch_size
    return _field_tokens(cond.slice_index, cond.present("slice"), batch_size=b)

