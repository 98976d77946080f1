"""Experiment exercise of notebook 09: does guidance make the samples obey their mask?

The reader changes one setting, the classifier-free guidance scale s (s = 1 + w, Ho & Salimans
2022 eq. 6), samples a few slices under one validate mask at s = 0 (the unconditional model)
and at s = 2, segments them with the tissue segmenter and compares the mean Dice against the
conditioning mask. :func:`check_guidance_dice` tests the *direction* of the effect (the Dice at
s = 2 is higher than at s = 0), not a number: a few samples on a shared CPU vary, the sign of
a 0.4-sized gap does not. :func:`guidance_dice_experiment` is the reference run that
``exercises.reveal`` shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...evaluation.reference import segment
from ...evaluation.tissue import dice_per_class

__all__ = ["ExperimentResult", "check_guidance_dice", "guidance_dice_experiment"]

#: the two scales the exercise compares: the unconditional model and the guided one
SCALES = (0.0, 2.0)


@dataclass(frozen=True)
class ExperimentResult:
    """What the checker found: ``passed``, the measured ``values`` and the printed message."""

    name: str
    passed: bool
    values: dict
    message: str

    def __bool__(self) -> bool:
        return self.passed


def guidance_dice_experiment(pipe, condition, segmenter, *, scales=SCALES, n: int = 2,
                             steps: int = 10, seed: int = 0) -> dict[float, float]:
    """Reference run: for each guidance scale s, ``n`` DDIM samples (``steps`` steps) from the
    same noise under ``condition`` (a batch of 1 with a mask), segmented; returns
    ``{s: mean Dice of CSF, grey and white matter against the mask}`` (pixels pooled)."""
    mask = condition.mask[0]
    out = {}
    for s in scales:
        images = pipe.sample(n, sampler="ddim", steps=steps, condition=condition,
                             guidance_scale=s, generator=torch.Generator().manual_seed(seed),
                             progress=False)
        predicted = segment(segmenter, images.cpu())["masks"]        # [n, H, W]
        dice = dice_per_class(predicted, mask.expand_as(predicted))  # [4], background first
        out[float(s)] = float(dice[1:].mean())
    return out


def check_guidance_dice(fn: Callable, pipe, condition, segmenter, *,
                        quiet: bool = False) -> ExperimentResult:
    """Run the reader's ``fn(pipe, condition, segmenter) -> {scale: mean Dice}`` and check the
    direction: both scales of ``SCALES`` measured, and the Dice at s = 2 above the Dice at s = 0.
    """
    name = "guidance_dice"
    try:
        values = fn(pipe, condition, segmenter)
    except NotImplementedError:
        return _report(name, False, {}, f"{name}: not implemented yet (the function raised "
                       "NotImplementedError); task: fn(pipe, condition, segmenter) -> "
                       "{scale: mean Dice} for s = 0 and s = 2", quiet)
    except Exception as err:  # noqa: BLE001 - the reader's code may raise anything
        return _report(name, False, {}, f"{name}: FAILED: raised {type(err).__name__}: {err}",
                       quiet)
    if not isinstance(values, dict) or not all(s in values for s in SCALES):
        return _report(name, False, {}, f"{name}: FAILED: expected a dict with the scales "
                       f"{SCALES} as keys, got {values!r}", quiet)
    lo, hi = (float(values[s]) for s in SCALES)
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (lo, hi)):
        return _report(name, False, values, f"{name}: FAILED: a Dice is between 0 and 1, got "
                       f"{lo!r} and {hi!r}", quiet)
    if hi <= lo:
        return _report(name, False, values, f"{name}: FAILED: the Dice at s = {SCALES[1]:g} "
                       f"({hi:.2f}) is not above the one at s = {SCALES[0]:g} ({lo:.2f}); are "
                       "the samples conditioned on the mask?", quiet)
    return _report(name, True, values, f"{name}: passed, the Dice rises with guidance: "
                   f"{lo:.2f} at s = {SCALES[0]:g}, {hi:.2f} at s = {SCALES[1]:g}", quiet)


def _report(name: str, passed: bool, values: dict, message: str,
            quiet: bool) -> ExperimentResult:
    if not quiet:
        print(message)
    return ExperimentResult(name, passed, values, message)
