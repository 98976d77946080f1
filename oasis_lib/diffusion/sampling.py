"""Reverse process: generate images from noise with a trained network.

One entry point, :func:`sample`, with any sampler of the registry (``SAMPLERS``; one class per
sampler in :mod:`oasis_lib.diffusion.samplers`, behind diffusers' ``set_timesteps`` / ``step``
contract; the loop below asks the sampler, never its name):

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
- ``"euler-ode"``: Euler on the VP probability-flow ODE (Karras et al. 2022 Algorithm 1 without
  its correction), equal to DDIM with eta = 0: the worked example of adding a sampler
  (:mod:`oasis_lib.diffusion.samplers.euler`, docs/INTERFACES.md).

The single steps (:func:`p_sample`, :func:`ddim_step`, :func:`dpmpp_2m_step`) live in
:mod:`oasis_lib.diffusion.steps` and are importable from here too.

The loop asks the noise process (:mod:`oasis_lib.diffusion.processes`; a schedule is its VP
process) for the prior x_T and the time tensor the network sees.

Timesteps (``steps < T``, :func:`~oasis_lib.diffusion.processes.vp.sampling_timesteps`):
``"trailing"`` spacing by default (Lin et al. 2024, "sample from the last timestep"): the first step
is always t = T-1, e.g. T=1000, steps=10 -> 999, 899, ..., 99; ``"leading"`` (diffusers' DDIM
default) gives 900, 800, ..., 0 and never starts from t = T-1, although x_T is drawn from pure
noise; ``"karras"``: Karras et al. 2022 eq. 5 sigmas mapped to the nearest timesteps
(:func:`~oasis_lib.diffusion.multistep.karras_timesteps`). Every sampler's last step goes to the
clean data, t = -1 (alpha_bar = 1), so the final image is the last x0 prediction for ddim/dpm++ (and
the t=0 posterior mean, which is the same thing, for ddpm).

Clipping: the predicted x0 is clipped to [-1, 1] when ``clip_x0`` (never x_t), and eps is then
recomputed from the clipped x0 (diffusers' DDIM ``use_clipped_model_output=True``), so x0 and eps
stay consistent with x_t; that also makes DDIM(eta=1, all T steps) equal DDPM exactly.

Random draws: x_T first (unless given), then one draw per stochastic step (ddpm: every t > 0;
ddim with eta > 0 and dpm++2m-sde: every step except the last), each
``torch.randn(shape, generator=generator, dtype=torch.float32)`` on the CPU, then moved to the
device and dtype. Same seed -> same draws. A step's draw is made by the sampler's ``step``
(:func:`~oasis_lib.diffusion.samplers.base.draw_noise`), right after that step's network call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .multistep import karras_timesteps
from .processes.base import NoiseProcess
from .processes.registry import as_process
from .samplers import DEFAULT_FAST_STEPS, SAMPLERS, SPACINGS, make_sampler, sampling_timesteps
from .schedule import NoiseSchedule
from .steps import (
    DDPM_VARIANCES,
    _x0_eps,
    ddim_sigma,
    ddim_step,
    dpmpp_2m_step,
    p_mean_variance,
    p_sample,
)

# The single steps live in .steps and the timestep grid in .samplers.base; they stay importable
# from here, their historical home (editing, inpainting, respacing and notebooks import them).
__all__ = ["DDPM_VARIANCES", "DEFAULT_FAST_STEPS", "SAMPLERS", "SPACINGS", "SampleResult",
           "_eval_mode", "_model_device", "_x0_eps", "ddim_sigma", "ddim_step", "dpmpp_2m_step",
           "karras_timesteps", "p_mean_variance", "p_sample", "sample", "sampling_timesteps"]


@dataclass
class SampleResult:
    """The chain of a sampling run (``return_intermediates=True``).

    Record k < K-1 is step ``k * every`` of the loop: ``xs[k]`` is the x_t fed to the network at
    timestep ``timesteps[k]`` and ``x0s[k]`` its (clipped) x0 prediction; ``xs[0]`` is x_T. The last
    record, k = K-1, is the result: ``xs[-1] = x0s[-1] = images`` and ``timesteps[-1] = -1``
    (a flow process: float times tau, the last 0).
    ``xs``/``x0s`` are CPU float32 [K, B, C, H, W]; ``timesteps`` long [K]; ``images`` [B, C, H, W]
    on the sampling device; ``nfe`` the number of network calls.
    """

    images: Tensor
    xs: Tensor
    x0s: Tensor
    timesteps: Tensor
    nfe: int


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
    schedule: NoiseSchedule | NoiseProcess,
    shape: tuple[int, ...],
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    prediction_type: str | None = None,
    ddpm_variance: str = "posterior",
    clip_x0: bool = True,
    spacing: str | None = None,
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
        schedule (NoiseSchedule or NoiseProcess): the schedule the model was trained with, or
            its noise process (the prior of x_T and the time tensor the network sees come from
            the process; a sampler steps the processes it declares: the VP samplers a VP
            process's schedule, ``flow-euler`` and ``flow-heun`` the rectified flow).
        sampler (str, default ``"ddim"``): one of ``SAMPLERS`` that steps the process.
        steps (int or None): network calls. ddpm (``needs_every_step``): must be None or T.
            The others: any number in [1, T]; None means min(T, 50). The flow samplers: the
            intervals of the grid (None: 20; ``flow-heun`` calls the network 2 steps - 1 times).
        eta (float, default 0): DDIM stochasticity in [0, 1]; must stay 0 for the samplers
            that do not read it (``uses_eta`` False).
        prediction_type (str or None): what the model outputs, one of the process's
            ``prediction_types``; None: the first (``"eps"`` for VP, ``"velocity"`` for flow).
        ddpm_variance (str, default ``"posterior"``): ``"posterior"`` (beta tilde) or ``"beta"``.
        clip_x0 (bool or callable, default True): clip the predicted x0 to [-1, 1] (never
            x_t); a callable ``x0 -> x0`` is applied instead (e.g. dynamic thresholding,
            :class:`~oasis_lib.diffusion.guidance.DynamicThreshold`).
        spacing (str or None): the time grid, one of the process's ``spacings``; None: its
            ``default_spacing`` (VP: ``"trailing"``, ``SPACINGS``; rectified flow:
            ``"linspace"``, diffusers' grid, or ``"trailing"``, evenly spaced).
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
    if int(every) != every or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    process = as_process(schedule)
    if prediction_type is None:
        prediction_type = process.prediction_types[0]
    solver = make_sampler(sampler, process, prediction_type=prediction_type,
                          clip_x0=clip_x0, eta=eta, ddpm_variance=ddpm_variance)
    ts = solver.set_timesteps(steps, spacing=spacing)
    shape = tuple(shape)
    device = torch.device(device) if device is not None else _model_device(model)
    if x_T is None:
        x = process.prior(shape, generator=generator).to(device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        x = x_T.to(device=device, dtype=dtype)

    xs, x0s, rec_t = [], [], []
    nfe = 0
    with _eval_mode(model), torch.inference_mode():
        for i, t in enumerate(tqdm(ts, desc=sampler, disable=not progress, leave=False)):
            t_batch = process.time_batch(t, shape[0], device)
            output = model(x, t_batch)
            nfe += 1
            x_new, x0 = solver.step(output, i, x, generator)  # draws its own noise, if any
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
        timesteps=torch.tensor([*rec_t, -1 if process.discrete_time else 0],
                               dtype=torch.long if process.discrete_time else torch.float32),
        nfe=nfe,
    )
