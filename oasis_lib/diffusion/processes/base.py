"""The noise process: what training and sampling ask of the forward (noising) process.

A diffusion model is a network plus a *process* that turns data x0 into noisy x_t and back.
The process owns every question whose answer depends on the kind of process (VP diffusion of
Ho et al. 2020, rectified flow / flow matching of Liu et al. 2023 and Lipman et al. 2023, ...):

* the training draw of t (:meth:`NoiseProcess.sample_time`, Algorithm 1 of Ho et al. 2020
  line 3) and its inverse CDF for keyed draws (:meth:`NoiseProcess.time_from_uniform`);
* the forward draw x_t = :meth:`NoiseProcess.forward` (x0, t, noise);
* what the network is trained to output (:meth:`NoiseProcess.training_target`) and each
  sample's loss weight (:meth:`NoiseProcess.loss_weight`, e.g. min-SNR, Hang et al. 2023);
* the conversions between the network's output and (x0, eps) (:meth:`NoiseProcess.split_output`
  and its inverse :meth:`NoiseProcess.to_output`);
* the sampling time grid (:meth:`NoiseProcess.sampling_times`), the prior x_T is drawn from
  (:meth:`NoiseProcess.prior`) and the time tensor the network is called with
  (:meth:`NoiseProcess.time_batch`);
* the one fixed validation grid (:meth:`NoiseProcess.validation_draws`).

Time is whatever the process says: ``discrete_time`` processes use long indices ``0..T-1``
(VP), continuous ones float times (flow matching: t in [0, 1], t = 0 data, t = 1 noise).
:func:`~oasis_lib.diffusion.objectives.diffusion_loss`, the sampling loop, guidance's rescale
and the Trainer's validation only talk to this interface.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor


class NoiseProcess:
    """Base class of every noise process (one subclass per process, found by name in
    :mod:`~oasis_lib.diffusion.processes.registry`).

    Class attributes (a subclass sets those that differ):
        name (str): what ``DiffusionConfig.noise_process`` calls it.
        prediction_types (tuple of str): the network outputs it can train and convert.
        discrete_time (bool): t is a long index in ``0..T-1`` (True) or a float (False).
        supports_repaint (bool): RePaint's re-noising between DDPM steps applies
            (:mod:`~oasis_lib.diffusion.inpainting`).
        default_sampler (str): the sampler ``pipe.sample`` and the training grids use when
            none is named.

    A subclass implements :meth:`sample_time` / :meth:`time_from_uniform`, :meth:`forward`,
    :meth:`training_target`, :meth:`split_output`, :meth:`to_output` and
    :meth:`sampling_times`; the rest has defaults.
    """

    name: ClassVar[str] = ""
    prediction_types: ClassVar[tuple[str, ...]] = ()
    discrete_time: ClassVar[bool] = True
    supports_repaint: ClassVar[bool] = False
    default_sampler: ClassVar[str] = ""

    @classmethod
    def from_config(cls, diffusion: Any, *, warn: bool = True) -> NoiseProcess:
        """The process a ``DiffusionConfig`` describes (``models.factory.build_pipeline``)."""
        raise NotImplementedError(f"{cls.__name__} must implement from_config()")

    def check_prediction_type(self, prediction_type: str) -> None:
        """ValueError unless this process trains and converts ``prediction_type``."""
        if prediction_type not in self.prediction_types:
            raise ValueError(f"unknown prediction_type {prediction_type!r} for the "
                             f"{self.name} process; choose one of {self.prediction_types}")

    # ------------------------------------------------------------------ time
    def sample_time(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """The training draw of t for ``n`` images (CPU), from ``generator``."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample_time()")

    def time_from_uniform(self, u: Tensor) -> Tensor:
        """t from uniforms ``u`` in [0, 1) (float64 [n]): the inverse CDF of the training
        time distribution, for draws keyed per image (:mod:`oasis_lib.training.draws`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement time_from_uniform()")

    def as_time(self, t: Tensor, device: torch.device | str) -> Tensor:
        """``t`` on ``device`` in the process's time dtype (long or float32)."""
        return t.to(device=device, dtype=torch.long if self.discrete_time else torch.float32)

    def time_batch(self, t: int | float, n: int, device: torch.device | str) -> Tensor:
        """The tensor [n] of one sampling time, as the network is called with it."""
        dtype = torch.long if self.discrete_time else torch.float32
        return torch.full((n,), t, device=device, dtype=dtype)

    # ------------------------------------------------------------------ training
    def forward(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t, the forward draw at time ``t`` with ``noise`` ~ N(0, I)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor, *,
                        prediction_type: str) -> Tensor:
        """What the network should output for x_t = forward(x0, t, noise)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_target()")

    def loss_weight(self, t: Tensor, *, prediction_type: str,
                    min_snr_gamma: float | None = None) -> Tensor | None:
        """Each sample's loss weight, float32 [B] on t's device, or None (unweighted).
        The base process knows no weighting: ``min_snr_gamma`` must be None."""
        if min_snr_gamma is not None:
            raise ValueError(f"min_snr_gamma is not defined for the {self.name} process; "
                             "set it to None")
        return None

    # ------------------------------------------------------------------ conversions
    def split_output(self, output: Tensor, x_t: Tensor, t: Tensor | int | float, *,
                     prediction_type: str) -> tuple[Tensor, Tensor]:
        """(x0, eps) from the network's ``output`` at (x_t, t)."""
        raise NotImplementedError(f"{type(self).__name__} must implement split_output()")

    def to_x0(self, output: Tensor, x_t: Tensor, t: Tensor | int | float, *,
              prediction_type: str) -> Tensor:
        """x0 from the network's output (first half of :meth:`split_output`)."""
        return self.split_output(output, x_t, t, prediction_type=prediction_type)[0]

    def to_eps(self, output: Tensor, x_t: Tensor, t: Tensor | int | float, *,
               prediction_type: str) -> Tensor:
        """eps from the network's output (second half of :meth:`split_output`)."""
        return self.split_output(output, x_t, t, prediction_type=prediction_type)[1]

    def to_output(self, x0: Tensor, x_t: Tensor, t: Tensor | int | float, *,
                  prediction_type: str) -> Tensor:
        """The network output that corresponds to ``x0`` at (x_t, t): the inverse of
        :meth:`to_x0` (guidance rescale works on x0 and goes back with it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement to_output()")

    # ------------------------------------------------------------------ sampling
    #: The sampling grids this process knows (``spacing=`` of its samplers) and its default.
    spacings: tuple[str, ...] = ()
    default_spacing: str | None = None

    def resolve_spacing(self, spacing: str | None) -> str:
        """``spacing``, or the process's ``default_spacing`` for None; a name the process does
        not know is a ValueError listing its ``spacings``."""
        if spacing is None:
            return self.default_spacing
        if spacing not in self.spacings:
            raise ValueError(f"unknown spacing {spacing!r} for the {self.name} process; "
                             f"choose one of {self.spacings}")
        return spacing

    def sampling_times(self, steps: int, *, spacing: str | None = None) -> list[int | float]:
        """The descending times of a ``steps``-step sampler, noise first; after the last one
        the chain reaches the data. ``spacing``: one of :attr:`spacings` (None: the default)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sampling_times()")

    def prior(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None
              ) -> Tensor:
        """x_T, where sampling starts: N(0, I), drawn on the CPU in float32 from
        ``generator`` (the caller moves it), so a seed gives the same draw on every device."""
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)

    # ------------------------------------------------------------------ validation
    def validation_draws(self, shape: tuple[int, ...], *, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Fixed (t, noise) for a validation batch of ``shape``: the midpoints of B equal
        parts of the time distribution (:meth:`time_from_uniform` of (i + 1/2) / B), so each
        batch covers low and high noise alike, and noise from a CPU generator seeded
        ``seed``. Re-create them with the same seed every epoch."""
        b = shape[0]
        t = self.time_from_uniform((torch.arange(b, dtype=torch.float64) + 0.5) / b)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float32)
        return t, noise

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
