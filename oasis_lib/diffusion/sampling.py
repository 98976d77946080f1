"""Reverse process: generate images from noise with a trained network.

One entry point, :func:`sample`, with these samplers (``SAMPLERS``):

- ``"ddpm"``: ancestral sampling over all T steps (Ho et al. 2020 Algorithm 2 / eq. 11, written in
  the posterior form of Nichol & Dhariwal 2021 eqs. 10-12): predict x0, clip it, take the mean of
  q(x_{t-1} | x_t, x0) (eq. 7), add noise of variance beta_t or beta tilde_t.
- ``"ddim"``: Song et al. 2021 eq. 12 with sigma from eq. 16 (``eta`` = 0 deterministic, 1 = DDPM),
  on any subsequence of timesteps.
- ``"dpm++2m"``: DPM-Solver++(2M), Lu et al. 2022 Algorithm 2, a second-order multistep solver of
  the probability-flow ODE in data (x0) prediction; deterministic.
- ``"dpm++2m-sde"``, ``"dpm++3m"``, ``"unipc"``: the multistep solvers of
  :mod:`oasis_lib.diffusion.multistep` (DPM-Solver++(2M) SDE, stochastic; DPM-Solver++(3M);
  UniPC, Zhao et al. 2023).

Timesteps (``steps < T``): ``"trailing"`` spacing by default (Lin et al. 2024, "sample from the
last timestep"): the first step is always t = T-1, e.g. T=1000, steps=10 -> 999, 899, ..., 99;
``"leading"`` (diffusers' DDIM default) gives 900, 800, ..., 0 and never starts from t = T-1,
although x_T is drawn from pure noise; ``"karras"``: Karras et al. 2022 eq. 5 sigmas mapped to
the nearest timesteps (:func:`~oasis_lib.diffusion.multistep.karras_timesteps`). Every sampler's
last step goes to the clean data, t = -1 (alpha_bar = 1), so the final image is the last x0
prediction for ddim/dpm++ (and the t=0 posterior mean, which is the same thing, for ddpm).

Clipping: the predicted x0 is clipped to [-1, 1] when ``clip_x0`` (never x_t), and eps is then
recomputed from the clipped x0 (diffusers' DDIM ``use_clipped_model_output=True``), so x0 and eps
stay consistent with x_t; that also makes DDIM(eta=1, all T steps) equal DDPM exactly.

Random draws: x_T first (unless given), then one draw per stochastic step (ddpm: every t > 0;
ddim with eta > 0 and dpm++2m-sde: every step except the last), each
``torch.randn(shape, generator=generator, dtype=torch.float32)`` on the CPU, then moved to the
device and dtype. Same seed -> same draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .multistep import MULTISTEP_SAMPLERS, MultistepSolver, karras_timesteps
from .objectives import check_prediction_type, model_output_to_x0_eps, predict_eps_from_x0
from .schedule import NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "dpm++2m", *MULTISTEP_SAMPLERS)
DDPM_VARIANCES = ("beta", "posterior")
SPACINGS = ("trailing", "leading", "karras")
#: Number of steps used by ddim and dpm++2m when ``steps=None`` (capped at T).
DEFAULT_FAST_STEPS = 50


@dataclass
class SampleResult:
    """The chain of a sampling run (``return_intermediates=True``).

    Record k < K-1 is step ``k * every`` of the loop: ``xs[k]`` is the x_t fed to the network at
    timestep ``timesteps[k]`` and ``x0s[k]`` its (clipped) x0 prediction; ``xs[0]`` is x_T. The last
    record, k = K-1, is the result: ``xs[-1] = x0s[-1] = images`` and ``timesteps[-1] = -1``.
    ``xs``/``x0s`` are CPU float32 [K, B, C, H, W]; ``timesteps`` long [K]; ``images`` [B, C, H, W]
    on the sampling device; ``nfe`` the number of network calls.
    """

    images: Tensor
    xs: Tensor
    x0s: Tensor
    timesteps: Tensor
    nfe: int


def sampling_timesteps(T: int, steps: int, spacing: str = "trailing", *,
                       schedule: NoiseSchedule | None = None) -> list[int]:
    """Descending 0-based timesteps for a ``steps``-step sampler (see the module docstring).

    trailing: t_i = round(T (steps - i) / steps) - 1; leading: t_i = (steps - 1 - i) * (T // steps);
    karras: EDM eq. 5 sigmas mapped to the nearest timesteps of ``schedule`` (needed), see
    :func:`oasis_lib.diffusion.multistep.karras_timesteps`.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    if spacing == "karras":
        if schedule is None or schedule.T != T:
            raise ValueError(f"spacing='karras' needs the schedule (schedule=...) with T = {T}")
        return karras_timesteps(schedule, steps)
    if int(steps) != steps or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, T={T}], got {steps!r}")
    if spacing == "trailing":  # round half up, in integers
        return [(2 * T * (steps - i) + steps) // (2 * steps) - 1 for i in range(steps)]
    return [(steps - 1 - i) * (T // steps) for i in range(steps)]


def _x0_eps(schedule, output, x_t, t, prediction_type, clip_x0) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a network output; clip x0 (or apply a callable ``clip_x0``), then eps."""
    x0, eps = model_output_to_x0_eps(schedule, output, x_t, t, prediction_type)
    if clip_x0:
        x0 = clip_x0(x0) if callable(clip_x0) else x0.clamp(-1.0, 1.0)
        eps = predict_eps_from_x0(schedule, x_t, t, x0)
    return x0, eps


# --------------------------------------------------------------------------- single steps
def p_mean_variance(
    model_output: Tensor, x_t: Tensor, t: Tensor | int, schedule: NoiseSchedule,
    prediction_type: str = "eps", clip_x0: bool = True, *, variance: str = "posterior",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """p(x_{t-1} | x_t) of DDPM: returns ``(mean, variance, log_variance, x0)``.

    mean = posterior mean of q(x_{t-1} | x_t, x0_hat) (eq. 7 of Ho et al.) with the predicted x0
    (clipped to [-1, 1] if ``clip_x0``); for eps-prediction and no clipping this is eq. 11.
    variance: ``"beta"`` (sigma_t^2 = beta_t) or ``"posterior"`` (beta tilde_t, eq. 7), the two
    choices of Ho et al. sec. 3.2.
    """
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown ddpm_variance {variance!r}; choose one of {DDPM_VARIANCES}")
    x0, _ = _x0_eps(schedule, model_output, x_t, t, prediction_type, clip_x0)
    mean, var, log_var = schedule.q_posterior(x0, x_t, t)
    if variance == "beta":
        var = schedule.gather("betas", t, x_t)
        log_var = var.log()
    return mean, var, log_var, x0


def p_sample(
    model_output: Tensor, x_t: Tensor, t: int, schedule: NoiseSchedule, *,
    noise: Tensor | None, prediction_type: str = "eps", clip_x0: bool = True,
    variance: str = "posterior",
) -> tuple[Tensor, Tensor]:
    """One DDPM step (Ho et al. Algorithm 2, line 4): x_{t-1} = mean + sigma_t z, no noise at
    t = 0 (``noise`` may be None there). Returns ``(x_prev, x0_pred)``."""
    mean, var, _, x0 = p_mean_variance(model_output, x_t, t, schedule, prediction_type, clip_x0,
                                       variance=variance)
    if t == 0:
        return mean, x0
    return mean + var.sqrt() * noise, x0


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """Song et al. 2021 eq. 16:
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev)."""
    ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
    return eta * ((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)) ** 0.5


def ddim_step(
    model_output: Tensor, x_t: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, *,
    eta: float = 0.0, noise: Tensor | None = None, prediction_type: str = "eps",
    clip_x0: bool = True,
) -> tuple[Tensor, Tensor]:
    """One DDIM step from t to t_prev < t (t_prev = -1: clean data), Song et al. 2021 eq. 12
    (their alpha_t is our alpha_bar_t, written ab here):

    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z,  sigma from eq. 16.
    ``noise`` is needed only when sigma > 0. Returns ``(x_prev, x0_pred)``.
    """
    x0, eps = _x0_eps(schedule, model_output, x_t, t, prediction_type, clip_x0)
    ab_prev = schedule.alpha_bar_at(t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x_prev = ab_prev**0.5 * x0 + max(1.0 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError(f"ddim_step with eta={eta} needs noise (sigma = {sigma:.3g} > 0)")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def dpmpp_2m_step(
    x_t: Tensor, x0: Tensor, x0_last: Tensor | None, t: int, t_prev: int, t_last: int | None,
    schedule: NoiseSchedule,
) -> Tensor:
    """One DPM-Solver++(2M) step from t to t_prev (Lu et al. 2022, Algorithm 2).

    alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda_prev - lambda_t.
    ``x0`` is the data prediction at t, ``x0_last`` the one at the previous (larger) step t_last.

    x_prev = (sigma_prev / sigma_t) x_t - alpha_prev (e^{-h} - 1) D, where D = x0 (first order,
    = DDIM) or D = (1 + 1/(2r)) x0 - 1/(2r) x0_last with r = h_last / h (second order).
    alpha_prev (1 - e^{-h}) is written alpha_prev - sigma_prev alpha_t / sigma_t, which stays
    finite at alpha_t = 0 (zero terminal SNR, lambda = -inf). First order is used when there is
    no previous prediction, when lambda_last = -inf (r = inf, the limit is first order) and at the
    final step to clean data (sigma_prev = 0, lambda = +inf): the paper's lower-order final step.
    """
    ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
    alpha, sigma = ab**0.5, (1.0 - ab) ** 0.5
    alpha_prev, sigma_prev = ab_prev**0.5, (1.0 - ab_prev) ** 0.5
    d = x0
    if x0_last is not None and t_last is not None and ab > 0 and sigma_prev > 0:
        ab_last = schedule.alpha_bar_at(t_last)
        if ab_last > 0:
            lam = schedule._f64["log_snr"] / 2  # lambda = log(alpha / sigma) = log_snr / 2
            h = float(lam[t_prev] - lam[t])
            r = float(lam[t] - lam[t_last]) / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_last
    return (sigma_prev / sigma) * x_t + (alpha_prev - sigma_prev * alpha / sigma) * d


# --------------------------------------------------------------------------- the loop
@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's previous mode, also on exceptions."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    for m, _ in modes:
        m.train(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _model_device(model) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


def sample(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    prediction_type: str = "eps",
    ddpm_variance: str = "posterior",
    clip_x0: bool = True,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    x_T: Tensor | None = None,
    return_intermediates: bool = False,
    every: int = 1,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor | SampleResult:
    """Generate ``shape`` = [B, C, H, W] images by running the reverse process.

    Args:
        model: the network, called as ``model(x_t, t)`` with t a long tensor [B] on ``device``.
            It is put in eval mode during sampling (each submodule's mode restored afterwards,
            also on error) and run under ``torch.inference_mode()``. It is not moved.
        schedule (NoiseSchedule): the schedule the model was trained with.
        sampler (str, default ``"ddim"``): one of ``SAMPLERS``.
        steps (int or None): network calls. ddpm: must be None or T. The others: any number
            in [1, T]; None means min(T, 50).
        eta (float, default 0): DDIM stochasticity in [0, 1]; must stay 0 for other samplers.
        prediction_type (str, default ``"eps"``): what the model outputs (``PREDICTION_TYPES``).
        ddpm_variance (str, default ``"posterior"``): ``"posterior"`` (beta tilde) or ``"beta"``.
        clip_x0 (bool or callable, default True): clip the predicted x0 to [-1, 1] (never
            x_t); a callable ``x0 -> x0`` is applied instead (e.g. dynamic thresholding,
            :class:`~oasis_lib.diffusion.guidance.DynamicThreshold`).
        spacing (str, default ``"trailing"``): timestep spacing for steps < T (``SPACINGS``).
        generator (torch.Generator or None): CPU generator for all draws (order in module doc).
        device: where to run; default the device of the model's first parameter (else CPU).
        x_T (Tensor or None): starting noise of ``shape``; drawn from N(0, I) when None.
        return_intermediates (bool): return a :class:`SampleResult` instead of the images.
        every (int, default 1): record every ``every``-th step in the SampleResult (memory:
            2 K B C H W float32 values on the CPU, so use e.g. every=T//10 for long runs).
        progress (bool, default True): show a tqdm progress bar.
        dtype (torch.dtype, default float32): working dtype (float64 for exactness tests).

    Returns:
        The images [B, C, H, W] (in [-1, 1] when clip_x0) on ``device``, or a SampleResult.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    check_prediction_type(prediction_type)
    if ddpm_variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown ddpm_variance {ddpm_variance!r}; choose one of {DDPM_VARIANCES}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta only applies to sampler='ddim', not {sampler!r}")
    if int(every) != every or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    T = schedule.T
    if sampler == "ddpm":
        if steps is not None and steps != T:
            raise ValueError(f"sampler 'ddpm' uses all T={T} steps; got steps={steps} "
                             "(use 'ddim' or 'dpm++2m' for fewer steps)")
        steps = T
    elif steps is None:
        steps = min(T, DEFAULT_FAST_STEPS)
    ts = sampling_timesteps(T, steps, spacing, schedule=schedule)
    solver = MultistepSolver(sampler, schedule, ts) if sampler in MULTISTEP_SAMPLERS else None
    shape = tuple(shape)
    device = torch.device(device) if device is not None else _model_device(model)

    def randn() -> Tensor:
        z = torch.randn(shape, generator=generator, dtype=torch.float32)
        return z.to(device=device, dtype=dtype)

    if x_T is None:
        x = randn()
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        x = x_T.to(device=device, dtype=dtype)

    xs, x0s, rec_t = [], [], []
    nfe = 0
    x0_last: Tensor | None = None
    with _eval_mode(model), torch.inference_mode():
        for i, t in enumerate(tqdm(ts, desc=sampler, disable=not progress, leave=False)):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
            output = model(x, t_batch)
            nfe += 1
            if sampler == "ddpm":
                noise = randn() if t > 0 else None
                x_new, x0 = p_sample(output, x, t, schedule, noise=noise, clip_x0=clip_x0,
                                     prediction_type=prediction_type, variance=ddpm_variance)
            elif sampler == "ddim":
                noise = randn() if eta > 0 and t_prev >= 0 else None
                x_new, x0 = ddim_step(output, x, t, t_prev, schedule, eta=eta, noise=noise,
                                      prediction_type=prediction_type, clip_x0=clip_x0)
            elif solver is not None:  # oasis_lib.diffusion.multistep
                x0, _ = _x0_eps(schedule, output, x, t, prediction_type, clip_x0)
                noise = randn() if solver.stochastic and t_prev >= 0 else None
                x_new = solver.step(i, x, x0, noise)
            else:
                x0, _ = _x0_eps(schedule, output, x, t, prediction_type, clip_x0)
                t_last = ts[i - 1] if i > 0 else None
                x_new = dpmpp_2m_step(x, x0, x0_last, t, t_prev, t_last, schedule)
                x0_last = x0
            if return_intermediates and i % every == 0:
                xs.append(x.detach().float().cpu())
                x0s.append(x0.detach().float().cpu())
                rec_t.append(t)
            x = x_new
    x = x.clone()  # a normal tensor again (inference tensors refuse later in-place updates)

    if not return_intermediates:
        return x
    final = x.detach().float().cpu()
    return SampleResult(
        images=x,
        xs=torch.stack([*xs, final]),
        x0s=torch.stack([*x0s, final]),
        timesteps=torch.tensor([*rec_t, -1], dtype=torch.long),
        nfe=nfe,
    )
