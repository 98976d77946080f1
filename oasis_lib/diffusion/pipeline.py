"""The diffusion pipeline: the one seam between a trained network and everything that uses it.

A :class:`DiffusionPipeline` joins what a diffusion model is made of and what every caller
used to pass again by hand:

* ``model``: the network, called as ``model(x_t, t)`` only (it holds the weights);
* ``schedule``: the forward process q(x_t | x_0) (a ``NoiseSchedule``; no weights), and
  ``process`` (``noise_process=``): the noise process training and sampling ask
  (:mod:`.processes`; by default the VP process on ``schedule``,
  :class:`~oasis_lib.diffusion.processes.vp.VPProcess`);
* ``prediction_type``: what the network outputs (eps, x0 or v), plus the loss it was trained
  with (``loss_type``, ``min_snr_gamma``);
* ``sample_shape``: the ``(C, H, W)`` of what the network denoises;
* ``autoencoder`` (optional): for latent diffusion (Rombach et al. 2022), an object with
  ``encode(x) -> z`` and ``decode(z) -> x``; the pipeline scales latents by
  ``scale_factor`` so that the diffusion sees unit-variance data. ``None`` means pixel space
  (the identity);
* ``condition`` (optional): the condition spec of a conditional model (issue 12), one of
  ``CONDITIONS`` (``"mask"``, ``"slice"``, ``"mask+slice"``); ``None`` is the unconditional
  model. A conditional pipeline samples with ``condition=Condition(...)`` and a
  classifier-free guidance scale (:class:`~oasis_lib.diffusion.guidance.ClassifierFreeGuidance`,
  s = 1 + w), and :meth:`inpaint` runs RePaint (Lugmayr et al. 2022) with either kind.

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

from ..file_layout import write_model_export
from ..models.conditioning import Condition, get_condition_field, parse_condition
from .guidance import ClassifierFreeGuidance
from .inpainting import repaint, repaint_latent
from .objectives import LOSS_TYPES, diffusion_loss
from .processes.base import NoiseProcess
from .processes.vp import VPProcess
from .respacing import RespacedModel, respace
from .sampling import SampleResult, sample
from .sampling_defaults import SamplingDefaults, resolve_sampling
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
        condition (str or None): which conditions the model takes, one of ``CONDITIONS``
            (``"none"`` is stored as None: the unconditional model). A ``UNet`` must agree
            (its ``mask_encoding`` / ``slice_embedding``).
        config: the run's configuration (``TrainConfig``), kept for saving and display.
        noise_process (NoiseProcess or None): the noise process the loss, the samplers and
            guidance ask (x_t, targets, weights, conversions, times), read as :attr:`process`;
            None: ``VPProcess(schedule)`` (``models.factory.build_pipeline`` builds the one
            ``config`` names). A VP process always runs on ``schedule`` (also after
            ``pipe.schedule = ...``).
        sampling_defaults (SamplingDefaults or None): the sampler and steps ``sample`` uses
            when not told (:mod:`.sampling_defaults`; a model file's, read by ``load_model``
            and written by :meth:`save`); None: the process's default sampler.
        decoder (optional): ``decode(z)`` of unscaled latents that :meth:`decode` uses in place
            of the autoencoder's, e.g. a ``LiteDecoder`` distilled from it (``load_model(FILE,
            decoder=...)`` checks that); :meth:`encode` and :meth:`save` use the autoencoder.
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
    noise_process: NoiseProcess | None = None
    sampling_defaults: SamplingDefaults | None = None
    decoder: Any = None

    def __post_init__(self) -> None:
        self.process.check_prediction_type(self.prediction_type)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; choose one of {LOSS_TYPES}")
        shape = tuple(int(s) for s in self.sample_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"sample_shape must be (C, H, W) of positive sizes, got "
                             f"{self.sample_shape!r}")
        self.sample_shape = shape
        if self.condition == "none":
            self.condition = None
        self.fields = parse_condition(self.condition)  # ValueError for an unknown spec
        cfg = getattr(self.model, "config", None)
        if hasattr(cfg, "condition_encodings"):  # our UNet: its inputs must be the spec's
            if set(cfg.condition_encodings) != {f.name for f in self.fields}:
                raise ValueError(f"condition {self.condition!r} does not match the network "
                                 f"(mask_encoding={cfg.mask_encoding!r}, slice_embedding="
                                 f"{cfg.slice_embedding!r}, extra_conditions="
                                 f"{cfg.extra_conditions!r})")
        if not self.scale_factor > 0:
            raise ValueError(f"scale_factor must be > 0, got {self.scale_factor!r}")
        if self.sampling_defaults is not None:  # its sampler steps this process, its steps fit
            self.sampling_defaults.check(self.process)
        if self.decoder is not None and self.autoencoder is None:
            raise ValueError("a decoder replaces an autoencoder's; this is a pixel-space model")

    @property
    def process(self) -> NoiseProcess:
        """The noise process (``noise_process``; a VP one on the current ``schedule``)."""
        p = self.noise_process
        if p is None or (isinstance(p, VPProcess) and p.schedule is not self.schedule):
            p = self.noise_process = (VPProcess if p is None else type(p))(self.schedule)
        return p

    # ------------------------------------------------------------------ device and mode
    @property
    def device(self) -> torch.device:
        """Where the network's weights are (CPU for a model without parameters)."""
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> DiffusionPipeline:
        """Move the network (autoencoder, decoder) to ``device``; the schedule serves every one."""
        for part in (self.model, self.autoencoder, self.decoder):
            if isinstance(part, nn.Module):
                part.to(device)
        return self

    def eval(self) -> DiffusionPipeline:
        for part in (self.model, self.autoencoder, self.decoder):
            if isinstance(part, nn.Module):
                part.eval()
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
        """The inverse of :meth:`encode`: model space -> pixel images (with :attr:`decoder`
        when set, else the autoencoder's decoder)."""
        if self.autoencoder is None:
            return z
        decoder = self.decoder if self.decoder is not None else self.autoencoder
        return decoder.decode(z / self.scale_factor)

    @property
    def conditional(self) -> bool:
        return self.condition is not None

    def check_condition(self, condition: Condition, n: int | None = None) -> Condition:
        """``condition`` checked against this model (fields it takes, the mask's size against
        :attr:`image_shape`) and, with ``n``, a batch of 1 expanded to ``n``."""
        if not isinstance(condition, Condition):
            raise ValueError("condition must be an oasis_lib.models.conditioning.Condition, got "
                             f"{type(condition).__name__}")
        for name in condition.fields:
            field = get_condition_field(name)
            if field not in self.fields:
                raise ValueError(f"this model is conditioned on {self.condition!r}: it takes no "
                                 f"{field.noun}; drop it")
            field.check_size(condition.values[name], tuple(self.image_shape[-2:]))
        b = condition.batch_size
        if n is not None and b is not None and b != n:
            if b != 1:
                raise ValueError(f"the condition has batch size {b} but {n} images were asked "
                                 "for; give 1 (used for all) or n")
            condition = Condition(**{k: v.expand(n, *v.shape[1:])
                                     for k, v in condition.keywords().items()})
        return condition

    def denoiser(self, model: nn.Module | None = None, *, condition: Condition | None = None,
                 guidance_scale: float | None = None, guidance_rescale: float = 0.0,
                 batch_size: int | None = None, null_ok: bool = False) -> Denoiser:
        """The callable ``(x_t, t)`` the samplers see: the network itself (unconditional), or
        for a conditional model :class:`~oasis_lib.diffusion.guidance.ClassifierFreeGuidance`
        around it: ``u + s (c - u)`` (Ho & Salimans 2022 eq. 6, s = 1 + w; s = 1 is the
        conditional model, s = 0 the unconditional one), ``guidance_rescale`` phi of Lin et al.
        2024 sec. 3.4 applied to the predicted x0.

        A conditional model needs a condition unless ``guidance_scale == 0``, ``null_ok`` (the
        inpainting default) or ``condition=Condition()`` (the null condition) is given."""
        net = self.model if model is None else model
        if self.condition is None:
            if condition is not None and condition.fields:
                raise ValueError("this model is unconditional (trained without a condition): it "
                                 "takes no mask or slice; drop the condition, or load a model "
                                 "trained with --condition")
            if guidance_scale not in (None, 1.0) or guidance_rescale:
                raise ValueError("guidance needs a conditional model; this one is "
                                 "unconditional: drop guidance_scale / guidance_rescale")
            return net
        scale = 1.0 if guidance_scale is None else float(guidance_scale)
        if condition is None:
            if scale != 0.0 and not null_ok:
                raise ValueError(
                    f"this model is conditional ({self.condition}): pass condition=Condition("
                    "mask=..., slice_index=...) (CLI: --mask FILE.png, --slice N); for "
                    "unconditional samples use guidance_scale=0 (CLI: --guidance 0) or the "
                    "null condition condition=Condition()")
            condition = Condition()
        condition = self.check_condition(condition, batch_size)
        if condition.batch_size is None:  # the null condition: one unconditional pass
            scale, guidance_rescale = 1.0, 0.0
        return ClassifierFreeGuidance(net, condition, scale=scale, rescale=guidance_rescale,
                                      schedule=self.schedule, process=self.process,
                                      prediction_type=self.prediction_type)

    # ------------------------------------------------------------------ training
    def loss(self, x0: Tensor, *, model: nn.Module | None = None, t: Tensor | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None,
             encoded: bool = False, condition: Condition | None = None) -> Tensor:
        """The training loss of a batch of clean images (Ho et al. 2020 Algorithm 1, eq. 14).

        ``x0`` is in pixel space and is encoded first (unless ``encoded``, e.g. latents read
        from a cache). ``model`` replaces the pipeline's network for this call (the Trainer
        passes its compiled or data-parallel wrapper, or the EMA copy for validation). ``t``,
        ``noise`` and ``generator`` as in :func:`~oasis_lib.diffusion.objectives.diffusion_loss`.
        ``condition`` (conditional models): the batch's Condition, already ablated and dropped
        out (``models.conditioning.training_condition``); None is the null condition.
        """
        z0 = x0 if encoded else self.encode(x0)
        net = self.model if model is None else model
        if self.condition is not None:
            cond = self.check_condition(Condition() if condition is None else condition)
            net = _with_condition(net, cond)
        elif condition is not None:
            self.denoiser(model, condition=condition)  # raises: unconditional model
        return diffusion_loss(net, self.process, z0,
                              prediction_type=self.prediction_type, loss_type=self.loss_type,
                              min_snr_gamma=self.min_snr_gamma, t=t, noise=noise,
                              generator=generator)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, *, sampler: str | None = None, steps: int | None = None,
               eta: float = 0.0, generator: torch.Generator | None = None,
               return_intermediates: bool = False, every: int = 1, progress: bool = True,
               spacing: str | None = None, clip_x0: bool = True, x_T: Tensor | None = None,
               model: nn.Module | None = None, condition: Condition | None = None,
               guidance_scale: float | None = None, guidance_rescale: float = 0.0,
               **kwargs: Any) -> Tensor | SampleResult:
        """Generate ``n`` images with the reverse process; returns pixel-space images.

        Args:
            n (int): how many images (>= 1).
            sampler (str or None): one of ``SAMPLERS`` that steps the pipeline's process;
                None: :attr:`sampling_defaults`' sampler (a model file's), else the process's
                ``default_sampler`` (``"ddim"`` for VP, ``"flow-euler"`` for rectified flow).
            steps (int or None): network calls; ``None`` = :attr:`sampling_defaults`' steps
                if the sampler is the defaults' own (they never pass to another sampler),
                else the sampler's default (all T for ddpm, which accepts no other value; 50
                for the fast VP samplers, 20 for the flow samplers).
            spacing (str or None): the time grid (the process's ``spacings``); None: the
                defaults' spacing with their own sampler, else the process's default.
            eta (float, default 0): DDIM's stochasticity (only for ``"ddim"``).
            generator (torch.Generator or None): CPU generator of every draw.
            return_intermediates (bool): return the chain as a :class:`SampleResult` (its
                ``xs`` and ``x0s`` are in model space; ``images`` is decoded).
            every, progress, clip_x0, x_T: as in
                :func:`~oasis_lib.diffusion.sampling.sample`.
            model: replaces the pipeline's network for this call (e.g. an EMA copy).
            condition (Condition or None): conditional models only; a batch of 1 or ``n``;
                masks at the pixel size :attr:`image_shape` (pooled to a latent grid).
            guidance_scale (float or None): classifier-free guidance s = 1 + w (None: 1, the
                conditional model; 0: unconditional, no condition needed), see
                :meth:`denoiser`; guidance_rescale (float, default 0): phi in [0, 1].
            **kwargs: further options of :func:`~oasis_lib.diffusion.sampling.sample`.

        Returns:
            images ``[n, C, H, W]`` in [-1, 1] on the pipeline's device, or a SampleResult.
        """
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        net = self.denoiser(model, condition=condition, guidance_scale=guidance_scale,
                            guidance_rescale=guidance_rescale, batch_size=int(n))
        device = next(net.parameters()).device if isinstance(net, nn.Module) and any(
            True for _ in net.parameters()) else self.device
        choice = resolve_sampling(self.sampling_defaults, self.process, sampler, steps, spacing)
        sampler, steps, spacing = choice.sampler, choice.steps, choice.spacing
        out = sample(net, self.process, (int(n), *self.sample_shape), sampler=sampler,
                     steps=steps, eta=eta, prediction_type=self.prediction_type,
                     clip_x0=clip_x0 if self.autoencoder is None else False, spacing=spacing,
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

    def inpaint(self, image: Tensor, region: Tensor, *, jump_length: int = 1, resample: int = 1,
                generator: torch.Generator | None = None, progress: bool = True,
                condition: Condition | None = None, guidance_scale: float | None = None,
                guidance_rescale: float = 0.0, dilation: int = 1, feather: int | None = None,
                model: nn.Module | None = None, steps: int | None = None,
                **kwargs: Any) -> Tensor:
        """Regenerate ``region`` (1 = regenerate, 0 = keep) of pixel ``image`` [B, C, H, W] with
        RePaint (Lugmayr et al. 2022, Algorithm 1: DDPM over all T steps, the known part
        re-noised by q(x_t | x_0) and pasted at every step, ``resample`` passes over every
        ``jump_length`` steps). Latent models: :func:`~oasis_lib.diffusion.inpainting.
        repaint_latent` (the region brought to the latent grid and dilated by ``dilation``
        cells, the decode pasted back with a ``feather``-pixel ramp; exact outside it).

        Any model: a conditional one inpaints unconditionally unless ``condition`` (and
        ``guidance_scale``) are given. ``steps`` (None: all T) runs the DDPM of RePaint on that
        many respaced steps (:mod:`~oasis_lib.diffusion.respacing`; jump_length counts those).
        Returns images equal to ``image`` outside the region (pixel models: exactly; latent
        models: beyond the feather ring)."""
        if not self.process.supports_repaint:
            raise ValueError(f"RePaint runs DDPM steps of the VP process; this pipeline's "
                             f"process is {self.process.name!r}")
        if image.ndim != 4 or tuple(image.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"expected image of shape [B, {', '.join(map(str, self.image_shape))}"
                             f"], got {tuple(image.shape)}")
        net = self.denoiser(model, condition=condition, guidance_scale=guidance_scale,
                            guidance_rescale=guidance_rescale, batch_size=len(image), null_ok=True)
        params = next(net.parameters(), None) if isinstance(net, nn.Module) else None
        device = params.device if params is not None else self.device
        opts = dict(jump_length=jump_length, resample=resample, generator=generator,
                    prediction_type=self.prediction_type, progress=progress, device=device,
                    **kwargs)
        image = image.to(device)
        schedule = self.schedule
        if steps is not None and steps != schedule.T:
            schedule = respace(schedule, steps)
            net = RespacedModel(net, schedule.timestep_map)
        if self.autoencoder is None:
            return repaint(net, schedule, image, region, clip_x0=True, **opts)
        out = repaint_latent(net, schedule, image, region, encode=self.encode,
                             decode=self.decode, dilation=dilation, feather=feather,
                             clip_x0=False, **opts)
        return out.clamp(-1, 1)

    def __repr__(self) -> str:
        space = "pixel" if self.autoencoder is None else f"latent (scale {self.scale_factor:.4g})"
        cond = f", conditioned on {self.condition}" if self.condition else ""
        process = (f"{self.schedule.kind} T={self.schedule.T}" if self.process.name == "vp"
                   else self.process.name)
        return (f"DiffusionPipeline({type(self.model).__name__}, {process}, "
                f"predicts {self.prediction_type}, sample shape "
                f"{self.sample_shape}, {space} space{cond})")

    # ------------------------------------------------------------------ saving
    def save(self, path, *, dtype: torch.dtype = torch.float16):
        """Write the network's weights and the run's config to one safetensors file that
        :func:`oasis_lib.pretrained.load_model` reads (fp16 by default); a latent pipeline's
        autoencoder goes inside the same file (:mod:`oasis_lib.file_layout`), and so do its
        :attr:`sampling_defaults`."""
        if self.config is None:
            raise ValueError("this pipeline has no config to save with its weights; build it "
                             "with oasis_lib.models.factory.build_pipeline(config)")
        defaults = self.sampling_defaults
        return write_model_export(path, self.model.state_dict(), self.config.to_dict(),
                                  autoencoder=self.autoencoder, scale_factor=self.scale_factor,
                                  dtype=dtype,
                                  sampling_defaults=defaults and defaults.to_dict())


def _with_condition(net: Callable[..., Tensor], condition: Condition) -> Denoiser:
    """``(x, t) -> net(x, t, condition)`` with the condition on x's device (the training loss)."""
    def call(x: Tensor, t: Tensor) -> Tensor:
        return net(x, t, condition.to(x.device))
    return call
