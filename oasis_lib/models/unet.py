"""The denoising U-Net ``eps_theta(x_t, t)`` of DDPM (Ho et al. 2020, appendix B), with the
improvements of Nichol & Dhariwal 2021 (scale-shift time conditioning, multi-head attention).

The layout follows DDPM's reference code, guided-diffusion and diffusers' ``UNet2DModel``::

    t -> sinusoidal(C) -> Linear(C, E) -> SiLU -> Linear(E, E) = temb (fed to every ResBlock)

    x -> conv_in 3x3                                         push h (every arrow "push" is a skip)
      level 0:    R x [ResBlock (+ Attn)]        push h after each, then Downsample, push h
      level 1:    R x [ResBlock (+ Attn)]        push h after each, then Downsample, push h
      ...
      level L-1:  R x [ResBlock (+ Attn)]        push h after each
      middle:     ResBlock -> Attn -> ResBlock
      level L-1:  (R+1) x [cat(h, pop) -> ResBlock (+ Attn)], then Upsample
      ...
      level 0:    (R+1) x [cat(h, pop) -> ResBlock (+ Attn)]
      out:        GroupNorm -> SiLU -> conv 3x3 -> [B, out_channels, H, W]

``C = base_channels``, ``E = time_embed_dim`` (4C), level ``i`` has ``C * channel_mult[i]``
channels at resolution ``image_size / 2**i``; ``R = num_res_blocks``. Every ResBlock is
``GroupNorm ─ SiLU ─ conv3x3 ─ GroupNorm * (1 + scale) + shift ─ SiLU ─ dropout ─ conv3x3`` plus
a (1x1 conv) skip, where ``(scale, shift) = Linear(SiLU(temb))`` (FiLM; improved DDPM). The last
conv of every ResBlock, the output projection of every attention block and ``conv_out`` start at
zero, so each block starts as the identity and the untrained network predicts exactly 0.

Shapes of the default ("cpu") preset for one 64x64 image (``UNet().describe()`` lists them all)::

    time embedding            [1, 128]
    conv_in                   [1,  32, 64, 64]
    down 0 (2 ResBlocks)      [1,  32, 64, 64]  -> Downsample [1,  32, 32, 32]
    down 1 (2 ResBlocks)      [1,  32, 32, 32]  -> Downsample [1,  32, 16, 16]
    down 2 (2 ResBlock+Attn)  [1,  64, 16, 16]  -> Downsample [1,  64,  8,  8]
    down 3 (2 ResBlocks)      [1, 128,  8,  8]
    middle (Res, Attn, Res)   [1, 128,  8,  8]
    up 3 (3 ResBlocks)        [1, 128,  8,  8]  -> Upsample   [1, 128, 16, 16]
    up 2 (3 ResBlock+Attn)    [1,  64, 16, 16]  -> Upsample   [1,  64, 32, 32]
    up 1 (3 ResBlocks)        [1,  32, 32, 32]  -> Upsample   [1,  32, 64, 64]
    up 0 (3 ResBlocks)        [1,  32, 64, 64]
    conv_out                  [1,   1, 64, 64]

Why 32-32-64-128 and not the more usual 32-64-128-128 (the first prototype): the cost of a
U-Net sits in its high-resolution levels; with 64 channels at 32x32, level 1's up path and the
upsampling convs into 32x32 and 64x64 were a third of the FLOPs. Keeping level 1 at 32 channels
halves the cost (2.2 instead of 4.4 GFLOP forward per 64x64 image) for 4.1M instead of 6.6M
parameters, and nearly doubles the training speed on a 2-core CPU (fp32, ``channels_last``:
about 14 instead of 8 images/s at batch 16, measured with other jobs on the cores; see
``benchmarks/bench_models.py``). ``UNet(channel_mult=(1, 2, 4, 4))`` gives the wider net.

The network is fully convolutional: it runs on any size divisible by ``2**(levels-1)``;
``image_size`` only fixes which *levels* get attention. No Python branch depends on tensor
values, so the model works with ``torch.compile`` and ``channels_last``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .condition_encoding import field_inputs
from .conditioning import Condition
from .embeddings import sinusoidal_embedding
from .fields.registry import get_condition_field
from .unet_config import UNET_PRESETS, UNetConfig

__all__ = ["UNET_PRESETS", "UNet", "UNetConfig", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


class ResBlock(nn.Module):
    """Residual block with FiLM time conditioning (improved DDPM, appendix A)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(temb_dim, 2 * out_ch)  # -> (scale, shift)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as (skip of) the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over ``[B, heads, N, d]`` (Vaswani et al. 2017, eq. 1).

    Under CPU autocast the product runs in fp32 (q, k, v cast up, autocast off around it):
    torch's bf16 CPU flash-attention backward was slower than its fp32 one on the AVX512-BF16
    machine of benchmarks/results/profile_step.md, where this made the ``cpu`` preset's
    attention layers ~40% faster (and the product exact to fp32). Elsewhere (CUDA's bf16/fp16
    flash kernels; no autocast) the call is left as it is."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention over the ``H*W`` pixels, with a residual connection."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # free if channels_last
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).unbind(2)
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # [B, HW, c]
        return x + out.view(b, h, w, c).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the down or up path: ResBlocks, optional attention, resampling."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module], resample: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)
        self.resample = resample


