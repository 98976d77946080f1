"""Rectified flow (Liu et al. 2022; flow matching with the straight path, Lipman et al. 2023):
the objective of Stable Diffusion 3 (Esser et al. 2024), as a noise process.

x_t = (1 - t) x0 + t eps with t in [0, 1] (t = 0: data, t = 1: noise), and the network predicts
the velocity v = eps - x0 (``prediction_type="velocity"``), trained with a plain MSE (no
weighting). The maths: :mod:`oasis_lib.diffusion.flow_matching`.

Time as the network sees it: like diffusers (``timesteps = sigmas * num_train_timesteps``) the
process's time is tau = 1000 t, a float in [0, 1000], so the U-Net's sinusoidal time
embedding, made for 0..999, serves both processes unchanged. Every method takes and returns
tau; the path uses t = tau / 1000.

Training times: ``time_sampling`` ``"uniform"``, ``"u-shaped"`` (Lee et al. 2024) or
``"logit-normal"`` (location ``logit_loc``, scale ``logit_scale``; Esser et al. 2024 sec. 3.1),
then the shift ``shift``
(sec. 5.3.2), which also shifts the sampling grid (diffusers' ``FlowMatchEulerDiscreteScheduler``
grid, :func:`~oasis_lib.diffusion.flow_matching.flow_sigmas`).

What cannot work is refused by name: RePaint re-noises with the VP posterior between DDPM
steps (``supports_repaint = False``), and the VP samplers (DDPM, DDIM, DPM-Solver++, UniPC, ...)
step a VP schedule; the flow samplers are ``flow-euler`` and ``flow-heun``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..flow_matching import (
    FLOW_SPACINGS,
    TIME_SAMPLINGS,
    flow_sigmas,
    flow_velocity,
    shift_time,
    u_shaped_quantile,
)
from .base import NoiseProcess

#: The scale between the process's time tau (what the network sees) and the path's t.
FLOW_TIME_SCALE = 1000
FLOW_PREDICTION_TYPES = ("velocity",)


def _per_sample(t: Tensor | float, x: Tensor) -> Tensor | float:
    """t / 1000 shaped to broadcast over x's sample dimensions ([B] -> [B, 1, 1, 1])."""
    if isinstance(t, Tensor) and t.dim() > 0:
        return (t.to(x.dtype) / FLOW_TIME_SCALE).reshape(-1, *([1] * (x.dim() - 1)))
    return float(t) / FLOW_TIME_SCALE


class RectifiedFlowProcess(NoiseProcess):
    """The straight path x_t = (1 - t) x0 + t eps; the network predicts v = eps - x0.

    Args:
        time_sampling (str): ``"uniform"``, ``"logit-normal"`` or ``"u-shaped"``
            (``TIME_SAMPLINGS``).
        logit_loc, logit_scale (float): the logit-normal's m and s (SD3: 0 and 1).
        shift (float): SD3's shift s > 0 of training and sampling times (1: none).
    """

    name = "rectified-flow"
    prediction_types = FLOW_PREDICTION_TYPES
    discrete_time = False
    supports_repaint = False
    default_sampler = "flow-euler"
    spacings = FLOW_SPACINGS
    default_spacing = "linspace"

    def __init__(self, *, time_sampling: str = "uniform", logit_loc: float = 0.0,
                 logit_scale: float = 1.0, shift: float = 1.0) -> None:
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {time_sampling!r}; "
                             f"choose one of {TIME_SAMPLINGS}")
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale!r}")
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift!r}")
        self.time_sampling, self.shift = time_sampling, float(shift)
        self.logit_loc, self.logit_scale = float(logit_loc), float(logit_scale)
        self.T = FLOW_TIME_SCALE  # the range of tau, for code that reads a process's T

    @classmethod
    def from_config(cls, diffusion: Any, *, warn: bool = True) -> RectifiedFlowProcess:
        """The flow knobs of a ``DiffusionConfig`` (``time_sampling``, ``logit_loc``,
        ``logit_scale``, ``flow_shift``)."""
        return cls(time_sampling=diffusion.time_sampling, logit_loc=diffusion.logit_loc,
                   logit_scale=diffusion.logit_scale, shift=diffusion.flow_shift)

    # ------------------------------------------------------------------ time
    def time_from_uniform(self, u: Tensor) -> Tensor:
        """tau = 1000 shift(F^-1(u)), float32: F^-1(u) = u (uniform) or
        sigmoid(m + s Phi^-1(u)) (logit-normal; Phi^-1 = ``torch.special.ndtri``) or the
        U-shaped quantile (``flow_matching.u_shaped_quantile``, Lee et al. 2024)."""
        u = u.to(torch.float64)
        if self.time_sampling == "uniform":
            t = u
        elif self.time_sampling == "u-shaped":
            t = u_shaped_quantile(u)
        else:
            t = torch.sigmoid(self.logit_loc + self.logit_scale * torch.special.ndtri(u))
        if self.shift != 1.0:
            t = shift_time(t, self.shift)
        return (FLOW_TIME_SCALE * t).to(torch.float32)

    def sample_time(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n training times tau in [0, 1000): :meth:`time_from_uniform` of uniforms drawn from
        ``generator`` (float64, on the CPU)."""
        return self.time_from_uniform(torch.rand(n, generator=generator, dtype=torch.float64))

    # ------------------------------------------------------------------ training
    def forward(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t eps with t = tau / 1000 (Liu et al. 2022, eq. 1)."""
        s = _per_sample(t, x0)
        return (1.0 - s) * x0 + s * noise

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor, *,
                        prediction_type: str) -> Tensor:
        """v = eps - x0, the path's velocity dx_t / dt."""
        self.check_prediction_type(prediction_type)
        return flow_velocity(x0, noise)

    # ------------------------------------------------------------------ conversions
    def split_output(self, output: Tensor, x_t: Tensor, t: Tensor | float, *,
                     prediction_type: str) -> tuple[Tensor, Tensor]:
        """x0 = x_t - t v and eps = x_t + (1 - t) v (the path, solved with v = eps - x0)."""
        self.check_prediction_type(prediction_type)
        s = _per_sample(t, x_t)
        return x_t - s * output, x_t + (1.0 - s) * output

    def to_output(self, x0: Tensor, x_t: Tensor, t: Tensor | float, *,
                  prediction_type: str) -> Tensor:
        """v = (x_t - x0) / t, the velocity whose x0 is ``x0`` (undefined at t = 0)."""
        self.check_prediction_type(prediction_type)
        return (x_t - x0) / _per_sample(t, x_t)

    # ------------------------------------------------------------------ sampling
    def sampling_times(self, steps: int, *, spacing: str | None = None) -> list[float]:
        """tau of the grid :func:`~oasis_lib.diffusion.flow_matching.flow_sigmas` with this
        process's shift, descending from 1000 (pure noise); after the last one the chain
        reaches t = 0. ``spacing``: ``"linspace"`` (None; diffusers' FlowMatchEuler grid) or
        ``"trailing"`` (t_i = 1 - i / steps, FLUX's)."""
        spacing = self.resolve_spacing(spacing)
        return (FLOW_TIME_SCALE * flow_sigmas(steps, shift=self.shift,
                                              spacing=spacing)[:-1]).tolist()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, *sorted(vars(self).items())))

    def __repr__(self) -> str:
        return (f"RectifiedFlowProcess(time_sampling={self.time_sampling!r}, "
                f"logit_loc={self.logit_loc}, logit_scale={self.logit_scale}, "
                f"shift={self.shift})")
