"""The autoencoder's hyper-parameters (a frozen, validated dataclass) and its named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .unet_config import _check_int  # the one integer-field check of the model configs

__all__ = ["AUTOENCODER_PRESETS", "MAX_LEVELS", "AutoencoderConfig"]

#: At most 6 levels, f = 2**5 = 32: the largest downsampling factor Rombach et al. (2022,
#: sec. 4.1, LDM-{1,...,32}) train; beyond it a 64x64 crop has a 1x1 latent.
MAX_LEVELS = 6


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of :class:`AutoencoderKL`. Presets: ``AutoencoderConfig.preset(name)``
    with ``name`` in :data:`AUTOENCODER_PRESETS` (``tiny``, ``cpu``, ``gpu``).

    The defaults are the ``cpu`` preset. Invalid values raise ``ValueError`` naming the field
    and the valid choices.
    """

    in_channels: int = 1  # image channels (grey MRI)
    out_channels: int = 1  # channels of the reconstruction
    base_channels: int = 16  # C: channels of level 0 (full resolution: where the cost sits)
    channel_mult: tuple[int, ...] = (1, 2, 4)  # level i has C * mult[i] channels; f = 2**(L-1)
    num_res_blocks: int = 1  # R: ResBlocks per encoder level (R + 1 per decoder level)
    latent_channels: int = 4  # c: channels of z (the posterior has 2c: mean and logvar)
    attention: bool = False  # self-attention in the middle blocks (costly at 64x64 latents)
    norm_groups: int = 8  # GroupNorm groups; must divide every channel count

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        for name in ("in_channels", "out_channels", "base_channels", "num_res_blocks",
                     "latent_channels", "norm_groups"):
            _check_int(name, getattr(self, name))
        if not self.channel_mult:
            raise ValueError("channel_mult must list at least one level, e.g. (1, 2, 4)")
        for m in self.channel_mult:
            _check_int("each channel_mult entry", m)
        if len(self.channel_mult) > MAX_LEVELS:
            raise ValueError(
                f"channel_mult has {len(self.channel_mult)} levels (f={self.downsampling_factor}); "
                f"at most {MAX_LEVELS} (f={2 ** (MAX_LEVELS - 1)}, the largest factor of Rombach "
                "et al. 2022), e.g. 1 2 4 (f=4) or 1 2 4 4 (f=8)")
        if not isinstance(self.attention, bool):
            raise ValueError(f"attention must be True or False, got {self.attention!r}")
        channels = sorted(set(self.level_channels))
        if any(c % self.norm_groups for c in channels):
            valid = [g for g in range(1, min(channels) + 1) if all(c % g == 0 for c in channels)]
            raise ValueError(f"norm_groups={self.norm_groups} must divide every channel count "
                             f"{channels}; choose one of {valid}")

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def downsampling_factor(self) -> int:
        """f = 2**(levels - 1): a ``H x W`` image has a ``H/f x W/f`` latent."""
        return 2 ** (self.num_levels - 1)

    def latent_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        """``(c, H/f, W/f)`` for an image of ``image_size``; ValueError if f does not divide it."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        f = self.downsampling_factor
        if h % f or w % f:
            raise ValueError(f"image size {h}x{w} must be divisible by f={f}")
        return (self.latent_channels, h // f, w // f)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AutoencoderConfig:
        if name not in AUTOENCODER_PRESETS:
            raise ValueError(f"unknown autoencoder preset {name!r}; choose one of "
                             f"{tuple(AUTOENCODER_PRESETS)}")
        return AUTOENCODER_PRESETS[name].replace(**overrides)

    def replace(self, **overrides: Any) -> AutoencoderConfig:
        fields = tuple(f.name for f in dataclasses.fields(self))
        for key in overrides:
            if key not in fields:
                raise ValueError(f"unknown AutoencoderConfig option {key!r}; choose one of "
                                 f"{fields}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channel_mult": list(self.channel_mult)}


AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    # Tests: f=4, 2 latent channels, 57k parameters; runs on 32x32 inputs in milliseconds.
    "tiny": AutoencoderConfig(base_channels=8, channel_mult=(1, 2, 2), latent_channels=2,
                              norm_groups=4),
    # Laptop CPU at 256x256: f=4, 4 x 64 x 64 latents, 16-32-64 channels, 0.61M parameters.
    # Provisional: chosen from benchmarks/bench_autoencoder.py's cost table; the reconstruction
    # columns of that table decide between f=4 and f=8 once candidates are trained.
    "cpu": AutoencoderConfig(),
    # A GPU: f=8, 4 x 32 x 32 latents, 64-128-256-256 channels, 2 ResBlocks, attention (as the
    # LDM f=8 "kl-f8" models, narrower): 20.3M parameters.
    "gpu": AutoencoderConfig(base_channels=64, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                             attention=True, norm_groups=32),
}


# ---------------------------------------------------------------- the posterior
