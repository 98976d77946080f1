"""DPM-Solver++(2M): Lu et al. 2022 Algorithm 2, a second-order multistep solver of the
probability-flow ODE in data (x0) prediction; deterministic. The step is
:func:`~oasis_lib.diffusion.steps.dpmpp_2m_step` (first order on the first step and on the
last, to clean data)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..steps import dpmpp_2m_step
from .base import Sampler


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M); keeps the previous x0 prediction between steps."""

    name = "dpm++2m"
    display_name = "DPM-Solver++(2M)"
    order = 2

    def reset(self) -> None:
        self._x0_last: Tensor | None = None

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t, t_prev = self.timestep(i)
        x0, _ = self.x0_eps(model_output, x, t)
        t_last = self.timesteps[i - 1] if i > 0 else None
        x_new = dpmpp_2m_step(x, x0, self._x0_last, t, t_prev, t_last, self.schedule)
        self._x0_last = x0
        return x_new, x0
