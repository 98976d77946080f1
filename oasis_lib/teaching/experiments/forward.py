"""Experiment exercise of notebook 02: when does a slice drown in the noise?

Over the pixels of one slice, ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` has the
signal-to-noise ratio ``SNR_t = ab_t sigma0^2 / (1 - ab_t)``, where ``sigma0^2`` is the pixel
variance of ``x0`` and the noise has unit variance (notebook 02, section 2). It falls below 1
where ``ab_t < 1 / (1 + sigma0^2)``: the smaller the slice's variance, the earlier.

The experiment measures that step from a noisy sample instead of the formula. With ``R`` the
correlation of ``x_t`` and ``x0`` over the pixels, ``R^2 / (1 - R^2)`` estimates ``SNR_t``
(``R^2`` is the share of ``x_t``'s variance that ``x0`` explains). The reader changes one
setting, the slice's pixel variance (rescaled to 1), and the checker tests the direction of the
effect: a unit-variance slice crosses SNR = 1 later.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...diffusion.schedule import NoiseSchedule

__all__ = ["check_snr_crossing", "measured_snr", "predicted_crossing", "snr_crossing",
           "unit_variance"]


def measured_snr(x0: Tensor, schedule: NoiseSchedule, noise: Tensor) -> Tensor:
    """``R^2 / (1 - R^2)`` at every step ``t`` (float64 ``[T]``), where ``R`` is the pixel
    correlation of ``x0`` and ``x_t = q_sample(x0, t, noise)`` (Ho et al. 2020, eq. 4)."""
    a = x0.double().flatten()
    a = a - a.mean()
    e = noise.double().flatten()
    x_t = schedule.sqrt_alpha_bar.double()[:, None] * a + \
        schedule.sqrt_one_minus_alpha_bar.double()[:, None] * e  # [T, pixels], all t at once
    x_t = x_t - x_t.mean(dim=1, keepdim=True)
    r2 = (x_t @ a) ** 2 / (x_t.pow(2).sum(1) * a.pow(2).sum())
    return r2 / (1 - r2)


def snr_crossing(x0: Tensor, schedule: NoiseSchedule, *, seed: int = 0) -> int:
    """The first 0-based step at which the measured SNR of ``x_t`` is below 1 (``T`` if never),
    with one noise image drawn from ``seed``."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    below = (measured_snr(x0, schedule, noise) < 1).nonzero()
    return int(below[0]) if len(below) else schedule.T


def predicted_crossing(schedule: NoiseSchedule, variance: float) -> int:
    """The first step at which ``ab_t variance / (1 - ab_t) < 1``, from the formula."""
    ab = schedule.alpha_bar.double()
    below = (ab * variance / (1 - ab) < 1).nonzero()
    return int(below[0]) if len(below) else schedule.T


def unit_variance(x0: Tensor) -> Tensor:
    """The reference change of setting: the slice rescaled to zero mean and unit pixel variance."""
    return (x0 - x0.mean()) / x0.std()


def check_snr_crossing(fn: Callable[[Tensor], Tensor], x0: Tensor, schedule: NoiseSchedule,
                       *, quiet: bool = False) -> bool:
    """Run the experiment on ``x0`` and on ``fn(x0)`` (the reader's change of setting) and print
    the measured and predicted crossing steps. Passes when ``fn(x0)`` has unit pixel variance
    (within 2%) and crosses SNR = 1 later than ``x0``."""
    try:
        changed = fn(x0.clone())
    except NotImplementedError:
        if not quiet:
            print("snr_crossing: not implemented yet (the function raised NotImplementedError); "
                  "task: fn(x0) -> x0 rescaled to unit pixel variance")
        return False
    rows = []
    for name, x in (("the slice", x0), ("your change", changed)):
        var = float(x.double().var())
        rows.append((name, var, snr_crossing(x, schedule), predicted_crossing(schedule, var)))
    unit = abs(rows[1][1] - 1) < 0.02
    later = rows[1][2] > rows[0][2]
    passed = unit and later
    if not quiet:
        for name, var, measured, predicted in rows:
            print(f"{name:<12} pixel variance {var:.2f}: SNR < 1 from t = {measured} "
                  f"(formula: {predicted})")
        if passed:
            print("snr_crossing: passed, the unit-variance slice crosses SNR = 1 later")
        elif not unit:
            print(f"snr_crossing: not yet, your change has pixel variance {rows[1][1]:.2f}, not 1")
        else:
            print("snr_crossing: not yet, your change does not cross SNR = 1 later")
    return passed
