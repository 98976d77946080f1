"""What the network predicts under the VP process: eps, x0 or v, and the exact conversions.

The network sees ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps`` (Ho et al. 2020 eq. 4)
and predicts one of three equivalent quantities (``PREDICTION_TYPES``):

- ``"eps"``: the noise (Ho et al. 2020, the "simple" loss of eq. 14);
- ``"x0"``: the clean image;
- ``"v"``: v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022, sec. 4).
  Use it with ``NoiseSchedule(zero_terminal_snr=True)`` (Lin et al. 2024).

Given x_t, any one of (x0, eps, v) determines the other two; the conversions below are exact.
Timesteps are 0-based long tensors [B] (see :mod:`oasis_lib.diffusion.schedule`). These are the
maths of :class:`~oasis_lib.diffusion.processes.vp.VPProcess`; the samplers' steps call them
directly, and :mod:`oasis_lib.diffusion.objectives` (the training loss) re-exports them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedule import NoiseSchedule

PREDICTION_TYPES = ("eps", "x0", "v")

#: Floor for sqrt(alpha_bar) when dividing by it (x0 from eps). Only a zero-terminal-SNR schedule
#: reaches it (alpha_bar_T = 0, where x0 cannot be recovered from eps); the cosine schedule's
#: smallest value, 4.9e-5 at T=1000, is far above it, so the conversion stays exact there.
MIN_SQRT_ALPHA_BAR = 1e-8


def check_prediction_type(prediction_type: str) -> None:
    """Raise ValueError unless ``prediction_type`` is one of ``PREDICTION_TYPES``."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}"
        )


def _coefs(schedule: NoiseSchedule, t: Tensor | int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) shaped to broadcast against x."""
    return (schedule.gather("sqrt_alpha_bar", t, x),
            schedule.gather("sqrt_one_minus_alpha_bar", t, x))


# --------------------------------------------------------------------------- conversions
def predict_x0_from_eps(
    schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, eps: Tensor
) -> Tensor:
    """Invert eq. 4 of Ho et al.: x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).

    Ill-posed where alpha_bar_t = 0 (zero terminal SNR): the divisor is clamped at
    ``MIN_SQRT_ALPHA_BAR`` so the result stays finite (then clip it, or better use v-prediction).
    """
    a, s = _coefs(schedule, t, x_t)
    return (x_t - s * eps) / a.clamp(min=MIN_SQRT_ALPHA_BAR)


def predict_eps_from_x0(
    schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, x0: Tensor
) -> Tensor:
    """Invert eq. 4 for the noise: eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t)."""
    a, s = _coefs(schedule, t, x_t)
    return (x_t - a * x0) / s


def v_target(schedule: NoiseSchedule, x0: Tensor, eps: Tensor, t: Tensor | int) -> Tensor:
    """Salimans & Ho 2022 (sec. 4): v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0."""
    a, s = _coefs(schedule, t, x0)
    return a * eps - s * x0


def predict_x0_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, v: Tensor) -> Tensor:
    """x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v (Salimans & Ho 2022, sec. 4)."""
    a, s = _coefs(schedule, t, x_t)
    return a * x_t - s * v


def predict_eps_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, v: Tensor) -> Tensor:
    """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v (from eq. 4 and the v definition)."""
    a, s = _coefs(schedule, t, x_t)
    return s * x_t + a * v


def model_output_to_x0_eps(
    schedule: NoiseSchedule, output: Tensor, x_t: Tensor, t: Tensor | int, prediction_type: str
) -> tuple[Tensor, Tensor]:
    """Turn a network output of type ``prediction_type`` into the pair (x0, eps)."""
    check_prediction_type(prediction_type)
    if prediction_type == "eps":
        return predict_x0_from_eps(schedule, x_t, t, output), output
    if prediction_type == "x0":
        return output, predict_eps_from_x0(schedule, x_t, t, output)
    return predict_x0_from_v(schedule, x_t, t, output), predict_eps_from_v(schedule, x_t, t, output)


def training_target(
    schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Tensor | int, prediction_type: str
) -> Tensor:
    """What the network should output for x_t = q_sample(x0, t, noise)."""
    check_prediction_type(prediction_type)
    if prediction_type == "eps":
        return noise
    if prediction_type == "x0":
        return x0
    return v_target(schedule, x0, noise, t)


# --------------------------------------------------------------------------- weighting
def min_snr_weight(
    schedule: NoiseSchedule, t: Tensor, gamma: float, prediction_type: str
) -> Tensor:
    """Min-SNR-gamma loss weight per sample, shape [B] (Hang et al. 2023, "Efficient Diffusion
    Training via Min-SNR Weighting Strategy").

    The x0-space weight min(SNR_t, gamma) expressed for each target: ``x0``: min(snr, gamma);
    ``eps``: min(snr, gamma) / snr, computed as min(gamma / snr, 1) so snr = 0 gives 1, not NaN;
    ``v``: min(snr, gamma) / (snr + 1).
    """
    check_prediction_type(prediction_type)
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma!r}")
    snr = schedule.f64("snr")[t.long().cpu()]
    if prediction_type == "eps":
        w = (gamma / snr).clamp(max=1.0)
    elif prediction_type == "x0":
        w = snr.clamp(max=gamma)
    else:
        w = snr.clamp(max=gamma) / (snr + 1.0)
    return w.to(torch.float32).to(t.device)


def x0_to_output(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor | int,
                 prediction_type: str) -> Tensor:
    """The network output of type ``prediction_type`` that corresponds to ``x0`` at (x_t, t):
    the inverse of :func:`model_output_to_x0_eps` (eps from eq. 4 of Ho et al., then v)."""
    check_prediction_type(prediction_type)
    if prediction_type == "x0":
        return x0
    eps = predict_eps_from_x0(schedule, x_t, t, x0)
    return eps if prediction_type == "eps" else v_target(schedule, x0, eps, t)
