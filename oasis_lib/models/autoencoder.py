"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, sec. 3 and app. G).

An encoder ``E`` maps an image ``x [B, 1, H, W]`` in [-1, 1] to a diagonal Gaussian posterior
``q(z | x) = N(mu(x), diag(sigma(x)^2))`` over latents ``z [B, c, H/f, W/f]``; a decoder ``D``
maps ``z`` back to an image. Trained with a reconstruction loss plus a *tiny* KL term towards
N(0, I) (LDM uses 1e-6): the KL keeps the latent space from drifting to arbitrary scales, but is
far too weak to make it a standard normal, which is why the diffusion model multiplies the latents
by :func:`estimate_scale_factor` (``scale_factor``, 1 / std) before noising them.

The layout (the design of LDM's ``Encoder``/``Decoder``, written for this project)::

    encoder:  conv_in 3x3 -> level 0: R x ResBlock -> Downsample (3x3, stride 2)
                          -> level 1: R x ResBlock -> Downsample ...
                          -> level L-1: R x ResBlock
              middle: ResBlock (-> Attention) -> ResBlock
              GroupNorm -> SiLU -> conv 3x3 -> 2c channels = (mean, logvar)
    decoder:  conv_in 3x3 (c -> ch[L-1]) -> middle: ResBlock (-> Attention) -> ResBlock
              level L-1: (R + 1) x ResBlock -> Upsample (nearest x2, conv 3x3 to ch[L-2]) ...
              level 0: (R + 1) x ResBlock -> GroupNorm -> SiLU -> conv 3x3 -> out_channels

ResBlock = ``GroupNorm - SiLU - conv3x3 - GroupNorm - SiLU - conv3x3`` plus a (1x1) skip. f =
2**(L-1). Two choices differ from LDM, both for CPU cost: the decoder's upsampling conv already
maps to the finer level's (smaller) channel count, so no full-width conv runs at the finest
resolution, and LDM's 1x1 ``quant_conv``/``post_quant_conv`` are dropped (a 1x1 conv next to a
3x3 conv adds nothing the 3x3 cannot learn). No tanh or clamp on the output: the samplers clamp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder_config import AUTOENCODER_PRESETS, AutoencoderConfig

__all__ = ["AUTOENCODER_PRESETS", "AutoencoderConfig", "AutoencoderKL", "DiagonalGaussian",
           "estimate_scale_factor"]

LOGVAR_RANGE = (-30.0, 20.0)  # LDM clamps the log-variance to this range (exp stays finite)
SCALE_USES = ("mean", "sample")


