"""Euler and Heun on the rectified-flow ODE dx/dt = v(x, t), from t = 1 (noise) to t = 0.

The grid is diffusers' (``FlowMatchEulerDiscreteScheduler.set_timesteps``, with the process's
shift: :func:`~oasis_lib.diffusion.flow_matching.flow_sigmas`): ``steps`` times t_0 = 1 > ... >
t_{n-1} > 0, then t = 0; ``spacing="trailing"`` spaces them evenly instead (FLUX's grid, for
few-step models). The network sees tau = 1000 t
(:class:`~oasis_lib.diffusion.processes.rectified_flow.RectifiedFlowProcess`).

* ``flow-euler``: x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i): one network call per step,
  first order; diffusers' ``FlowMatchEulerDiscreteScheduler.step`` to float rounding.
* ``flow-heun``: Heun's trapezoid (Karras et al. 2022, Algorithm 1, lines 7-8) on each
  interval but the last, which is an Euler step into t = 0, as in diffusers'
  ``FlowMatchHeunDiscreteScheduler``: 2 n - 1 network calls for n intervals, second order. Its
  network-call times are t_0, t_1, t_1, t_2, t_2, ..., t_{n-1}, t_{n-1}: the first call of an
  interval predicts, the second (at the Euler point) corrects.

``clip_x0``: x0 = x_t - t v is clipped to [-1, 1] (or passed through the callable) and v
recomputed as (x_t - x0) / t, as the VP samplers recompute eps; the pipeline clips for pixel
models only. Adding these samplers took this file, the process's ``sampling_times`` and two
lines in ``registry.py``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..flow_matching import euler_flow_step, heun_flow_step
from .base import Sampler

#: Network calls when ``steps=None`` (SD3's default of 28 is for 1024^2 images; 20 here).
DEFAULT_FLOW_STEPS = 20


class FlowSampler(Sampler):
    """Base of the samplers of the rectified-flow process (built on the process, not on a
    VP schedule). ``steps`` counts the intervals of the grid (diffusers' ``num_inference_steps``).
    """

    processes: ClassVar[tuple[str, ...]] = ("rectified-flow",)
    default_steps = DEFAULT_FLOW_STEPS

    def __init__(self, process, *, prediction_type: str = "velocity", clip_x0=True,
                 eta: float = 0.0, ddpm_variance: str = "posterior") -> None:
        process.check_prediction_type(prediction_type)
        if eta != 0.0:
            raise ValueError(f"eta only applies to samplers with uses_eta, not {self.name!r}")
        self.process, self.prediction_type, self.clip_x0 = process, prediction_type, clip_x0
        self.eta, self.ddpm_variance = 0.0, ddpm_variance
        self.schedule = None
        self.timesteps: list[float] | None = None
        self.sigmas: list[float] = []

    @classmethod
    def build(cls, process, **options) -> FlowSampler:
        return cls(process, **options)

    @classmethod
    def resolve_steps(cls, steps: int | None, T: int | None = None) -> int:
        """``steps`` (>= 1), or ``default_steps`` for None."""
        if steps is None:
            return cls.default_steps
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        return int(steps)

    def x0_velocity(self, output: Tensor, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """(x0, v) from the network's velocity at (x, t = sigma), x0 clipped as ``clip_x0``
        says and v recomputed from it (t > 0)."""
        x0 = x - sigma * output
        if not self.clip_x0 or sigma == 0:
            return x0, output
        x0 = self.clip_x0(x0) if callable(self.clip_x0) else x0.clamp(-1.0, 1.0)
        return x0, (x - x0) / sigma

    def _grid(self, steps: int | None, spacing: str | None = None) -> list[float]:
        """t_0 = 1 > ... > t_{n-1}, then 0 (from the process's ``sampling_times``)."""
        taus = self.process.sampling_times(self.resolve_steps(steps), spacing=spacing)
        return [tau / self.process.T for tau in taus] + [0.0]


class FlowEulerSampler(FlowSampler):
    """Euler on the flow ODE: one network call per interval, first order."""

    name = "flow-euler"
    display_name = "Euler (flow ODE)"

    def set_timesteps(self, steps: int | None = None, *, spacing: str | None = None
                      ) -> list[float]:
        """The network-call times tau (floats, descending from 1000) of the process's grid
        (``spacing``: ``"linspace"``, the default, or ``"trailing"``)."""
        self.sigmas = self._grid(steps, spacing)
        self.timesteps = [s * self.process.T for s in self.sigmas[:-1]]
        self.reset()
        return list(self.timesteps)

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        x0, v = self.x0_velocity(model_output, x, sigma)
        return euler_flow_step(v, x, sigma, sigma_next), x0


class FlowHeunSampler(FlowSampler):
    """Heun on the flow ODE: two network calls per interval (one for the last), second order.
    ``steps`` intervals cost 2 steps - 1 network calls."""

    name = "flow-heun"
    display_name = "Heun (flow ODE)"
    order = 2

    def set_timesteps(self, steps: int | None = None, *, spacing: str | None = None
                      ) -> list[float]:
        """The network-call times tau: t_0, then t_1, t_1, ..., t_{n-1}, t_{n-1} (x 1000)."""
        self.sigmas = self._grid(steps, spacing)
        inner = self.sigmas[1:-1]
        self.call_sigmas = [self.sigmas[0]] + [s for s in inner for _ in range(2)]
        # for each call: the interval (t, t_next) it belongs to and whether it corrects
        self.calls = [(0, False)] + [(k, corrects) for k in range(1, len(inner) + 1)
                                     for corrects in (True, False)]
        self.timesteps = [s * self.process.T for s in self.call_sigmas]
        self.reset()
        return list(self.timesteps)

    def reset(self) -> None:
        self._pending: tuple[Tensor, Tensor, float, float] | None = None

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Call i: a predictor call steps x by Euler to the next grid time (and, but on the
        last interval, remembers (x, v, t, t_next)); a corrector call at that Euler point
        replaces it with the trapezoid from the remembered x."""
        interval, corrects = self.calls[i]
        if corrects:  # x is the Euler point at t_next of the pending interval
            x_start, v_start, sigma, sigma_next = self._pending
            x0, v_next = self.x0_velocity(model_output, x, sigma_next)
            self._pending = None
            return heun_flow_step(v_start, v_next, x_start, sigma, sigma_next), x0
        k = interval if i > 0 else 0
        sigma, sigma_next = self.sigmas[k], self.sigmas[k + 1]
        x0, v = self.x0_velocity(model_output, x, sigma)
        if sigma_next > 0:  # a corrector call follows at (x_euler, sigma_next)
            self._pending = (x, v, sigma, sigma_next)
        return euler_flow_step(v, x, sigma, sigma_next), x0
