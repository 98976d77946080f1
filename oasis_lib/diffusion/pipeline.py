"""The diffusion pipeline: the one seam between a trained network and everything that uses it.

A :class:`DiffusionPipeline` joins what a diffusion model is made of and what every caller
used to pass again by hand:

* ``model``: the network, called as ``model(x_t, t)`` only (it holds the weights);
* ``schedule``: the forward process q(x_t | x_0) (a ``NoiseSchedule``; no weights);
* ``prediction_type``: what the network outputs (eps, x0 or v), plus the loss it was trained
  with (``loss_type``, ``min_snr_gamma``);
* ``sample_shape``: the ``(C, H, W)`` of what the network denoises;
* ``autoencoder`` (optional): for latent diffusion (Rombach et al. 2022), an object with
  ``encode(x) -> z`` and ``decode(z) -> x``; the pipeline scales latents by
  ``scale_factor`` so that the diffusion sees unit-variance data. ``None`` means pixel space
  (the identity);
* ``condition`` (optional): reserved for conditional generation (tissue masks, slice level);
  ``None`` is the unconditional model.

Training and sampling both go through it: the Trainer calls :meth:`loss`, and notebooks, the
CLI, evaluation and the demo call :meth:`sample`. The samplers keep their contract: they see
only a callable ``(x, t)``. The design follows the idea of diffusers' ``DDPMPipeline`` and
MONAI's ``DiffusionInferer`` / ``LatentDiffusionInferer`` (which only adds encode, decode and a
scale factor); the code is our own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .objectives import LOSS_TYPES, check_prediction_type, diffusion_loss
from .sampling import SampleResult, sample
from .schedule import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass
class DiffusionPipeline:
    """Network + schedule + prediction type + sample shape (+ autoencoder, + condition).

    Args:
        model (nn.Module): the denoising network, ``model(x_t, t) -> output`` of x_t's shape.
        schedule (NoiseSchedule): the noise schedule the model was trained with.
        prediction_type (str): ``"eps"``, ``"x0"`` or ``"v"``.
        sample_shape (tuple): ``(C, H, W)`` of the network's input (latent shape when an
            autoencoder is set, image shape otherwise).
        loss_type (str, default ``"mse"``), min_snr_gamma (float or None): the training loss.
        autoencoder (optional): ``encode(x) -> z`` and ``decode(z) -> x``; ``None`` = pixels.
        scale_factor (float, default 1): latents are multiplied by this after encoding and
            divided by it before decoding (LDM's ``scale_by_std``: 1 / std of the latents).
        condition: reserved for conditional generation; must be ``None`` for now.
        config: the run's configuration (``TrainConfig``), kept for saving and display.
    """

    model: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    sample_shape: tuple[int, int, int]
    loss_type: str = "mse"
    min_snr_gamma: float | None = None
    autoencoder: Any = None
    scale_factor: float = 1.0
    condition: Any = None
    config: Any = None

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction_type)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; choose one of {LOSS_TYPES}")
        shape = tuple(int(s) for s in self.sample_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"sample_shape must be (C, H, W) of positive sizes, got "
                             f"{self.sample_shape!r}")
        self.sample_shape = shape
        if self.condition is not None:
            raise ValueError("conditional pipelines are not implemented yet; condition must be "
                             "None")
        if not self.scale_factor > 0:
            raise ValueError(f"scale_factor must be > 0, got {self.scale_factor!r}")

    # ------------------------------------------------------------------ device and mode
    @property
    def device(self) -> torch.device:
        """Where the network's weights are (CPU for a model without parameters)."""
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> DiffusionPipeline:
        """Move the network (and autoencoder) to ``device``; the schedule serves every device."""
        self.model.to(device)
        if isinstance(self.autoencoder, nn.Module):
            self.autoencoder.to(device)
        return self

    def eval(self) -> DiffusionPipeline:
        self.model.eval()
        if isinstance(self.autoencoder, nn.Module):
            self.autoencoder.eval()
        return self

    # ------------------------------------------------------------------ pixel <-> model space
    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of the images the pipeline returns (pixel space)."""
        if self.autoencoder is None:
            return self.sample_shape
        with torch.no_grad():
            z = torch.zeros(1, *self.sample_shape, device=self.device)
            return tuple(self.autoencoder.decode(z).shape[1:])

    def encode(self, images: Tensor) -> Tensor:
        """Pixel images -> what the network denoises (``scale_factor * z``; identity in pixels)."""
        if self.autoencoder is None:
            return images
        z = self.autoencoder.encode(images)
        if not isinstance(z, Tensor):  # a KL autoencoder's posterior: take its mean
            z = z.mode()
        return z * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        """The inverse of :meth:`encode`: model space -> pixel images."""
        if self.autoencoder is None:
            return z
        return self.autoencoder.decode(z / self.scale_factor)

    def denoiser(self, model: nn.Module | None = None) -> Denoiser:
        """The callable ``(x_t, t)`` the samplers and the loss see (the network, unconditional)."""
        return self.model if model is None else model

    # ------------------------------------------------------------------ training
    def loss(self, x0: Tensor, *, model: nn.Module | None = None, t: Tensor | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None,
             encoded: bool = False) -> Tensor:
        """The training loss of a batch of clean images (Ho et al. 2020 Algorithm 1, eq. 14).

        ``x0`` is in pixel space and is encoded first (unless ``encoded``, e.g. latents read
        from a cache). ``model`` replaces the pipeline's network for this call (the Trainer
        passes its compiled or data-parallel wrapper, or the EMA copy for validation). ``t``,
        ``noise`` and ``generator`` as in :func:`~oasis_lib.diffusion.objectives.diffusion_loss`.
        """
        z0 = x0 if encoded else self.encode(x0)
        return diffusion_loss(self.denoiser(model), self.schedule, z0,
                              prediction_type=self.prediction_type, loss_type=self.loss_type,
                              min_snr_gamma=self.min_snr_gamma, t=t, noise=noise,
                              generator=generator)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, *, sampler: str = "ddim", steps: int | None = None,
               eta: float = 0.0, generator: torch.Generator | None = None,
               return_intermediates: bool = False, every: int = 1, progress: bool = True,
               spacing: str = "trailing", clip_x0: bool = True, x_T: Tensor | None = None,
               model: nn.Module | None = None, **kwargs: Any) -> Tensor | SampleResult:
        """Generate ``n`` images with the reverse process; returns pixel-space images.

        Args:
            n (int): how many images (>= 1).
            sampler (str, default ``"ddim"``): one of ``SAMPLERS``.
            steps (int or None): network calls; ``None`` = the sampler's default (all T for
                ddpm, which accepts no other value; 50 for the fast samplers).
            eta (float, default 0): DDIM's stochasticity (only for ``"ddim"``).
            generator (torch.Generator or None): CPU generator of every draw.
            return_intermediates (bool): return the chain as a :class:`SampleResult` (its
                ``xs`` and ``x0s`` are in model space; ``images`` is decoded).
            every, progress, spacing, clip_x0, x_T: as in
                :func:`~oasis_lib.diffusion.sampling.sample`.
            model: replaces the pipeline's network for this call (e.g. an EMA copy).
            **kwargs: further options of :func:`~oasis_lib.diffusion.sampling.sample`.

        Returns:
            images ``[n, C, H, W]`` in [-1, 1] on the pipeline's device, or a SampleResult.
        """
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        net = self.denoiser(model)
        device = next(net.parameters()).device if isinstance(net, nn.Module) and any(
            True for _ in net.parameters()) else self.device
        out = sample(net, self.schedule, (int(n), *self.sample_shape), sampler=sampler,
                     steps=steps, eta=eta, prediction_type=self.prediction_type,
                     clip_x0=clip_x0 and self.autoencoder is None, spacing=spacing,
                     generator=generator, device=device, x_T=x_T,
                     return_intermediates=return_intermediates, every=every,
                     progress=progress, **kwargs)
        if self.autoencoder is None:
            return out
        with torch.no_grad():
            if isinstance(out, SampleResult):
                out.images = self.decode(out.images).clamp(-1, 1)
                return out
            return self.decode(out).clamp(-1, 1)

    def __repr__(self) -> str:
        space = "pixel" if self.autoencoder is None else f"latent (scale {self.scale_factor:.4g})"
        return (f"DiffusionPipeline({type(self.model).__name__}, {self.schedule.kind} "
                f"T={self.schedule.T}, predicts {self.prediction_type}, sample shape "
                f"{self.sample_shape}, {space} space)")

    # ------------------------------------------------------------------ saving
    def save(self, path, *, dtype: torch.dtype = torch.float16):
        """Write the network's weights and the run's config to one safetensors file that
        :func:`oasis_lib.pretrained.load_model` reads (fp16 by default)."""
        from ..checkpoint import export_safetensors

        if self.config is None:
            raise ValueError("this pipeline has no config to save with its weights; build it "
                             "with oasis_lib.models.factory.build_pipeline(config)")
        state = dict(self.model.state_dict())
        config = self.config.to_dict()
        if self.autoencoder is not None:  # one file carries both networks
            state |= {f"autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()}
            config |= {"autoencoder": None, "latent_scale_factor": self.scale_factor,
                       "autoencoder_config": self.autoencoder.config.to_dict()}
        return export_safetensors(state, path, config=config, dtype=dtype)