class UNet(nn.Module):
    """DDPM U-Net predicting a tensor shaped like ``x`` from ``(x_t, t)``.

    Args:
        config: a :class:`UNetConfig`, a preset name (``"tiny"``, ``"cpu"``, ``"gpu"``) or None
            for the ``cpu`` preset.
        **overrides: fields of :class:`UNetConfig` to change, e.g. ``UNet(dropout=0.1)``.
    """

    def __init__(self, config: UNetConfig | str | None = None, **overrides: object):
        super().__init__()
        if config is None:
            config = "cpu"
        if isinstance(config, str):
            config = UNetConfig.preset(config)
        config = config.replace(**overrides) if overrides else config
        self.config = cfg = config
        groups, temb, drop = cfg.norm_groups, cfg.temb_dim, cfg.dropout

        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.base_channels, temb), nn.SiLU(), nn.Linear(temb, temb)
        )
        # Condition fields: an embedding field's module (e.g. slice_embed) is added to the time
        # embedding; only when the field is used, so unconditional state dicts are unchanged.
        self.embedded_fields = tuple(
            name for name in cfg.condition_encodings
            if get_condition_field(name).kind == "embedding")
        for name in self.embedded_fields:
            field = get_condition_field(name)
            self.add_module(field.module_name,
                            field.embedding(temb, cfg.condition_encodings[name]))
        extra = cfg.cond_channels + cfg.condition_channels
        self.conv_in = nn.Conv2d(cfg.in_channels + extra, cfg.base_channels, 3, padding=1)

        # Down path: remember the channels of every pushed skip.
        skip_chans, ch = [cfg.base_channels], cfg.base_channels
        self.down = nn.ModuleList()
        levels = zip(cfg.level_channels, cfg.level_attention, strict=True)
        for i, (out_ch, attn) in enumerate(levels):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, out_ch, temb, groups, drop))
                attns.append(Attention(out_ch, cfg.heads_for(out_ch), groups) if attn
                             else nn.Identity())
                ch = out_ch
                skip_chans.append(ch)
            last = i == cfg.num_levels - 1
            self.down.append(Level(blocks, attns, nn.Identity() if last else Downsample(ch)))
            if not last:
                skip_chans.append(ch)

        self.mid_block1 = ResBlock(ch, ch, temb, groups, drop)
        self.mid_attn = Attention(ch, cfg.heads_for(ch), groups)
        self.mid_block2 = ResBlock(ch, ch, temb, groups, drop)

        # Up path: self.up[i] is level i (same index as self.down[i]); it runs deepest first.
        up_levels = []
        for i in reversed(range(cfg.num_levels)):
            out_ch, attn = cfg.level_channels[i], cfg.level_attention[i]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(ch + skip_chans.pop(), out_ch, temb, groups, drop))
                attns.append(Attention(out_ch, cfg.heads_for(out_ch), groups) if attn
                             else nn.Identity())
                ch = out_ch
            up_levels.append(Level(blocks, attns, Upsample(ch) if i > 0 else nn.Identity()))
        assert not skip_chans
        self.up = nn.ModuleList(reversed(up_levels))

        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained model predicts exactly 0
        nn.init.zeros_(self.conv_out.bias)

    def _check_inputs(self, x: torch.Tensor, t, cond):
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected x of shape [B, in_channels={cfg.in_channels}, H, W], "
                             f"got {tuple(x.shape)}")
        factor = 2 ** (cfg.num_levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"H and W must be divisible by {factor} ({cfg.num_levels} levels), "
                             f"got {tuple(x.shape[-2:])}")
        inputs = {}
        if cfg.conditional:  # a Condition; None or absent fields: the null condition
            if cond is not None and not isinstance(cond, Condition):
                raise ValueError(f"this UNet takes a Condition ({cfg.condition_encodings}), "
                                 f"got {type(cond).__name__}")
            inputs = field_inputs(cond, x, cfg.condition_encodings)
            channels = [inputs[n] for n in inputs if n not in self.embedded_fields]
            if channels:
                x = torch.cat([x, *channels], dim=1)
        elif isinstance(cond, Condition):
            raise ValueError("a Condition was given, but this UNet is unconditional "
                             "(mask_encoding and slice_embedding are 'none', no "
                             "extra_conditions)")
        elif cfg.cond_channels:
            if cond is None:
                raise ValueError(f"this UNet has cond_channels={cfg.cond_channels}: pass cond")
            if cond.shape[1] != cfg.cond_channels or cond.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"expected cond of shape [B, cond_channels={cfg.cond_channels}"
                                 f", {x.shape[-2]}, {x.shape[-1]}], got {tuple(cond.shape)}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("cond given, but this UNet has cond_channels=0")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(1).expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [B]=[{x.shape[0]}] or be a scalar, "
                             f"got {tuple(t.shape)}")
        return x, t, inputs

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | float,
                cond: torch.Tensor | Condition | None = None) -> torch.Tensor:
        """``x``: ``[B, in_channels, H, W]``; ``t``: ``[B]`` long or float (or a scalar);
        ``cond``: raw channels ``[B, cond_channels, H, W]`` iff ``cond_channels > 0``, or, for a
        conditional network (``mask_encoding`` / ``slice_embedding`` / ``extra_conditions``
        set), a :class:`~oasis_lib.models.conditioning.Condition` whose channels fields (the
        mask, pixel or latent grid) are encoded, pooled to x's grid and concatenated to x (Konz
        et al. 2024), and whose embedding fields (the slice token) are embedded and added to
        the time embedding (as class labels in Ho & Salimans 2022); None or an absent field is
        the null condition (:func:`~oasis_lib.models.condition_encoding.field_inputs`). Returns
        ``[B, out_channels, H, W]``."""
        x, t, inputs = self._check_inputs(x, t, cond)
        temb = self.time_mlp(sinusoidal_embedding(t, self.config.base_channels).to(x.dtype))
        for name in self.embedded_fields:  # e.g. the slice level's embedding
            module = getattr(self, get_condition_field(name).module_name)
            temb = temb + module(inputs[name]).to(temb.dtype)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(h, temb))
                skips.append(h)
            if not isinstance(level.resample, nn.Identity):
                h = level.resample(h)
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)

        for i in range(len(self.up) - 1, -1, -1):
            level = self.up[i]
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), temb))
            h = level.resample(h)

        return self.conv_out(F.silu(self.norm_out(h)))

    @torch.no_grad()
    def describe(self, x_shape: tuple[int, ...] | None = None) -> list[tuple[str, tuple]]:
        """Run one zero input through the net and return ``(module name, output shape)`` for the
        time embedding, ``conv_in``, every ResBlock / attention / resampling layer, the middle
        and ``conv_out``, in execution order. ``x_shape`` defaults to one ``image_size`` image."""
        cfg = self.config
        if x_shape is None:
            x_shape = (1, cfg.in_channels, cfg.image_size, cfg.image_size)
        records: list[tuple[str, tuple]] = []
        kinds = (ResBlock, Attention, Downsample, Upsample)
        hooks = []
        for name, module in self.named_modules():
            if isinstance(module, kinds) or name in ("time_mlp", "conv_in", "conv_out"):
                hooks.append(module.register_forward_hook(
                    lambda _m, _i, out, name=name: records.append((name, tuple(out.shape)))))
        param = next(self.parameters())
        x = torch.zeros(x_shape, device=param.device, dtype=param.dtype)
        cond = None
        if cfg.cond_channels:
            cond = torch.zeros(x_shape[0], cfg.cond_channels, *x_shape[2:], device=param.device)
        was_training = self.training
        try:
            self.eval()
            self(x, torch.zeros(x_shape[0], dtype=torch.long, device=param.device), cond)
        finally:
            self.train(was_training)
            for hook in hooks:
                hook.remove()
        return records
