"""Sinusoidal timestep embedding, shared by :class:`~oasis_lib.unet.UNet` and
:class:`~oasis_lib.simple_unet.SimpleUNet`.

A diffusion network must know *how noisy* its input is, i.e. the timestep ``t``. An integer is a
poor network input, so ``t`` is mapped to a vector of sines and cosines at geometrically spaced
frequencies, exactly like the token positions of a Transformer (Vaswani et al. 2017, section 3.5;
used for timesteps by Ho et al. 2020, appendix B).

For an embedding of size ``d`` with ``h = d // 2`` frequencies and ``n = max_period``::

    omega_i = n ** (-i / (h - freq_shift))        i = 0, ..., h - 1
    E(t)[i]     = sin(t * omega_i)                 (first half:  sines)
    E(t)[h + i] = cos(t * omega_i)                 (second half: cosines)

With ``freq_shift=0`` (our default) ``omega_i = n ** (-2i / d)``, the frequencies of Vaswani et
al.'s ``P(k, 2i) = sin(k / n^(2i/d))`` and ``P(k, 2i+1) = cos(k / n^(2i/d))``. We store the sines
and cosines as two *halves* instead of interleaving them (the order of DDPM's reference code and
of diffusers; any fixed permutation is equivalent for the Linear layer that follows). DDPM's code,
and the seed's ``SimpleUnet``, divide by ``h - 1`` instead of ``h`` (``freq_shift=1``), so that the
last frequency is exactly ``1 / n``. An odd ``d`` gets one zero column at the end.

The fastest component (``omega_0 = 1``) turns once every ``2 pi`` steps; the slowest has a period
of about ``2 pi n`` steps, far longer than any schedule, so every ``t`` in ``0..T-1`` gets a
distinct vector and nearby ``t`` get similar vectors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalPosEmb", "sinusoidal_embedding"]


def sinusoidal_embedding(
    t: torch.Tensor | int | float,
    dim: int,
    *,
    max_period: float = 10000.0,
    freq_shift: float = 0.0,
) -> torch.Tensor:
    """Embed timesteps as ``[sin(t * omega), cos(t * omega)]`` (see the module docstring).

    Args:
        t: timesteps, a long or float tensor of shape ``[B]`` (a 0-d tensor or a Python number is
            treated as ``[1]``). Fractional ``t`` is fine (continuous-time samplers).
        dim: embedding size ``d`` (>= 1). Odd sizes are padded with one zero column.
        max_period: ``n``; the longest period is about ``2 pi n`` (default 10000, Vaswani et al.).
        freq_shift: 0 (default) for Vaswani's frequencies ``n^(-2i/d)``; 1 for DDPM's reference
            code (``n^(-i/(h-1))``), which the seed used.

    Returns:
        float32 tensor ``[B, dim]`` on ``t``'s device (float64 if ``t`` is float64).
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1:
        raise ValueError(f"t must have shape [B] (or be a scalar), got shape {tuple(t.shape)}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    denom = max(half - freq_shift, 1)  # dim 2 or 3 with freq_shift=1: a single frequency, omega=1
    exponent = torch.arange(half, device=t.device, dtype=dtype) * (-math.log(max_period) / denom)
    args = t.to(dtype)[:, None] * torch.exp(exponent)[None, :]  # [B, h]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # [B, 2h]
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class SinusoidalPosEmb(nn.Module):
    """:func:`sinusoidal_embedding` as an ``nn.Module`` (no parameters): ``[B] -> [B, dim]``."""

    def __init__(self, dim: int, *, max_period: float = 10000.0, freq_shift: float = 0.0):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.max_period = max_period
        self.freq_shift = freq_shift

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(
            t, self.dim, max_period=self.max_period, freq_shift=self.freq_shift
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, freq_shift={self.freq_shift:g}"
