"""The sampler protocol: one object per sampler, diffusers' scheduler contract.

A sampler is built for one run (``Sampler(schedule, prediction_type=..., clip_x0=..., ...)``),
told its timesteps once (:meth:`Sampler.set_timesteps`, the ``set_timesteps`` of diffusers'
``SchedulerMixin``), then called once per timestep with the network's output
(:meth:`Sampler.step`, diffusers' ``scheduler.step(model_output, timestep, sample, generator)``;
here the timestep is given by its index ``i`` in the list). It declares what it can do as class
attributes (``stochastic``, ``uses_eta``, ``order``, ``needs_every_step``, ``can_inpaint``,
``display_name``), which the loop of :func:`oasis_lib.diffusion.sampling.sample`, the CLI's
checks and the benchmark tables read instead of comparing names.

Timesteps: :func:`~oasis_lib.diffusion.processes.vp.sampling_timesteps` (trailing, leading or
Karras spacing: the VP process's time grid, importable from here too). Random draws:
:func:`draw_noise`, the one documented draw (CPU float32 from the generator, then moved), made
inside ``step`` when the step needs it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..parameterization import check_prediction_type
from ..processes.vp import SPACINGS, VPProcess, sampling_timesteps
from ..schedule import NoiseSchedule
from ..steps import DDPM_VARIANCES, _x0_eps

__all__ = ["DEFAULT_FAST_STEPS", "SPACINGS", "Sampler", "draw_noise", "sampling_timesteps"]

#: Number of steps a sampler runs when ``steps=None`` (capped at T), unless it needs every step.
DEFAULT_FAST_STEPS = 50


def draw_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) like ``x``: drawn on the CPU in float32 from ``generator``, then moved to x's
    device and dtype (so a seed gives the same draws on every device)."""
    z = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return z.to(device=x.device, dtype=x.dtype)


