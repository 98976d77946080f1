"""A light decoder distilled from the autoencoder's: the same latents, a fraction of the cost.

At 1-2 sampling steps the autoencoder's decoder is most of the time of a sample (about 6 GFLOP
per 256x256 slice, with GroupNorm and SiLU on 16-channel maps at full resolution). TAESD (Bohan
2023, "Tiny AutoEncoder for Stable Diffusion", github.com/madebyollin/taesd) shows the way out:
a tiny plain-conv decoder (ReLU, no normalisation) that reads the same latents (TAESD trains it
adversarially, against real images). This one is written for our f = 4 latents and a CPU, and
trained more simply: to reproduce the large decoder's images from the same latents.

    z (unscaled) * latent_scale -> conv 3x3 (c -> ch[0]) -> ReLU
    level i (h 2**i x w 2**i): blocks[i] x Block(ch[i])
        -> conv 3x3 (ch[i] -> 4 ch[i+1]) -> PixelShuffle(2) -> ReLU      (i < L-1)
        -> conv 3x3 (ch[i] -> 4 out)     -> PixelShuffle(2)              (i = L-1)

Block = ``conv3x3 - ReLU - conv3x3`` plus the identity, then ReLU. Every level upsamples with a
sub-pixel convolution (Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using
an Efficient Sub-Pixel Convolutional Neural Network"): the conv runs at the *coarse* resolution,
so no conv runs at 256x256 at all; its weights start ICNR-initialised (Aitken et al. 2017,
"Checkerboard artifact free sub-pixel convolution"), i.e. as a conv at the coarse resolution
followed by nearest-neighbour upsampling ("convolution NN resize"), which starts without
checkerboard artefacts. f = 2**L.

It is trained by :mod:`oasis_lib.training.decoder_distill` and used in place of the
autoencoder's decoder by :class:`oasis_lib.diffusion.pipeline.DiffusionPipeline` (``decoder``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .unet_config import _check_int  # the one integer-field check of the model configs

__all__ = ["LITE_DECODER_PRESETS", "LiteDecoder", "LiteDecoderConfig", "conv_gflops"]


@dataclass(frozen=True)
class LiteDecoderConfig:
    """Hyper-parameters of :class:`LiteDecoder`; presets ``LiteDecoderConfig.preset(name)``
    (:data:`LITE_DECODER_PRESETS`). Invalid values raise ``ValueError``."""

    latent_channels: int = 4  # c: channels of z (the autoencoder's)
    out_channels: int = 1  # image channels
    channels: tuple[int, ...] = (48, 24)  # width per level, coarsest first; f = 2**len
    blocks: tuple[int, ...] = (2, 2)  # Blocks per level

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        for name in ("latent_channels", "out_channels"):
            _check_int(name, getattr(self, name))
        if not self.channels or len(self.channels) != len(self.blocks):
            raise ValueError(f"channels {self.channels} and blocks {self.blocks} must list the "
                             "same number (>= 1) of levels, e.g. channels 48 24, blocks 2 2")
        for c in self.channels:
            _check_int("each channels entry", c)
        for b in self.blocks:
            if isinstance(b, bool) or not isinstance(b, int) or b < 0:
                raise ValueError(f"each blocks entry must be an int >= 0, got {b!r}")

    @property
    def downsampling_factor(self) -> int:
        """f = 2**levels: a ``c x h x w`` latent becomes a ``h f x w f`` image."""
        return 2 ** len(self.channels)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LiteDecoderConfig:
        if name not in LITE_DECODER_PRESETS:
            raise ValueError(f"unknown lite decoder preset {name!r}; choose one of "
                             f"{tuple(LITE_DECODER_PRESETS)}")
        return LITE_DECODER_PRESETS[name].replace(**overrides)

    def replace(self, **overrides: Any) -> LiteDecoderConfig:
        fields = tuple(f.name for f in dataclasses.fields(self))
        for key in overrides:
            if key not in fields:
                raise ValueError(f"unknown LiteDecoderConfig option {key!r}; choose one of "
                                 f"{fields}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels),
                "blocks": list(self.blocks)}


LITE_DECODER_PRESETS: dict[str, LiteDecoderConfig] = {
    # Tests: f = 4, 2 latent channels (the tiny autoencoder's), a few thousand parameters.
    "tiny": LiteDecoderConfig(latent_channels=2, channels=(8, 8), blocks=(1, 1)),
    # The CPU autoencoder's f = 4, 4-channel latents: about 1.7 GFLOP per 256x256 slice,
    # against 6.1 for its decoder (conv_gflops).
    "cpu": LiteDecoderConfig(),
    # Wider, for a GPU or for sharper images: about 9.6 GFLOP per slice, more than the full
    # decoder's 6.1, but without normalisation layers.
    "gpu": LiteDecoderConfig(channels=(96, 48), blocks=(3, 3)),
}


class Block(nn.Module):
    """``conv3x3 - ReLU - conv3x3`` plus the identity, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


