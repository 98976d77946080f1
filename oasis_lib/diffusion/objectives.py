"""What the network predicts and how it is trained.

The network sees ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps`` (Ho et al. 2020 eq. 4)
and predicts one of three equivalent quantities (``PREDICTION_TYPES``):

- ``"eps"``: the noise (Ho et al. 2020, the "simple" loss of eq. 14);
- ``"x0"``: the clean image;
- ``"v"``: v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022, sec. 4).
  Use it with ``NoiseSchedule(zero_terminal_snr=True)`` (Lin et al. 2024).

Given x_t, any one of (x0, eps, v) determines the other two; the conversions below are exact.
Timesteps are 0-based long tensors [B] (see :mod:`oasis_lib.schedule`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .schedule import NoiseSchedule

PREDICTION_TYPES = ("eps", "x0", "v")
LOSS_TYPES = ("mse", "l1")

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


# --------------------------------------------------------------------------- loss
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


def diffusion_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    prediction_type: str = "eps",
    loss_type: str = "mse",
    min_snr_gamma: float | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The DDPM training loss (Ho et al. 2020 Algorithm 1 / eq. 14), as a scalar tensor.

    Args:
        model: called as ``model(x_t, t)``.
        schedule (NoiseSchedule): the forward process.
        x0 (Tensor [B, C, H, W]): clean images in [-1, 1].
        prediction_type (str, default ``"eps"``): one of ``PREDICTION_TYPES``.
        loss_type (str, default ``"mse"``): one of ``LOSS_TYPES`` (``"l1"`` is the seed's loss).
        min_snr_gamma (float or None, default None): if set, weight each sample by
            :func:`min_snr_weight` (Hang et al. 2023; gamma = 5 in the paper).
        t (long Tensor [B] or None): timesteps; drawn uniformly in [0, T) when None.
        noise (Tensor like x0 or None): drawn from N(0, I) when None.
        generator (torch.Generator or None): CPU generator for the draws. Order: t first
            (``torch.randint``), then noise (``torch.randn``, float32); both on the CPU, then moved
            to x0's device, so a seed gives the same loss on every device.

    The per-element loss is averaged over each sample, weighted, then averaged over the batch.
    """
    check_prediction_type(prediction_type)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.T, (b,), generator=generator)
    t = t.to(device=x0.device, dtype=torch.long)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(device=x0.device, dtype=x0.dtype)

    x_t = schedule.q_sample(x0, t, noise)
    output = model(x_t, t)
    target = training_target(schedule, x0, noise, t, prediction_type)
    loss_fn = F.mse_loss if loss_type == "mse" else F.l1_loss
    per_sample = loss_fn(output, target, reduction="none").reshape(b, -1).mean(dim=1)
    if min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weight(schedule, t, min_snr_gamma, prediction_type).to(
            per_sample.dtype
        )
    return per_sample.mean()


def validation_draws(
    schedule: NoiseSchedule, shape: tuple[int, ...], *, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Fixed (t, noise) for a validation batch of ``shape``: t evenly spread over [0, T) (so each
    batch covers low and high noise levels alike) and noise from a CPU generator seeded ``seed``.
    Re-create them with the same seed every epoch (e.g. seed = batch index)."""
    b = shape[0]
    t = torch.div(torch.arange(b) * schedule.T + schedule.T // 2, b, rounding_mode="floor")
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return t.clamp(max=schedule.T - 1).long(), noise


def validation_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    t: Tensor,
    noise: Tensor,
    prediction_type: str = "eps",
    loss_type: str = "mse",
    min_snr_gamma: float | None = None,
) -> Tensor:
    """:func:`diffusion_loss` with fixed ``t`` and ``noise`` (e.g. from :func:`validation_draws`)
    and no gradient, so the number is comparable between epochs. Does not change the model's
    train/eval mode; the caller puts it in eval mode."""
    with torch.no_grad():
        return diffusion_loss(model, schedule, x0, prediction_type=prediction_type,
                              loss_type=loss_type, min_snr_gamma=min_snr_gamma, t=t, noise=noise)
