"""What a sampler pays: GFLOP of one network call, counted, in pixel and in latent space.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on one real forward pass (one
multiply-add = 2 FLOP). Convolutions, matmuls and the two products of self-attention
(``Q K^T`` and the weighted sum of ``V``: ``4 N^2 d`` FLOP for ``N`` positions of ``d``
channels) are counted; element-wise operations such as GroupNorm, SiLU and the softmax are not,
so the totals are slight underestimates of the work. torch's counter has no formula for the
CPU kernel of ``scaled_dot_product_attention``, so :func:`forward_gflop` adds torch's own
attention formula for it; without it every attention block would count as free.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..models.unet import UNet
from ..models.unet_config import UNetConfig

__all__ = ["by_resolution", "diffusion_cost_rows", "forward_gflop"]


def _sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOP of ``softmax(Q K^T / sqrt(d)) V`` (torch's formula for its GPU kernels)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# the CPU attention kernel, missing from torch's flop registry
_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flop}


@torch.no_grad()
def forward_gflop(module: nn.Module, *inputs: torch.Tensor) -> float:
    """GFLOP of ``module(*inputs)`` (one forward pass, counted as it runs)."""
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)
    with counter:
        module(*inputs)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def by_resolution(module: nn.Module, *inputs: torch.Tensor) -> dict[int | None, tuple[int, float]]:
    """Parameters and forward GFLOP of ``module(*inputs)`` by the side of the feature map where
    they act: ``{side: (parameters, gflop)}``. Each submodule counts its own parameters and the
    FLOPs of its own forward, less those of its children, at the side of its output; one with a
    vector output (a time projection) counts at the side of the nearest enclosing submodule with
    a feature map, else under ``None``. GFLOP as in :func:`forward_gflop`, which they sum to."""
    sides, hooks = {}, []
    for name, sub in module.named_modules():
        def record(_, __, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                sides[name] = out.shape[-1]
        hooks.append(sub.register_forward_hook(record))
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)
    try:
        with counter:
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    root = type(module).__name__
    flops = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    totals: dict[int | None, tuple[int, float]] = {}
    for name, sub in module.named_modules():
        own = flops.get(f"{root}.{name}" if name else root, 0)
        own -= sum(flops.get(f"{root}.{name}.{child}" if name else f"{root}.{child}", 0)
                   for child, _ in sub.named_children())
        ancestors = [name.rsplit(".", k)[0] for k in range(name.count(".") + 1)] if name else []
        side = next((sides[a] for a in ancestors if a in sides), None)
        params, gflop = totals.get(side, (0, 0.0))
        totals[side] = (params + sum(p.numel() for p in sub.parameters(recurse=False)),
                        gflop + own / 1e9)
    return totals


def diffusion_cost_rows(image_size: int = 256, *, factors=(1, 4, 8), latent_channels: int = 4,
                        preset: str = "cpu", n: int = 16, steps: int = 20,
                        decode_gflop: dict[int, float] | None = None) -> list[dict]:
    """One row per downsampling factor f: the U-Net ``preset`` on ``latent_channels x
    (image_size / f)^2`` (f = 1: the ``1 x image_size^2`` image itself). Each row has
    ``f``, ``shape``, ``parameters``, ``attention`` (the side of every resolution with
    self-attention: the preset's attention levels, then the middle block), ``gflop`` (one call,
    one image) and ``total_gflop`` = ``n x (steps x gflop + decode)`` with ``decode_gflop[f]``
    (0 if not given): the price of ``n`` samples with a ``steps``-step sampler.

    The preset keeps attention on the same *levels* at every input size
    (:meth:`UNetConfig.preset`), so a larger input also gets attention over more positions.
    """
    rows = []
    for f in factors:
        if image_size % f:
            raise ValueError(f"image_size {image_size} is not divisible by f={f}")
        c, s = (1, image_size) if f == 1 else (latent_channels, image_size // f)
        cfg = UNetConfig.preset(preset, image_size=s, in_channels=c, out_channels=c)
        unet = UNet(cfg).eval()
        gf = forward_gflop(unet, torch.zeros(1, c, s, s), torch.zeros(1, dtype=torch.long))
        dec = (decode_gflop or {}).get(f, 0.0)
        attention = tuple(r for r, a in zip(cfg.resolutions, cfg.level_attention, strict=True)
                          if a) + (cfg.resolutions[-1],)
        rows.append({"f": f, "shape": (c, s, s), "parameters": sum(p.numel() for p in
                                                                   unet.parameters()),
                     "attention": attention, "gflop": gf, "total_gflop": n * (steps * gf + dec)})
    return rows
