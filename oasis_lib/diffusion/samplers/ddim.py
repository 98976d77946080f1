"""DDIM: Song et al. 2021 eq. 12 with sigma from eq. 16 (``eta`` = 0 deterministic, 1 = DDPM),
on any subsequence of timesteps. The step is :func:`~oasis_lib.diffusion.steps.ddim_step`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..steps import ddim_step
from .base import Sampler, draw_noise


class DDIMSampler(Sampler):
    """DDIM; with eta > 0 one noise draw per step except the last (which goes to t = -1)."""

    name = "ddim"
    display_name = "DDIM"
    uses_eta = True  # stochastic = False as declared; an instance with eta > 0 draws noise

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t, t_prev = self.timestep(i)
        noise = draw_noise(x, generator) if self.eta > 0 and t_prev >= 0 else None
        return ddim_step(model_output, x, t, t_prev, self.schedule, eta=self.eta, noise=noise,
                         prediction_type=self.prediction_type, clip_x0=self.clip_x0)
