"""The multistep solvers of :mod:`oasis_lib.diffusion.multistep` as samplers: DPM-Solver++(2M)
SDE (stochastic), DPM-Solver++(3M) and UniPC (Zhao et al. 2023).

Each class names its solver; its order, warm-up and noise come from the solver's declaration
(:data:`~oasis_lib.diffusion.multistep.SOLVER_SPECS`), which
:class:`~oasis_lib.diffusion.multistep.MultistepSolver` reads too: one statement of each fact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..multistep import SOLVER_SPECS, MultistepSolver
from .base import Sampler, draw_noise


class MultistepSampler(Sampler):
    """A :class:`~oasis_lib.diffusion.multistep.MultistepSolver` behind the sampler protocol.

    A subclass sets ``name`` (a key of ``SOLVER_SPECS``) and ``display_name``; ``order`` and
    ``stochastic`` are read from the solver's spec when the subclass is defined."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        spec = SOLVER_SPECS[cls.name]
        cls.order, cls.stochastic = spec.order, spec.stochastic

    def reset(self) -> None:
        self.solver = MultistepSolver(self.name, self.schedule, self.timesteps)

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t, t_prev = self.timestep(i)
        x0, _ = self.x0_eps(model_output, x, t)
        noise = draw_noise(x, generator) if self.stochastic and t_prev >= 0 else None
        return self.solver.step(i, x, x0, noise), x0


class DPMSolverPP2MSDESampler(MultistepSampler):
    """SDE-DPM-Solver++(2M) (:func:`~oasis_lib.diffusion.multistep.dpmpp_2m_sde_step`)."""

    name = "dpm++2m-sde"
    display_name = "DPM-Solver++(2M) SDE"


class DPMSolverPP3MSampler(MultistepSampler):
    """DPM-Solver++(3M) (:func:`~oasis_lib.diffusion.multistep.dpmpp_3m_step`)."""

    name = "dpm++3m"
    display_name = "DPM-Solver++(3M)"


class UniPCSampler(MultistepSampler):
    """UniPC, UniP-3 with the UniC corrector (:func:`~oasis_lib.diffusion.multistep.
    unipc_update`)."""

    name = "unipc"
    display_name = "UniPC"
