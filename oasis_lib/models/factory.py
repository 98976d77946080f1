"""Build the parts a config describes: the network, its noise schedule, the whole pipeline.

The one place that turns a :class:`~oasis_lib.config.TrainConfig` into objects, used by the
Trainer (a new run), :func:`oasis_lib.pretrained.load_model` (a saved one) and the notebooks.
"""

from __future__ import annotations

from torch import nn

from ..config import TrainConfig
from ..diffusion.pipeline import DiffusionPipeline
from ..diffusion.schedule import NoiseSchedule
from .simple_unet import SimpleUNet
from .unet import UNet, UNetConfig


def build_model(config: TrainConfig) -> nn.Module:
    """The network a config describes: our ``UNet`` preset, or the seed's ``SimpleUNet``."""
    if config.arch == "simple":
        return SimpleUNet()
    ucfg = UNetConfig.preset(config.preset, image_size=config.image_size,
                             **config.unet_overrides)
    return UNet(ucfg)


def build_schedule(config: TrainConfig, *, warn: bool = True) -> NoiseSchedule:
    """The noise schedule of ``config.diffusion`` (kind, T, zero terminal SNR)."""
    d = config.diffusion
    return NoiseSchedule(d.schedule, d.timesteps, zero_terminal_snr=d.zero_terminal_snr,
                         warn=warn)


def build_pipeline(config: TrainConfig, *, model: nn.Module | None = None,
                   warn: bool = True) -> DiffusionPipeline:
    """The :class:`DiffusionPipeline` of ``config``: a new network (or ``model``), its schedule,
    prediction type, loss and sample shape ``(1, image_size, image_size)``."""
    d = config.diffusion
    return DiffusionPipeline(
        model=build_model(config) if model is None else model,
        schedule=build_schedule(config, warn=warn), prediction_type=d.prediction_type,
        sample_shape=(1, config.image_size, config.image_size), loss_type=d.loss_type,
        min_snr_gamma=d.min_snr_gamma, config=config)
