"""Editing a real image with a trained model: SDEdit and DDIM inversion.

**SDEdit** (Meng et al. 2022, "SDEdit: Guided image synthesis and editing with stochastic
differential equations", sec. 3). Noise the image x to an intermediate level
t0 with the forward process (Ho et al. 2020 eq. 4),

    x_{t0} = sqrt(ab_{t0}) x + sqrt(1 - ab_{t0}) z,   z ~ N(0, I),

then run the reverse chain from t0 down to the data. Small t0 keeps the image (few details are
redrawn); large t0 keeps only its coarse layout; t0 = 1 (all T steps) forgets it. The model
may be conditional: the chain then redraws the image towards its condition (e.g. an edited
mask). Here t0 is the fraction of the T steps, as in the paper (t0 in [0, 1]); the chain
starts at timestep h0 = round(t0 T) - 1 (h0 = -1 is the data itself: t0 = 0 returns the
input) and runs ``steps`` DDIM steps (Song et al. 2021 eq. 12; ``eta`` = 1 is the ancestral,
stochastic chain of SDEdit's reverse SDE, eta = 0 the deterministic one) with trailing
spacing over 0..h0.

**DDIM inversion** (Song et al. 2021 sec. 4.3 and eq. 12 run forward; see also Dhariwal & Nichol
2021 and Mokady et al. 2023). With eta = 0 a DDIM step is deterministic,
x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev) eps_hat, so it can be run the other way:
from the clean image up to x_T,

    x_next = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps_hat,
    x0_hat = (x - sqrt(1 - ab) eps_hat) / sqrt(ab),

on the timesteps of the decoder in reverse order (-1, then the decoder's steps from the last
to t = T-1). The exact inverse would need eps_hat at x_next, which is not known yet; as in
diffusers' ``DDIMInverseScheduler`` and Mokady et al., the network is evaluated on the current
x at the *next* timestep, an approximation whose error shrinks with the step size. Decoding
x_T with the same DDIM steps (eta = 0, no clipping) gives the image back up to that error.
No clipping of x0 anywhere in the round trip: a clip is not invertible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .objectives import check_prediction_type
from .sampling import _eval_mode, _model_device, _x0_eps, ddim_step, sampling_timesteps
from .schedule import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]


def sdedit_start_timestep(T: int, t0: float) -> int:
    """The timestep h0 = round(t0 T) - 1 where SDEdit's chain starts (-1: the data)."""
    if not 0.0 <= t0 <= 1.0:
        raise ValueError(f"t0 must be a fraction of the T steps in [0, 1], got {t0!r}")
    return int(round(t0 * T)) - 1


def sdedit_noise(schedule: NoiseSchedule, image: Tensor, t0: float, noise: Tensor) -> Tensor:
    """x_{t0} of SDEdit: ``image`` noised to h0 with Ho et al. eq. 4 (the image at t0 = 0)."""
    h0 = sdedit_start_timestep(schedule.T, t0)
    if h0 < 0:
        return image.clone()
    t = torch.full((len(image),), h0, dtype=torch.long, device=image.device)
    return schedule.q_sample(image, t, noise.to(image.device, image.dtype))


def sdedit(
    model: Denoiser,
    schedule: NoiseSchedule,
    image: Tensor,
    t0: float,
    *,
    steps: int = 20,
    eta: float = 1.0,
    prediction_type: str = "eps",
    clip_x0: bool | Callable[[Tensor], Tensor] = True,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """SDEdit (Meng et al. 2022, sec. 3) of ``image`` [B, C, H, W] in [-1, 1] from ``t0``.

    Args:
        model: ``model(x_t, t)``, e.g. ``pipe.denoiser(condition=...)`` of a conditional model.
        schedule (NoiseSchedule): the model's schedule.
        t0 (float): the starting level as a fraction of T, in [0, 1] (module docstring).
        steps (int, default 20): DDIM steps from h0 down to the data (capped at h0 + 1).
        eta (float, default 1): DDIM's eta; 1 = ancestral (SDEdit's stochastic chain).
        prediction_type (str), clip_x0: as in :func:`~oasis_lib.diffusion.sampling.sample`.
        generator: CPU generator; draws ``noise`` first (unless given), then one noise per
            stochastic step, as the samplers do.
        noise (Tensor or None): the z of the start x_{t0}; drawn when None.

    Returns:
        The edited images (the input itself at t0 = 0, where no step is run).
    """
    check_prediction_type(prediction_type)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    h0 = sdedit_start_timestep(schedule.T, t0)
    if h0 < 0:
        return image.clone()
    device = _model_device(model)
    image = image.to(device)

    def randn() -> Tensor:
        z = torch.randn(tuple(image.shape), generator=generator, dtype=torch.float32)
        return z.to(device=device, dtype=image.dtype)

    x = sdedit_noise(schedule, image, t0, randn() if noise is None else noise)
    ts = sampling_timesteps(h0 + 1, min(int(steps), h0 + 1))  # h0 first, trailing spacing
    with _eval_mode(model), torch.inference_mode():
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            t_batch = torch.full((len(x),), t, device=device, dtype=torch.long)
            z = randn() if eta > 0 and t_prev >= 0 else None
            x, _ = ddim_step(model(x, t_batch), x, t, t_prev, schedule, eta=eta, noise=z,
                             prediction_type=prediction_type, clip_x0=clip_x0)
    return x.clone()


def ddim_invert(
    model: Denoiser,
    schedule: NoiseSchedule,
    image: Tensor,
    *,
    steps: int = 50,
    prediction_type: str = "eps",
    spacing: str = "trailing",
) -> Tensor:
    """DDIM inversion (module docstring): the x_T that the ``steps``-step DDIM decoder
    (eta = 0, same ``spacing``) maps back to ``image``, up to the approximation error.

    Decode with ``sample(model, schedule, shape, sampler="ddim", steps=steps, x_T=x_T,
    clip_x0=False, prediction_type=...)`` (or ``pipe.sample(..., x_T=x_T, clip_x0=False)``).
    """
    check_prediction_type(prediction_type)
    ts = [-1, *reversed(sampling_timesteps(schedule.T, steps, spacing, schedule=schedule))]
    device = _model_device(model)
    x = image.to(device)
    with _eval_mode(model), torch.inference_mode():
        for t, t_next in zip(ts[:-1], ts[1:], strict=True):
            t_batch = torch.full((len(x),), t_next, device=device, dtype=torch.long)
            out = model(x, t_batch)  # evaluated at the next timestep (module docstring)
            _, eps = _x0_eps(schedule, out, x, t_batch, prediction_type, False)
            x = ddim_invert_step(eps, x, t, t_next, schedule)
    return x.clone()


def ddim_invert_step(eps: Tensor, x: Tensor, t: int, t_next: int,
                     schedule: NoiseSchedule) -> Tensor:
    """One DDIM step run forward, from t to t_next > t (Song et al. 2021 eq. 12, eta = 0; ab is
    alpha_bar, 1 at t = -1, the clean image):

    x0 = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t),   x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next) eps.
    """
    if not t_next > t:
        raise ValueError(f"an inversion step goes up: t_next must be > t, got {t} -> {t_next}")
    ab, ab_next = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_next)
    x0 = (x - (1.0 - ab) ** 0.5 * eps) / ab**0.5
    return ab_next**0.5 * x0 + (1.0 - ab_next) ** 0.5 * eps
