"""The variance-preserving (VP) process of DDPM: integer t over a :class:`NoiseSchedule`.

x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020 eq. 4) at t in
``0..T-1``; the network predicts eps, x0 or v (:mod:`oasis_lib.diffusion.parameterization`).
:class:`VPProcess` is exactly what the library did before processes existed: its methods call
the same functions, so every golden number is unchanged (tests/diffusion/test_noise_process.py
checks it bitwise).

The sampling time grid (:func:`sampling_timesteps`, ``steps < T``): ``"trailing"`` spacing by
default (Lin et al. 2024, "sample from the last timestep"): the first step is always t = T-1,
e.g. T=1000, steps=10 -> 999, 899, ..., 99; ``"leading"`` (diffusers' DDIM default) gives 900,
800, ..., 0 and never starts from t = T-1, although x_T is drawn from pure noise; ``"karras"``:
Karras et al. 2022 eq. 5 sigmas mapped to the nearest timesteps
(:func:`~oasis_lib.diffusion.multistep.karras_timesteps`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..multistep import karras_timesteps
from ..parameterization import (
    PREDICTION_TYPES,
    min_snr_weight,
    model_output_to_x0_eps,
    training_target,
    x0_to_output,
)
from ..schedule import NoiseSchedule
from .base import NoiseProcess

SPACINGS = ("trailing", "leading", "karras")


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


class VPProcess(NoiseProcess):
    """The VP diffusion of Ho et al. 2020 on ``schedule`` (any :class:`NoiseSchedule`,
    respaced ones included); t is a long index in ``0..T-1``."""

    name = "vp"
    prediction_types = PREDICTION_TYPES
    discrete_time = True
    supports_repaint = True
    default_sampler = "ddim"
    spacings = SPACINGS
    default_spacing = "trailing"

    def __init__(self, schedule: NoiseSchedule) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"VPProcess takes a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule

    @classmethod
    def from_config(cls, diffusion: Any, *, warn: bool = True) -> VPProcess:
        """The schedule of ``diffusion`` (kind, T, zero terminal SNR) as a VP process."""
        return cls(NoiseSchedule(diffusion.schedule, diffusion.timesteps,
                                 zero_terminal_snr=diffusion.zero_terminal_snr, warn=warn))

    @property
    def T(self) -> int:
        return self.schedule.T

    # ------------------------------------------------------------------ time
    def sample_time(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """t ~ U{0..T-1} (Ho et al. 2020 Algorithm 1, line 3): ``torch.randint`` on the CPU."""
        return torch.randint(0, self.T, (n,), generator=generator)

    def time_from_uniform(self, u: Tensor) -> Tensor:
        """floor(u T), clamped to T-1: U{0..T-1} from uniforms in [0, 1)."""
        return (u * self.T).long().clamp(max=self.T - 1)

    # ------------------------------------------------------------------ training
    def forward(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """q_sample: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4)."""
        return self.schedule.q_sample(x0, t, noise)

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor, *,
                        prediction_type: str) -> Tensor:
        """eps, x0 or v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022, sec. 4)."""
        return training_target(self.schedule, x0, noise, t, prediction_type)

    def loss_weight(self, t: Tensor, *, prediction_type: str,
                    min_snr_gamma: float | None = None) -> Tensor | None:
        """min(SNR_t, gamma) in the target's space (Hang et al. 2023,
        :func:`~oasis_lib.diffusion.parameterization.min_snr_weight`); None without gamma."""
        if min_snr_gamma is None:
            return None
        return min_snr_weight(self.schedule, t, min_snr_gamma, prediction_type)

    # ------------------------------------------------------------------ conversions
    def split_output(self, output: Tensor, x_t: Tensor, t: Tensor | int, *,
                     prediction_type: str) -> tuple[Tensor, Tensor]:
        """(x0, eps) from an eps, x0 or v output (eq. 4 inverted; Salimans & Ho sec. 4)."""
        return model_output_to_x0_eps(self.schedule, output, x_t, t, prediction_type)

    def to_output(self, x0: Tensor, x_t: Tensor, t: Tensor | int, *,
                  prediction_type: str) -> Tensor:
        return x0_to_output(self.schedule, x0, x_t, t, prediction_type)

    # ------------------------------------------------------------------ sampling
    def sampling_times(self, steps: int, *, spacing: str | None = None) -> list[int]:
        """:func:`sampling_timesteps` of this schedule (the chain then goes to t = -1);
        ``spacing`` None: ``"trailing"``."""
        return sampling_timesteps(self.T, steps, self.resolve_spacing(spacing),
                                  schedule=self.schedule)

    # ------------------------------------------------------------------ validation
    def validation_draws(self, shape: tuple[int, ...], *, seed: int = 0) -> tuple[Tensor, Tensor]:
        """t evenly spread over [0, T): t_i = floor((i T + T // 2) / B), and noise from a CPU
        generator seeded ``seed`` (float32). The same numbers as before processes existed."""
        b, T = shape[0], self.T
        t = torch.div(torch.arange(b) * T + T // 2, b, rounding_mode="floor")
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float32)
        return t.clamp(max=T - 1).long(), noise

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.schedule == self.schedule

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.schedule))

    def __repr__(self) -> str:
        return f"VPProcess({self.schedule!r})"
