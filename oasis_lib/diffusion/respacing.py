"""Respacing: a DDPM over a subsequence of the training timesteps (Nichol & Dhariwal 2021, sec. 4).

A network trained with T = 1000 steps can run the *ancestral* (DDPM) sampler, and RePaint
(:mod:`oasis_lib.diffusion.inpainting`), on K << T steps. Pick timesteps
tau_1 < ... < tau_K of the training schedule and define a new K-step process with the same
marginals at those steps,

    alpha_bar'_k = alpha_bar_{tau_k},   beta'_k = 1 - alpha_bar'_k / alpha_bar'_{k-1}
    (alpha_bar'_0 = 1 before the first step),

so q'(x_k | x_0) of the new process *is* q(x_{tau_k} | x_0) of the old one (Ho et al. eq. 4)
and its posterior q'(x_{k-1} | x_k, x_0) follows from eqs. 6-7 with the new betas. The network
is still asked at its own timesteps: :class:`RespacedModel` maps index k to tau_k before the
call. Every sampler that takes a schedule and a callable ``(x, t)`` then works unchanged on
``(RespacedModel(model, s.timestep_map), s)``; with all T steps it is the original process.

The timesteps are the trailing spacing of :func:`~oasis_lib.diffusion.sampling.
sampling_timesteps` (tau_K = T - 1, so the chain still starts from pure noise).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .sampling import sampling_timesteps
from .schedule import NoiseSchedule


def _buffers(betas: Tensor) -> dict[str, Tensor]:
    """The float64 buffers of a schedule with ``betas`` (Ho et al. eqs. 4, 6-7): the formulas of
    :class:`NoiseSchedule`, kept here so that its shown source does not move; the tests check
    that a respacing over all T steps reproduces every buffer of the original."""
    alphas = 1.0 - betas
    ab = torch.cumprod(alphas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    pv = betas * (1.0 - ab_prev) / (1.0 - ab)  # eq. 7, beta tilde
    return {
        "betas": betas, "alphas": alphas, "alpha_bar": ab, "alpha_bar_prev": ab_prev,
        "sqrt_alpha_bar": ab.sqrt(), "sqrt_one_minus_alpha_bar": (1.0 - ab).sqrt(),
        "snr": ab / (1.0 - ab), "log_snr": torch.log(ab) - torch.log1p(-ab),
        "posterior_variance": pv,
        "posterior_log_variance_clipped": torch.log(torch.cat([pv[1:2], pv[1:]])),
        "posterior_mean_coef1": betas * ab_prev.sqrt() / (1.0 - ab),
        "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
    }


class RespacedSchedule(NoiseSchedule):
    """The K-step schedule on ``timesteps`` of ``base`` (module docstring).

    Args:
        base (NoiseSchedule): the training schedule.
        timesteps (list of int): K >= 2 distinct steps of ``base`` in 0..T-1 (any order).

    Attributes: every buffer of a :class:`NoiseSchedule` (length K), ``base``, and
    ``timestep_map`` (long [K], ascending): index k of this schedule is step
    ``timestep_map[k]`` of ``base``.
    """

    def __init__(self, base: NoiseSchedule, timesteps: list[int]) -> None:
        steps = sorted({int(t) for t in timesteps})
        if len(steps) != len(list(timesteps)) or len(steps) < 2:
            raise ValueError(f"timesteps must be >= 2 distinct steps, got {list(timesteps)!r}")
        if steps[0] < 0 or steps[-1] >= base.T:
            raise ValueError(f"timesteps must be in 0..{base.T - 1}, got {steps[0]}..{steps[-1]}")
        self.kind, self.zero_terminal_snr, self.base = base.kind, base.zero_terminal_snr, base
        self._T = len(steps)
        self.timestep_map = torch.tensor(steps, dtype=torch.long)
        ab = base.f64("alpha_bar")[self.timestep_map]
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        self.set_tables(_buffers(1.0 - ab / ab_prev))

    def to_dict(self) -> dict:
        """The base schedule's arguments and the kept steps (a tuple, so the schedule hashes)."""
        return {**self.base.to_dict(), "respaced": tuple(self.timestep_map.tolist())}

    def __repr__(self) -> str:
        return (f"RespacedSchedule({self.T} of the {self.base.T} steps of {self.base.kind}, "
                f"t = {int(self.timestep_map[-1])} ... {int(self.timestep_map[0])})")


def respace(schedule: NoiseSchedule, steps: int) -> RespacedSchedule:
    """``steps`` trailing-spaced timesteps of ``schedule`` as a :class:`RespacedSchedule`."""
    return RespacedSchedule(schedule, sampling_timesteps(schedule.T, steps, "trailing"))


class RespacedModel(nn.Module):
    """``(x, k) -> model(x, timestep_map[k])``: the network asked at its own training steps."""

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor], timestep_map: Tensor) -> None:
        super().__init__()
        self.model = model  # an nn.Module is registered (device, eval mode)
        self.register_buffer("timestep_map", timestep_map.clone().long(), persistent=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, self.timestep_map.to(t.device)[t.long()])
