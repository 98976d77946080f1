"""The U-Net's hyper-parameters as a validated, frozen dataclass, and its named presets.

Kept apart from the network (:mod:`oasis_lib.models.unet`) so that the configuration layer
(:mod:`oasis_lib.config`) and the CLI can list presets without building a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .fields.mask import MASK_ENCODINGS
from .fields.registry import CONDITION_FIELDS, get_condition_field
from .fields.slice_level import SLICE_EMBEDDINGS

__all__ = ["UNET_MASK_ENCODINGS", "UNET_PRESETS", "UNET_SLICE_EMBEDDINGS", "UNetConfig"]

#: ``UNetConfig.mask_encoding``: "none" (no mask input) or an encoding of ``encode_mask``.
UNET_MASK_ENCODINGS = ("none", *MASK_ENCODINGS)
#: ``UNetConfig.slice_embedding``: "none" (no slice input) or a ``SliceEmbedding`` kind.
UNET_SLICE_EMBEDDINGS = ("none", *SLICE_EMBEDDINGS)


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`. Presets: ``UNetConfig.preset("tiny" | "cpu" | "gpu")``.

    The defaults are the ``cpu`` preset: 64x64 images, 4,056,193 parameters. Options are
    validated on creation (``ValueError`` naming the option and the valid values).

    ``attention_resolutions`` are turned into *levels* using ``image_size`` (level ``i`` has
    resolution ``image_size / 2**i``); a model fed another size keeps attention at those levels.
    The middle block always has attention, as in DDPM.
    """

    image_size: int = 64  # nominal input size; decides which levels get attention
    in_channels: int = 1  # channels of x_t (1 for MRI)
    out_channels: int = 1  # channels of the prediction (eps, x0 or v: same shape as x_t)
    cond_channels: int = 0  # extra channels concatenated to x_t; forward then needs `cond`
    base_channels: int = 32  # C: channels of level 0 (and size of the sinusoidal embedding)
    channel_mult: tuple[int, ...] = (1, 1, 2, 4)  # level i has C * mult[i] channels
    num_res_blocks: int = 2  # R: ResBlocks per level going down (R + 1 going up, as DDPM)
    attention_resolutions: tuple[int, ...] = (16,)  # resolutions (pixels) with self-attention
    num_heads: int = 4  # attention heads (ignored when head_dim is set)
    head_dim: int | None = None  # if set: heads = channels // head_dim at each attention
    dropout: float = 0.0  # dropout inside ResBlocks (DDPM used 0.1 on CIFAR-10)
    norm_groups: int = 8  # GroupNorm groups; must divide every channel count
    time_embed_dim: int | None = None  # E; None means 4 * base_channels
    # --- conditions (issue 12); "none" keeps the unconditional network and its state-dict keys
    mask_encoding: str = "none"  # none | onehot | scalar: the tissue mask enters conv_in as
    #   mask_channels(encoding) extra channels (classes + a presence channel for the null mask)
    slice_embedding: str = "none"  # none | learned | sinusoidal: a SliceEmbedding (null index
    #   32 = no slice) added to the time embedding
    extra_conditions: tuple[str, ...] = ()  # other registered condition fields, "name:encoding"
    #   (models.fields; e.g. ("age:linear",)): their channels or embeddings, as the field says

    def __post_init__(self) -> None:
        # accept lists (e.g. from JSON); frozen dataclass, hence object.__setattr__
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "extra_conditions", tuple(self.extra_conditions))
        for name in ("image_size", "in_channels", "out_channels", "base_channels",
                     "num_res_blocks", "num_heads", "norm_groups"):
            _check_int(name, getattr(self, name))
        _check_int("cond_channels", self.cond_channels, minimum=0)
        if self.time_embed_dim is not None:
            _check_int("time_embed_dim", self.time_embed_dim)
        if self.head_dim is not None:
            _check_int("head_dim", self.head_dim)
        if not self.channel_mult:
            raise ValueError("channel_mult must list at least one level, e.g. (1, 2, 4, 4)")
        for m in self.channel_mult:
            _check_int("each channel_mult entry", m)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name, valid in (("mask_encoding", UNET_MASK_ENCODINGS),
                            ("slice_embedding", UNET_SLICE_EMBEDDINGS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {valid}")
        self._check_extra_conditions()
        if self.mask_encoding != "none" and self.cond_channels:
            raise ValueError("mask_encoding sets the mask's input channels itself; leave "
                             f"cond_channels at 0 (got {self.cond_channels})")

        factor = 2 ** (self.num_levels - 1)
        if self.image_size % factor:
            below = self.image_size // factor * factor
            valid = [v for v in (below, below + factor) if v > 0]
            raise ValueError(
                f"image_size={self.image_size} must be divisible by {factor} = 2**(levels-1) "
                f"for {self.num_levels} levels (channel_mult={self.channel_mult}); "
                f"the nearest valid sizes are {valid}"
            )
        reached = self.resolutions
        for r in self.attention_resolutions:
            if r not in reached:
                raise ValueError(
                    f"attention_resolutions contains {r!r}, a resolution never reached with "
                    f"image_size={self.image_size} and channel_mult={self.channel_mult}; "
                    f"choose from {reached}"
                )
        channels = sorted({self.base_channels, *self.level_channels})
        if any(c % self.norm_groups for c in channels):
            valid = [g for g in range(1, min(channels) + 1) if all(c % g == 0 for c in channels)]
            raise ValueError(
                f"norm_groups={self.norm_groups} must divide every channel count {channels}; "
                f"choose one of {valid}"
            )
        attn_channels = {self.level_channels[-1]}  # the middle block always has attention
        levels = zip(self.level_channels, self.level_attention, strict=True)
        attn_channels |= {c for c, a in levels if a}
        for c in sorted(attn_channels):
            self.heads_for(c)  # raises ValueError if heads do not divide c

    def _check_extra_conditions(self) -> None:
        seen = set()
        for entry in self.extra_conditions:
            name, sep, encoding = str(entry).partition(":")
            field = get_condition_field(name)  # ValueError listing the registered fields
            if field.unet_option is not None:
                raise ValueError(f"condition field {name!r} is set by {field.unet_option}, not "
                                 "extra_conditions")
            if not sep or name in seen:
                raise ValueError(f"extra_conditions entries are distinct 'name:encoding', got "
                                 f"{entry!r}")
            field.check_encoding(encoding)
            seen.add(name)

    # --- derived quantities -------------------------------------------------------------------
    @property
    def condition_encodings(self) -> dict[str, str]:
        """Field name -> encoding of every condition field the network takes, in registry
        order (the mask, the slice, then ``extra_conditions``)."""
        chosen = {f.name: getattr(self, f.unet_option) for f in CONDITION_FIELDS.values()
                  if f.unet_option is not None}
        chosen.update(entry.split(":", 1) for entry in self.extra_conditions)
        return {name: chosen[name] for name in CONDITION_FIELDS
                if chosen.get(name, "none") != "none"}

    @property
    def condition_channels(self) -> int:
        """Input channels the condition fields add to x_t (0 without a channels field)."""
        return sum(get_condition_field(name).channels(enc)
                   for name, enc in self.condition_encodings.items()
                   if get_condition_field(name).kind == "channels")

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Resolution (pixels) of each level for an ``image_size`` input."""
        return tuple(self.image_size // 2**i for i in range(self.num_levels))

    @property
    def level_attention(self) -> tuple[bool, ...]:
        return tuple(r in self.attention_resolutions for r in self.resolutions)

    @property
    def mask_input_channels(self) -> int:
        """Input channels of the mask encoding (0 without a mask)."""
        return 0 if self.mask_encoding == "none" else get_condition_field("mask").channels(
            self.mask_encoding)

    @property
    def conditional(self) -> bool:
        """True when the network takes a condition field (a ``Condition``)."""
        return bool(self.condition_encodings)

    @property
    def temb_dim(self) -> int:
        return self.time_embed_dim or 4 * self.base_channels

    def heads_for(self, channels: int) -> int:
        """Number of attention heads for a block with ``channels`` channels."""
        if self.head_dim is not None:
            if channels % self.head_dim:
                raise ValueError(
                    f"head_dim={self.head_dim} must divide the attention channels {channels}"
                )
            return channels // self.head_dim
        if channels % self.num_heads:
            valid = [h for h in range(1, channels + 1) if channels % h == 0 and h <= 16]
            raise ValueError(
                f"num_heads={self.num_heads} must divide the attention channels {channels}; "
                f"choose one of {valid}"
            )
        return self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides: object) -> UNetConfig:
        """A copy of ``UNET_PRESETS[name]`` with ``overrides`` applied (validated again).

        Overriding ``image_size`` alone keeps attention on the preset's *levels* (its
        ``attention_resolutions`` are rescaled), so the network and its parameters do not change:
        ``preset("tiny", image_size=64)`` has attention at 16x16 instead of 8x8.
        """
        if name not in UNET_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {tuple(UNET_PRESETS)}")
        base = UNET_PRESETS[name]
        size = overrides.get("image_size")
        if "attention_resolutions" not in overrides and isinstance(size, int) and size > 0:
            levels = [i for i, a in enumerate(base.level_attention) if a]
            overrides["attention_resolutions"] = tuple(size // 2**i for i in levels)
        return base.replace(**overrides)

    def replace(self, **overrides: object) -> UNetConfig:
        fields = tuple(f.name for f in dataclasses.fields(self))
        for key in overrides:
            if key not in fields:
                raise ValueError(f"unknown UNetConfig option {key!r}; choose one of {fields}")
        return dataclasses.replace(self, **overrides)


UNET_PRESETS: dict[str, UNetConfig] = {
    # Tests and CI: 0.30M parameters, 32x32 (also runs at 64x64: then attention is at 16x16).
    "tiny": UNetConfig(image_size=32, base_channels=16, channel_mult=(1, 2, 2),
                       num_res_blocks=1, attention_resolutions=(8,)),
    # The default: 64x64 on a laptop CPU (channels 32-32-64-128), 4.06M parameters.
    "cpu": UNetConfig(),
    # 128x128 on a real GPU: 30.3M parameters (64-128-128-256-256), attention at 16x16
    # and 8x8 with 64-dim heads, dropout 0.1, 32 norm groups (as DDPM).
    "gpu": UNetConfig(image_size=128, base_channels=64, channel_mult=(1, 2, 2, 4, 4),
                      num_res_blocks=2, attention_resolutions=(16, 8), dropout=0.1,
                      norm_groups=32, head_dim=64),
}