class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` per latent element: the encoder's posterior q(z | x).

    ``logvar`` is clamped to [-30, 20] as in LDM, so ``std = exp(logvar / 2)`` stays finite.
    Tensors keep the shape ``[B, c, h, w]`` of the latents.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        """From the encoder's ``[B, 2c, h, w]`` output: the first c channels are the mean."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z = mean + std * eps``, eps ~ N(0, I) drawn on the CPU (with ``generator`` if
        given) and moved to the device: the same draw on every device (reparameterisation
        trick, Kingma & Welling 2014, eq. 10)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=torch.float32)
        return self.mean + self.std * eps.to(self.mean.device, self.mean.dtype)

    def mode(self) -> torch.Tensor:
        """The most likely latent: the mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """``KL(q || N(0, I)) = 1/2 sum (mean^2 + var - 1 - logvar)`` over all latent elements
        of each item (Kingma & Welling 2014, appendix B): float ``[B]``."""
        terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)


# ---------------------------------------------------------------- building blocks
class ResBlock(nn.Module):
    """``GroupNorm - SiLU - conv3x3 - GroupNorm - SiLU - conv3x3`` plus a (1x1) skip."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the ``h*w`` positions, with a residual connection."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _middle(ch: int, cfg: AutoencoderConfig) -> nn.Sequential:
    attn = [Attention(ch, cfg.norm_groups)] if cfg.attention else []
    return nn.Sequential(ResBlock(ch, ch, cfg.norm_groups), *attn,
                         ResBlock(ch, ch, cfg.norm_groups))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        chans, g = cfg.level_channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        ch = chans[0]
        for i, out_ch in enumerate(chans):
            layers: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, out_ch, g))
                ch = out_ch
            if i < cfg.num_levels - 1:
                layers.append(Downsample(ch))
            self.down.append(nn.Sequential(*layers))
        self.mid = _middle(ch, cfg)
        self.norm_out = nn.GroupNorm(g, ch)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        chans, g = cfg.level_channels, cfg.norm_groups
        ch = chans[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = _middle(ch, cfg)
        levels = []
        for i in reversed(range(cfg.num_levels)):  # deepest first; self.up[i] is level i
            layers: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResBlock(ch, chans[i], g))
                ch = chans[i]
            if i > 0:
                layers.append(Upsample(ch, chans[i - 1]))
                ch = chans[i - 1]
            levels.append(nn.Sequential(*layers))
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = nn.GroupNorm(g, ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------- the autoencoder
class AutoencoderKL(nn.Module):
    """KL autoencoder: ``encode(x) -> DiagonalGaussian``, ``decode(z) -> image``.

    Args:
        config: an :class:`AutoencoderConfig`, a preset name or None (the ``cpu`` preset).
        **overrides: fields of :class:`AutoencoderConfig` to change.

    ``scale_factor`` (a float32 scalar buffer, saved in the state dict, 1.0 until set) is the
    factor the diffusion model multiplies latents by (LDM's ``scale_factor``): set it with
    ``ae.scale_factor.fill_(estimate_scale_factor(ae, train_images))`` after training. It is
    not applied by :meth:`encode` or :meth:`decode`; ``decode`` expects *unscaled* latents.
    """

    def __init__(self, config: AutoencoderConfig | str | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None or isinstance(config, str):
            config = AutoencoderConfig.preset(config or "cpu")
        self.config = config.replace(**overrides) if overrides else config
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    @property
    def downsampling_factor(self) -> int:
        return self.config.downsampling_factor

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"expected {what} [B, {channels}, H, W], got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior q(z | x) of images ``[B, in_channels, H, W]`` (H, W divisible by f)."""
        self._check(x, self.config.in_channels, "images")
        f = self.downsampling_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by f={f}")
        return DiagonalGaussian.from_moments(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, out_channels, h*f, w*f]`` from unscaled latents ``[B, c, h, w]``."""
        self._check(z, self.config.latent_channels, "latents")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, *, sample_posterior: bool = True,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """``(decode(z), posterior)`` with z sampled from the posterior (training) or, with
        ``sample_posterior=False``, its mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    @torch.no_grad()
    def describe(self, x_shape: tuple[int, ...] = (1, 1, 256, 256)) -> list[tuple[str, tuple]]:
        """``(module name, output shape)`` of conv_in, every level, the middle, the posterior
        moments and the decoder's levels, in execution order, for one zero input."""
        names = ("encoder.conv_in", "encoder.mid", "encoder.conv_out", "decoder.conv_in",
                 "decoder.mid", "decoder.conv_out")
        records: list[tuple[str, tuple]] = []
        hooks = []
        for name, module in self.named_modules():
            if name in names or (name.count(".") == 2 and name.split(".")[1] in ("down", "up")):
                hooks.append(module.register_forward_hook(
                    lambda _m, _i, out, name=name: records.append((name, tuple(out.shape)))))
        param = next(self.parameters())
        try:
            self.decode(self.encode(torch.zeros(x_shape, device=param.device,
                                                dtype=param.dtype)).mode())
        finally:
            for hook in hooks:
                hook.remove()
        return records


def _batches(images_or_iterable) -> Iterable[torch.Tensor]:
    if isinstance(images_or_iterable, torch.Tensor):
        yield images_or_iterable
        return
    for batch in images_or_iterable:
        yield batch[0] if isinstance(batch, list | tuple) else batch  # (image, mask) pairs


@torch.no_grad()
def estimate_scale_factor(autoencoder: AutoencoderKL, images_or_iterable, *, use: str = "mean",
                          generator: torch.Generator | None = None,
                          max_batches: int | None = None) -> float:
    """``1 / std`` of the latents of some training images (LDM's ``scale_by_std``).

    The noise schedule assumes unit-variance data: ``x_t = sqrt(alpha_bar) x_0 + sqrt(1 -
    alpha_bar) eps`` (eq. 4 of Ho et al. 2020) has a signal-to-noise ratio ``alpha_bar / (1 -
    alpha_bar)`` only if ``Var(x_0) = 1``. With the tiny KL weight the latents' std is whatever
    the encoder settled on (Stable Diffusion's f=8 autoencoder: about 5.5, hence its factor
    0.18215), which would multiply every intermediate SNR by ``Var(z)`` (the final x_T stays
    noise: ``sqrt(alpha_bar_T)`` is tiny); this factor restores unit variance. As in LDM only
    the scale is corrected, not the mean.

    Args:
        autoencoder: the trained :class:`AutoencoderKL` (run in eval mode, no gradients).
        images_or_iterable: images ``[N, 1, H, W]`` in [-1, 1], or an iterable of such batches
            (or of ``(image, mask)`` pairs, as a DataLoader yields).
        use: ``"mean"`` (the posterior mean, what :mod:`oasis_lib.data.latent_cache` stores) or
            ``"sample"`` (a posterior draw, as LDM does).
        generator: CPU generator for ``use="sample"``.
        max_batches: stop after this many batches of an iterable (LDM uses the first one).

    Returns the float ``1 / std`` over every latent element (unbiased std, float64 sums).
    """
    if use not in SCALE_USES:
        raise ValueError(f"unknown use {use!r}; choose one of {SCALE_USES}")
    was_training = autoencoder.training
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    total = total_sq = 0.0
    count = 0
    try:
        for i, x in enumerate(_batches(images_or_iterable)):
            if max_batches is not None and i >= max_batches:
                break
            posterior = autoencoder.encode(x.to(device, torch.float32))
            z = (posterior.sample(generator) if use == "sample" else posterior.mode()).double()
            total += float(z.sum())
            total_sq += float(z.pow(2).sum())
            count += z.numel()
    finally:
        autoencoder.train(was_training)
    if count < 2:
        raise ValueError("estimate_scale_factor needs at least one image")
    var = (total_sq - total * total / count) / (count - 1)
    if not var > 0 or not math.isfinite(var):
        raise ValueError(f"the latents have variance {var}; is the autoencoder trained?")
    return 1.0 / math.sqrt(var)
