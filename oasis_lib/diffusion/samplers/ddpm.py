"""DDPM: ancestral sampling over all T steps (Ho et al. 2020 Algorithm 2 / eq. 11, in the
posterior form of Nichol & Dhariwal 2021 eqs. 10-12): predict x0, clip it, take the mean of
q(x_{t-1} | x_t, x0) (eq. 7), add noise of variance beta_t or beta tilde_t
(``ddpm_variance``). The step is :func:`~oasis_lib.diffusion.steps.p_sample`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..steps import p_sample
from .base import Sampler, draw_noise


class DDPMSampler(Sampler):
    """DDPM over every timestep; one noise draw per step with t > 0."""

    name = "ddpm"
    display_name = "DDPM"
    stochastic = True
    needs_every_step = True
    can_inpaint = True  # RePaint pastes between DDPM steps (Lugmayr et al. 2022, Algorithm 1)

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t, _ = self.timestep(i)
        noise = draw_noise(x, generator) if t > 0 else None
        return p_sample(model_output, x, t, self.schedule, noise=noise, clip_x0=self.clip_x0,
                        prediction_type=self.prediction_type, variance=self.ddpm_variance)
