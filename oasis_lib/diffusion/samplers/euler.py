"""Euler for the probability-flow ODE of the VP process (Karras et al. 2022, Algorithm 1
without its second-order correction), the worked example of adding a sampler.

With sigma_t = sqrt((1 - ab_t) / ab_t) and the scaled state y = x / sqrt(ab_t) (x as in DDIM;
Karras et al.'s scaling s(t) = sqrt(ab) of the VP process, their Table 1, so y = x / s), the
ODE is dy / dsigma = (y - D(y; sigma)) / sigma with D the x0 prediction (their eq. 4 with
sigma(t) = t). One Euler step from sigma to sigma_prev (Algorithm 1, lines 4-5):

    d = (y - x0) / sigma,   y_prev = y + (sigma_prev - sigma) d,   x_prev = sqrt(ab_prev) y_prev.

Since y = x0 + sigma eps, d is the eps prediction and
x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps: DDIM with eta = 0 (Song et al. 2021 eq. 12)
*is* this Euler step, so the two agree to float rounding (tests/diffusion/test_samplers.py;
in float32 that rounding is y's, up to 1 / sqrt(ab) times x's); Karras et al.'s Table 1 lists
DDIM's ODE solver as Euler. Adding it took this file and its entry in ``registry.py``.
At sigma = inf (alpha_bar = 0, zero terminal SNR) y is infinite and the step is taken in its
limit, x_prev = sqrt(ab_prev) (x0 + sigma_prev d) with d = eps. The last step goes to
sigma = 0 (t = -1) and returns the x0 prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Sampler


class EulerODESampler(Sampler):
    """Euler in sigma on the VP probability-flow ODE; deterministic, first order."""

    name = "euler-ode"
    display_name = "Euler (probability-flow ODE)"

    def sigma(self, t: int) -> float:
        """sigma_t = sqrt((1 - ab_t) / ab_t) (inf at ab = 0; t = -1: 0)."""
        ab = self.schedule.alpha_bar_at(t)
        return ((1.0 - ab) / ab) ** 0.5 if ab > 0 else float("inf")

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t, t_prev = self.timestep(i)
        x0, eps = self.x0_eps(model_output, x, t)
        sigma, sigma_prev = self.sigma(t), self.sigma(t_prev)
        scale_prev = self.schedule.alpha_bar_at(t_prev) ** 0.5
        if sigma == float("inf"):  # y = x / sqrt(ab) is infinite: the limit of the step
            return scale_prev * (x0 + sigma_prev * eps), x0
        y = x / self.schedule.alpha_bar_at(t) ** 0.5
        d = (y - x0) / sigma  # Karras et al. Algorithm 1, line 4 (= eps)
        y_prev = y + (sigma_prev - sigma) * d  # line 5
        return scale_prev * y_prev, x0
