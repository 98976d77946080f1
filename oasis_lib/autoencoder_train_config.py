"""Training the latent autoencoder: its run config (:class:`AutoencoderTrainConfig`, a
:class:`~oasis_lib.run_config.RunConfig`), the weights of its loss terms
(:class:`AutoencoderLossConfig`) and its named presets (:data:`AUTOENCODER_TRAIN_PRESETS`).
Also importable from :mod:`oasis_lib.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .config_knobs import Knob, knob
from .models.autoencoder_config import AUTOENCODER_PRESETS, AutoencoderConfig
from .models.discriminator import check_patch_size
from .run_config import RunConfig, _choice

PERCEPTUAL_NETS = ("segmenter", "lpips", "none")


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """Weights of the terms of :func:`oasis_lib.training.ae_losses.autoencoder_loss` (0 switches
    a term off)."""

    l1: float = 1.0  # mean absolute error per pixel (LDM's reconstruction term)
    ssim: float = 0.2  # 1 - SSIM: local structure and contrast, which L1 underweights
    kl: float = 1e-6  # KL per pixel, as LDM's 1e-6 (only keeps the latent scale in check)
    perceptual: float = 0.1  # feature-space distance (segmenter features or LPIPS)
    adversarial: float = knob(  # hinge GAN with a PatchDiscriminator; off on CPU
        0.0, flag=True, help="weight of the patch adversarial term (LDM: 0.5; 0 = off)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"loss weight {f.name} must be a number >= 0, got {value!r}")


@dataclass
class AutoencoderTrainConfig(RunConfig):
    """Training the latent autoencoder (Rombach et al. 2022, sec. 3): random crops of the
    native slices (the network is convolutional, so crops make CPU training affordable),
    validated on whole slices. Presets: :data:`AUTOENCODER_TRAIN_PRESETS`."""

    preset: str = knob(  # autoencoder preset: tiny | cpu | gpu (models.autoencoder)
        "cpu", flag=True, choices=tuple(AUTOENCODER_PRESETS),
        help="default cpu; on --resume: the run's")
    autoencoder_overrides: dict[str, Any] = knob(  # AutoencoderConfig fields, e.g.
        #   latent_channels (two of them have flags)
        default_factory=dict, entries={
            "latent_channels": Knob(flag=True, parse=int, help="channels of the latent"),
            "channel_mult": Knob(flag=True, parse=int, nargs="+", help=(
                "width multipliers per level; f = 2**(levels-1), e.g. 1 2 4 (f=4)"))})
    crop_size: int | None = knob(  # None: whole slices
        64, flag=True, help="side of the random training crops")
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    perceptual_net: str = "segmenter"  # segmenter (ours, shipped) | lpips (a local file) | none
    perceptual_weights: str | None = None  # None: the shipped segmenter; lpips: required
    sample_n: int = knob(8, resume="safe")  # validate slices drawn over their reconstructions
    #   in the progress grids
    # The patch discriminator, used when loss.adversarial > 0 (models.discriminator):
    disc_start: int = knob(  # optimiser step at which the adversarial term and D's training
        #   start
        0, flag=True, help="optimiser step at which the adversarial term starts")
    disc_lr: float | None = None  # D's Adam learning rate (betas 0.5, 0.9 as LDM); None: lr
    disc_channels: int = 32  # channels of D's first conv (pix2pix: 64)
    disc_layers: int = 3  # D's stride-2 convs: 3 gives one logit per 70x70 patch
    init_from: str | None = knob(  # a trained autoencoder's (EMA) weights, e.g. to add D
        None, flag=True, metavar="FILE",
        help="start from a trained autoencoder (run .pt or export), e.g. to add D")

    def validate(self) -> None:
        super().validate()
        _choice("preset", self.preset, tuple(AUTOENCODER_PRESETS))
        _choice("perceptual_net", self.perceptual_net, PERCEPTUAL_NETS)
        if self.perceptual_net == "lpips" and not self.perceptual_weights:
            raise ValueError("perceptual_net 'lpips' needs perceptual_weights (a local LPIPS "
                             "weights file); nothing is downloaded")
        if self.perceptual_net == "none" and self.loss.perceptual > 0:
            raise ValueError("perceptual_net 'none' needs loss.perceptual = 0")
        f = AutoencoderConfig.preset(self.preset, **self.autoencoder_overrides).downsampling_factor
        for name in ("image_size", "crop_size"):
            size = getattr(self, name)
            if size is not None and (size < f or size % f):
                raise ValueError(f"{name} must be a multiple of the downsampling factor f={f}, "
                                 f"got {size}")
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} exceeds image_size {self.image_size}")
        if not isinstance(self.disc_start, int) or self.disc_start < 0:
            raise ValueError(f"disc_start must be an int >= 0, got {self.disc_start!r}")
        if self.disc_lr is not None and not self.disc_lr > 0:
            raise ValueError(f"disc_lr must be > 0 (or None: the lr), got {self.disc_lr!r}")
        if self.loss.adversarial > 0:  # D sees the crops
            check_patch_size(self.crop_size or self.image_size, self.disc_layers)

    @classmethod
    def presets(cls) -> dict[str, AutoencoderTrainConfig]:
        return AUTOENCODER_TRAIN_PRESETS


AUTOENCODER_TRAIN_PRESETS: dict[str, AutoencoderTrainConfig] = {
    # Seconds: tests and CI (the tiny autoencoder on 32x32 slices, 16x16 crops); fp32 pinned
    # as for the diffusion tiny preset.
    "tiny": AutoencoderTrainConfig(preset="tiny", image_size=32, crop_size=16, epochs=1,
                                   batch_size=8, warmup_steps=10, checkpoint_every=20,
                                   val_size=16, sample_n=4, ema_decay=0.99, lr=1e-3,
                                   precision="fp32",
                                   loss=AutoencoderLossConfig(perceptual=0.0),
                                   perceptual_net="none", out_dir="runs/ae_tiny"),
    # A laptop CPU: native 256x256 slices, 64x64 crops, validated on 64 whole slices.
    "cpu": AutoencoderTrainConfig(preset="cpu", image_size=256, crop_size=64, epochs=20,
                                  batch_size=16, lr=1e-3, warmup_steps=100, val_size=64,
                                  ema_decay=0.999, out_dir="runs/ae"),
    # A real GPU: 128x128 crops, the larger autoencoder.
    "gpu": AutoencoderTrainConfig(preset="gpu", image_size=256, crop_size=128, epochs=100,
                                  batch_size=32, lr=4.5e-6 * 32, warmup_steps=1000,
                                  checkpoint_every=1000, val_size=256, ema_decay=0.9999,
                                  out_dir="runs/ae_gpu"),
}
