"""The conditions of a conditional evaluation (issue 12), and the metrics that check them.

:func:`evaluate` and :func:`generate_samples` (:mod:`oasis_lib.evaluation.report`) take
``condition=``: a :class:`~oasis_lib.models.conditioning.Condition` (per-sample masks and/or
slice indices, batch 1 or n) or ``"validate"``: the masks and slice indices of ``n`` validate
slices spread evenly over the split, ``floor((k + u) V / n)`` for k = 0..n-1 with one offset
``u`` in [0, 1) drawn from ``seed`` (:func:`validate_conditions`). Stratified like this, every
case and level of the split is represented, and a seed fixes which slices.

:func:`condition_metrics` scores samples against what they were asked for, each with its floor
(real slices and their own conditions): ``mask_dice`` (:func:`~oasis_lib.evaluation.
faithfulness.mask_faithfulness`: the segmenter's Dice per tissue against the conditioning
masks) and ``slice_mae`` (:func:`~oasis_lib.evaluation.slice_level.slice_faithfulness`: the
slice regressor's error in slices against the requested index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.conditional import slice_indices
from ..data.layout import CLASS_LABELS, TISSUE_NAMES
from ..data.oasis import load_split
from ..models.conditioning import Condition, parse_condition
from .faithfulness import mask_faithfulness
from .sample_metrics import _entry

#: What ``condition=`` may be besides a Condition and None.
CONDITION_SOURCES = ("validate",)


@dataclass
class ValidateConditions:
    """``n`` validate slices chosen by :func:`validate_conditions`."""

    indices: Tensor  # long [n]: positions in the validate split (sorted by case, slice)
    images: Tensor  # float32 [n, 1, S, S] in [-1, 1]: the real slices (the floors)
    masks: Tensor  # long [n, S, S]
    slice_index: Tensor  # long [n]

    def condition(self, spec: str | None = "mask+slice") -> Condition:
        """The Condition of these slices with the fields ``spec`` names (read by field key)."""
        values = {"mask": self.masks, "slice_index": self.slice_index}
        fields = parse_condition(spec)
        for field in fields:
            if field.key not in values:
                raise ValueError(f"the validate slices carry no {field.noun} (condition "
                                 f"{spec!r}); pass a Condition instead of 'validate'")
        return Condition(**{f.key: values[f.key] for f in fields})


def spread_indices(n: int, total: int, seed: int) -> Tensor:
    """``floor((k + u) total / n)``, k = 0..n-1, u ~ U[0, 1) from ``seed``: n distinct,
    evenly spread positions in 0..total-1 (ValueError when n > total or n < 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n > total:
        raise ValueError(f"n={n} is larger than the validate split ({total} slices): ask for at "
                         f"most {total} samples with condition='validate', or pass a Condition")
    u = float(np.random.default_rng(seed).random())
    return torch.floor((torch.arange(n, dtype=torch.float64) + u) * total / n).long()


def validate_conditions(n: int, *, image_size: int = 64, data_root=None,
                        seed: int = 0) -> ValidateConditions:
    """The slices, masks and slice indices of ``n`` validate slices at ``image_size``, spread
    evenly over the split (:func:`spread_indices`; fixed by ``seed``)."""
    val = load_split("validate", data_root, image_size, with_masks=True, augment=False)
    idx = spread_indices(n, len(val), seed)
    images = val.images[idx].float()[:, None] / 127.5 - 1.0
    return ValidateConditions(idx, images, val.masks[idx].long(), slice_indices(val)[idx])


def resolve_condition(pipeline, condition, n: int, *, data_root=None, seed: int = 0
                      ) -> tuple[Condition | None, ValidateConditions | None]:
    """``(Condition or None, the validate slices or None)`` for ``condition`` = None, a
    Condition or ``"validate"`` (then the fields the pipeline's model takes). Clear errors for a
    condition given to an unconditional model and for an unknown source."""
    if condition is None:
        return None, None
    if isinstance(condition, str):
        if condition not in CONDITION_SOURCES:
            raise ValueError(f"unknown condition {condition!r}; choose one of "
                             f"{CONDITION_SOURCES}, a Condition, or None")
        if not pipeline.conditional:
            raise ValueError("condition='validate' needs a conditional model; this one is "
                             "unconditional (trained without --condition): drop the condition")
        chosen = validate_conditions(n, image_size=pipeline.image_shape[-1],
                                     data_root=data_root, seed=seed)
        return chosen.condition(pipeline.condition), chosen
    if not isinstance(condition, Condition):
        raise ValueError(f"condition must be None, a Condition or one of {CONDITION_SOURCES}, "
                         f"got {type(condition).__name__}")
    if not pipeline.conditional and condition.fields:
        raise ValueError("this model is unconditional (trained without --condition): it takes "
                         "no mask or slice; drop the condition")
    return pipeline.check_condition(condition, n), None


def batch_condition(condition: Condition | None, start: int, size: int) -> Condition | None:
    """The condition of samples ``start:start + size`` (a batch-1 or null one as it is)."""
    if condition is None or condition.batch_size in (None, 1):
        return condition
    return condition.select(slice(start, start + size))


def condition_metrics(samples: Tensor, condition: Condition, *, segmenter=None,
                      slice_model=None, real: ValidateConditions | None = None,
                      reference=None, data_root=None, batch_size: int = 64) -> dict:
    """Report entries ``mask_dice`` (when the condition has masks) and ``slice_mae`` (when it
    has slice indices and ``slice_model`` is given), each ``{"value", "floor", ...}``.

    Floors: the real slices ``real`` (the validate slices the condition came from) against
    their own masks / indices; without them, the whole held-out split (``reference``, a
    :class:`~oasis_lib.evaluation.reference.RealReference`, for the masks)."""
    from .slice_level import slice_faithfulness

    out: dict = {}
    n = len(samples)
    if condition.mask is not None:
        masks = condition.mask.expand(n, *condition.mask.shape[1:]).cpu()
        real_images = real.images if real is not None else (
            None if reference is None else reference.held_out)
        real_masks = real.masks if real is not None else (
            None if reference is None else reference.held_out_masks)
        f = mask_faithfulness(samples, masks, segmenter, real_images=real_images,
                              real_masks=real_masks, batch_size=batch_size)
        floor = None if f["real"] is None else f["real"]["mean"]
        out["mask_dice"] = _entry(
            f["generated"]["mean"], floor, "higher",
            "mask faithfulness: segmenter Dice of the samples against their conditioning masks "
            "(mean of CSF/grey/white); floor: real slices against their own masks",
            per_class=f["generated"], floor_per_class=f["real"], gap=f["gap"])
    if condition.slice_index is not None and slice_model is None:
        out["slice_mae"] = _entry(None, None, "lower", "slice faithfulness skipped: no slice "
                                  "regressor (train one: python -m oasis_lib "
                                  "train-slice-regressor)")
    elif condition.slice_index is not None:
        idx = condition.slice_index.expand(n).cpu()
        kw = {} if real is None else {"real_images": real.images,
                                      "real_slice_index": real.slice_index}
        s = slice_faithfulness(samples, idx, slice_model, data_root=data_root, **kw)
        out["slice_mae"] = _entry(
            s["generated"], s["real"], "lower",
            "slice faithfulness: mean |predicted - requested| slice index (slice regressor); "
            f"floor: {s['n_real']} real slices against their true index", gap=s["gap"])
    return out


def condition_lines(report: dict) -> list[str]:
    """The printed report's lines on the condition (none for an unconditional model): what the
    samples were conditioned on, then mask faithfulness per tissue and the slice MAE, each
    against its floor (:func:`~oasis_lib.evaluation.report.format_report`)."""
    meta, metrics = report["meta"], report["metrics"]
    if "model_condition" not in meta:
        return []
    guide = f"guidance s = {meta['guidance_scale']:g}, rescale {meta['guidance_rescale']:g}"
    if meta["condition"] is None:
        lines = [f"condition: none: the unconditional samples of a {meta['model_condition']} "
                 f"model ({guide})"]
    elif meta["condition"] == "validate":
        lines = [f"condition: {meta['model_condition']} of {meta['n']} validate slices spread "
                 f"over the split ({guide})"]
    else:
        lines = [f"condition: {meta['model_condition']}, given ({guide})"]
    dice = metrics.get("mask_dice")
    if dice is not None:
        got, floor = dice["per_class"], dice.get("floor_per_class") or {}
        parts = [f"{label} {got[name]:.3f}" + (f" (floor {floor[name]:.3f})" if name in floor
                                                else "")
                 for name, label in zip(TISSUE_NAMES, CLASS_LABELS[1:], strict=True)]
        lines.append("mask faithfulness, Dice against the conditioning masks: " + ", ".join(parts)
                     + (f"; mean shortfall from the floor {dice['gap']['mean']:.3f}"
                        if dice.get("gap") else ""))
    mae = metrics.get("slice_mae")
    if mae is not None and mae["value"] is None:
        lines.append(mae["explanation"])
    elif mae is not None:
        lines.append(f"slice MAE: {mae['value']:.2f} slices from the requested level (floor "
                     f"{mae['floor']:.2f}: real slices from their own; excess over the floor "
                     f"{mae['gap']:.2f})")
    return lines


__all__ = ["CONDITION_SOURCES", "ValidateConditions", "batch_condition", "condition_lines",
           "condition_metrics", "resolve_condition", "spread_indices", "validate_conditions"]
