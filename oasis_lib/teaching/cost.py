"""What a sampler pays: GFLOP of one network call, counted, in pixel and in latent space.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on one real forward pass (one
multiply-add = 2 FLOP; convolutions, matmuls and attention are counted, element-wise operations
such as GroupNorm and SiLU are not, so the totals are slight underestimates of the work).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models.unet import UNet
from ..models.unet_config import UNetConfig

__all__ = ["diffusion_cost_rows", "forward_gflop"]


@torch.no_grad()
def forward_gflop(module: nn.Module, *inputs: torch.Tensor) -> float:
    """GFLOP of ``module(*inputs)`` (one forward pass, counted as it runs)."""
    counter = FlopCounterMode(display=False)
    with counter:
        module(*inputs)
    return counter.get_total_flops() / 1e9


def diffusion_cost_rows(image_size: int = 256, *, factors=(1, 4, 8), latent_channels: int = 4,
                        preset: str = "cpu", n: int = 16, steps: int = 20,
                        decode_gflop: dict[int, float] | None = None) -> list[dict]:
    """One row per downsampling factor f: the U-Net ``preset`` on ``latent_channels x
    (image_size / f)^2`` (f = 1: the ``1 x image_size^2`` image itself). Each row has
    ``f``, ``shape``, ``parameters``, ``gflop`` (one call, one image) and ``total_gflop`` =
    ``n x (steps x gflop + decode)`` with ``decode_gflop[f]`` (0 if not given): the price of
    ``n`` samples with a ``steps``-step sampler."""
    rows = []
    for f in factors:
        if image_size % f:
            raise ValueError(f"image_size {image_size} is not divisible by f={f}")
        c, s = (1, image_size) if f == 1 else (latent_channels, image_size // f)
        unet = UNet(UNetConfig.preset(preset, image_size=s, in_channels=c, out_channels=c)).eval()
        gf = forward_gflop(unet, torch.zeros(1, c, s, s), torch.zeros(1, dtype=torch.long))
        dec = (decode_gflop or {}).get(f, 0.0)
        rows.append({"f": f, "shape": (c, s, s), "parameters": sum(p.numel() for p in
                                                                   unet.parameters()),
                     "gflop": gf, "total_gflop": n * (steps * gf + dec)})
    return rows