class Sampler:
    """Base class of every sampler (one subclass per sampler, found by name in the registry).

    Class attributes (a subclass sets those that differ):
        name (str): what ``sample(sampler=...)`` and ``--sampler`` call it.
        display_name (str): its name in figures and benchmark tables.
        stochastic (bool): draws noise during the steps (x_T aside).
        uses_eta (bool): reads ``eta`` (DDIM's sigma, Song et al. 2021 eq. 16); for the
            others eta must stay 0.
        order (int): the highest order of its update (1 for DDPM, DDIM and Euler).
        needs_every_step (bool): runs all T steps and accepts no other count (DDPM).
        can_inpaint (bool): its steps are the ones RePaint (:mod:`~oasis_lib.diffusion.
            inpainting`) runs between the pastes.
        default_steps (int): network calls when ``steps=None`` (capped at T).
        processes (tuple of str): the noise processes it steps (``"vp"``; the flow samplers
            ``"rectified-flow"``); :func:`~oasis_lib.diffusion.samplers.registry.make_sampler`
            refuses the others by name.

    Args:
        schedule (NoiseSchedule): the schedule the model was trained with.
        prediction_type (str): what the model outputs (``PREDICTION_TYPES``).
        clip_x0 (bool or callable): clip the x0 prediction to [-1, 1] (or apply the callable),
            then recompute eps from it (:func:`~oasis_lib.diffusion.steps._x0_eps`).
        eta (float): DDIM's stochasticity in [0, 1]; stored, read only where ``uses_eta``.
        ddpm_variance (str): ``"posterior"`` or ``"beta"``; read only by DDPM.

    A subclass implements :meth:`step` and, if it keeps a history, :meth:`reset`.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    uses_eta: ClassVar[bool] = False
    order: ClassVar[int] = 1
    needs_every_step: ClassVar[bool] = False
    can_inpaint: ClassVar[bool] = False
    default_steps: ClassVar[int] = DEFAULT_FAST_STEPS
    #: The noise processes (their ``name``) this sampler steps: the VP ones a NoiseSchedule.
    processes: ClassVar[tuple[str, ...]] = ("vp",)

    def __init__(self, schedule: NoiseSchedule, *, prediction_type: str = "eps",
                 clip_x0=True, eta: float = 0.0, ddpm_variance: str = "posterior") -> None:
        check_prediction_type(prediction_type)
        if ddpm_variance not in DDPM_VARIANCES:
            raise ValueError(f"unknown ddpm_variance {ddpm_variance!r}; "
                             f"choose one of {DDPM_VARIANCES}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if eta != 0.0 and not self.uses_eta:
            raise ValueError(f"eta only applies to samplers with uses_eta, not {self.name!r}")
        self.schedule, self.prediction_type, self.clip_x0 = schedule, prediction_type, clip_x0
        self.eta, self.ddpm_variance = float(eta), ddpm_variance
        self.timesteps: list[int] | None = None

    @classmethod
    def build(cls, process, **options) -> Sampler:
        """The sampler for ``process`` (one of :attr:`processes`): a VP sampler is built on
        the process's schedule."""
        return cls(process.schedule, **options)

    # ------------------------------------------------------------------ the number of steps
    @classmethod
    def accepts_steps(cls, steps: int | None, T: int | None) -> bool:
        """Whether this sampler takes ``steps`` network calls on a model with ``T`` timesteps
        (None: not known yet). The one place of DDPM's rule: all T steps, or None."""
        return not cls.needs_every_step or steps is None or steps == T

    @classmethod
    def resolve_steps(cls, steps: int | None, T: int) -> int:
        """The network calls of a run: ``steps``; None gives T (``needs_every_step``) or
        min(T, ``default_steps``). A count the sampler does not take raises ValueError."""
        if not cls.accepts_steps(steps, T):
            raise ValueError(f"sampler {cls.name!r} uses all T={T} steps; got steps={steps} "
                             "(use 'ddim' or 'dpm++2m' for fewer steps)")
        if cls.needs_every_step:
            return T
        return min(T, cls.default_steps) if steps is None else steps

    # ------------------------------------------------------------------ the contract
    def set_timesteps(self, steps: int | None = None, *, spacing: str | None = None
                      ) -> list[int]:
        """Choose the run's descending timesteps (the VP process's ``sampling_times``:
        :func:`sampling_timesteps`), forget any history, and return them; after the last one
        the chain goes to t = -1 (clean data)."""
        steps = self.resolve_steps(steps, self.schedule.T)
        self.timesteps = VPProcess(self.schedule).sampling_times(steps, spacing=spacing)
        self.reset()
        return list(self.timesteps)

    def reset(self) -> None:
        """Forget what earlier steps left behind (multistep histories); called by
        :meth:`set_timesteps`."""

    def step(self, model_output: Tensor, i: int, x: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One reverse step from ``x`` at ``timesteps[i]`` (``model_output``: the network's
        output there) to the next timestep, or to the data after the last one. Draws its noise,
        if any, with :func:`draw_noise`. Returns ``(x_prev, x0)``: the new x and the (clipped)
        x0 prediction at ``timesteps[i]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    # ------------------------------------------------------------------ helpers for step()
    def timestep(self, i: int) -> tuple[int, int]:
        """``(t, t_prev)`` of step ``i``: t_prev is the next timestep, -1 after the last."""
        if self.timesteps is None:
            raise RuntimeError(f"{type(self).__name__}.step needs set_timesteps() first")
        ts = self.timesteps
        return ts[i], ts[i + 1] if i + 1 < len(ts) else -1

    def x0_eps(self, model_output: Tensor, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(x0, eps) at timestep t from the network's output, x0 clipped as ``clip_x0`` says and
        eps recomputed from it (so the two stay consistent with x)."""
        return _x0_eps(self.schedule, model_output, x, t, self.prediction_type, self.clip_x0)

    def __repr__(self) -> str:
        n = "unset" if self.timesteps is None else len(self.timesteps)
        return f"{type(self).__name__}(name={self.name!r}, steps={n})"