def icnr_(conv: nn.Conv2d, scale: int = 2) -> None:
    """ICNR (Aitken et al. 2017): the ``scale**2`` output channels that PixelShuffle puts side
    by side start as copies, so conv + PixelShuffle starts as conv + nearest upsampling."""
    out, *rest = conv.weight.shape
    sub = torch.empty(out // scale ** 2, *rest)
    nn.init.kaiming_uniform_(sub, a=5 ** 0.5)  # nn.Conv2d's own initialisation
    with torch.no_grad():
        conv.weight.copy_(sub.repeat_interleave(scale ** 2, dim=0))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[::scale ** 2].repeat_interleave(scale ** 2))


class LiteDecoder(nn.Module):
    """``decode(z) -> image`` from *unscaled* latents, as ``AutoencoderKL.decode``.

    Args:
        config: a :class:`LiteDecoderConfig`, a preset name or None (``cpu``).
        latent_scale: a factor the input is multiplied by, stored as a buffer; the trainer
            passes the autoencoder's ``scale_factor`` buffer (1 / std of its latents when set;
            1.0 for ``demo_ae256``, whose latent models carry the factor instead).
    """

    def __init__(self, config: LiteDecoderConfig | str | None = None, *,
                 latent_scale: float = 1.0, **overrides: Any) -> None:
        super().__init__()
        if config is None or isinstance(config, str):
            config = LiteDecoderConfig.preset(config or "cpu")
        self.config = cfg = config.replace(**overrides) if overrides else config
        self.register_buffer("latent_scale", torch.tensor(float(latent_scale)))
        ch = cfg.channels
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList(nn.Sequential(*[Block(c) for _ in range(n)])
                                    for c, n in zip(ch, cfg.blocks, strict=True))
        outs = [4 * c for c in ch[1:]] + [4 * cfg.out_channels]
        self.up = nn.ModuleList(nn.Conv2d(c, o, 3, padding=1) for c, o in zip(ch, outs,
                                                                               strict=True))
        for conv in self.up:
            icnr_(conv)

    @property
    def downsampling_factor(self) -> int:
        return self.config.downsampling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, out_channels, h f, w f]`` from unscaled latents ``[B, c, h, w]``."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents [B, {self.config.latent_channels}, h, w], got "
                             f"{tuple(z.shape)}")
        h = F.relu(self.conv_in(z * self.latent_scale.to(z.dtype)))
        last = len(self.levels) - 1
        for i, (level, up) in enumerate(zip(self.levels, self.up, strict=True)):
            h = F.pixel_shuffle(up(level(h)), 2)
            if i < last:
                h = F.relu(h)
        return h

    forward = decode


def conv_gflops(module: nn.Module, x: torch.Tensor, call=None) -> float:
    """GFLOP (2 x multiply-adds) of the convolutions one call runs on ``x`` (counted with
    forward hooks: ``2 * C_in/groups * k_h * k_w * numel(output)`` per conv, biases left out);
    ``call(module, x)`` defaults to ``module(x)``. Normalisations and activations are not
    counted: they are memory-bound, so their cost shows in time, not here."""
    total = [0]

    def hook(m, _inputs, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * k * out.numel()

    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            (call or (lambda mod, inp: mod(inp)))(module, x)
    finally:
        for h in hooks:
            h.remove()
    return total[0] / 1e9
