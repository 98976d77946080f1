"""Build the parts a config describes: the network, its noise schedule, the whole pipeline.

The one place that turns a :class:`~oasis_lib.config.TrainConfig` into objects, used by the
Trainer (a new run), :func:`oasis_lib.pretrained.load_model` (a saved one) and the notebooks.
"""

from __future__ import annotations

from torch import nn

from ..config import EXTERNAL_ARCH, TrainConfig
from ..diffusion.pipeline import DiffusionPipeline
from ..diffusion.processes import get_noise_process
from ..diffusion.schedule import NoiseSchedule
from ..pretrained_autoencoder import load_autoencoder
from .conditioning import parse_condition
from .simple_unet import SimpleUNet
from .unet import UNet, UNetConfig


def build_model(config: TrainConfig, *, latent_shape: tuple[int, int, int] | None = None
                ) -> nn.Module:
    """The network a config describes: our ``UNet`` preset, or the seed's ``SimpleUNet``.
    For latent diffusion, ``latent_shape`` ``(c, h, w)`` sets its channels and size.
    ``arch="external"`` names a network only its caller can build: refused here."""
    if config.arch == EXTERNAL_ARCH:
        raise ValueError("arch 'external' is a network its caller builds and passes: "
                         "Trainer(config, model=net) to train, load_model(path, model=net) "
                         "to load")
    if config.arch == "simple":
        return SimpleUNet()
    size, channels = config.image_size, {}
    if latent_shape is not None:
        c, size = latent_shape[0], latent_shape[1]
        channels = {"in_channels": c, "out_channels": c}
    ucfg = UNetConfig.preset(config.preset, image_size=size,
                             **{**channels, **condition_overrides(config),
                                **config.unet_overrides})
    return UNet(ucfg)


def condition_overrides(config: TrainConfig) -> dict:
    """The U-Net fields ``config.condition`` sets: each field's ``default_encoding`` (the mask:
    one-hot, ``"onehot"``: the classes are categories, so no false CSF < grey < white order; 4
    channels with the presence flag; the slice: a learned table, ``"learned"``), under its
    ``unet_option`` or in ``extra_conditions``; ``unet_overrides`` may choose others."""
    out: dict = {"mask_encoding": "none", "slice_embedding": "none"}
    extra = []
    for field in parse_condition(config.condition):
        if field.unet_option is not None:
            out[field.unet_option] = field.default_encoding
        else:
            extra.append(f"{field.name}:{field.default_encoding}")
    if extra:
        out["extra_conditions"] = tuple(extra)
    return out


def build_schedule(config: TrainConfig, *, warn: bool = True) -> NoiseSchedule:
    """The noise schedule of ``config.diffusion`` (kind, T, zero terminal SNR)."""
    d = config.diffusion
    return NoiseSchedule(d.schedule, d.timesteps, zero_terminal_snr=d.zero_terminal_snr,
                         warn=warn)


def build_pipeline(config: TrainConfig, *, model: nn.Module | None = None, autoencoder=None,
                   warn: bool = True) -> DiffusionPipeline:
    """The :class:`DiffusionPipeline` of ``config``: a new network (or ``model``), its schedule,
    prediction type, loss and sample shape: ``(1, image_size, image_size)`` in pixel space; the
    autoencoder's latent shape and ``config.latent_scale_factor`` when ``config.autoencoder``
    names one (or ``autoencoder`` passes it, already loaded); the noise process
    ``config.diffusion.noise_process`` names (VP: on :func:`build_schedule`'s schedule)."""
    d = config.diffusion
    if autoencoder is None and config.autoencoder is not None:
        autoencoder = load_autoencoder(config.autoencoder)
    process = get_noise_process(d.noise_process).from_config(d, warn=warn)
    shape = (1, config.image_size, config.image_size)
    scale = 1.0
    if autoencoder is not None:
        shape = autoencoder.config.latent_shape(config.image_size)
        scale = config.latent_scale_factor or 1.0  # None: the Trainer computes it first
    return DiffusionPipeline(
        model=build_model(config, latent_shape=shape if autoencoder is not None else None)
        if model is None else model,
        schedule=getattr(process, "schedule", None) or build_schedule(config, warn=False),
        noise_process=process, prediction_type=d.prediction_type,
        sample_shape=shape, loss_type=d.loss_type, min_snr_gamma=d.min_snr_gamma,
        autoencoder=autoencoder, scale_factor=scale, config=config,
        condition=None if config.condition == "none" else config.condition)
