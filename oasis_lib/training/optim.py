"""The optimiser and its learning-rate schedule, as a run's config describes them.

* :func:`build_optimizer`: Adam or AdamW (Loshchilov & Hutter 2019: decoupled weight decay)
  with the config's betas, eps and weight decay; torch's *fused* kernel where torch has one
  for the device (``config.fused_optimizer``), else its ``foreach`` one. Fused and foreach
  compute the same update (Algorithm 2 of Loshchilov & Hutter 2019) and differ only in
  float rounding; fused runs the whole step in one kernel (3x faster than foreach on the
  2-core machine of benchmarks/results/profile_step.md; measure yours there).
* :func:`lr_multiplier`: the factor on the peak ``lr`` at step ``s`` (0-based): a linear
  warm-up ``min(1, (s + 1) / W)`` over ``W = warmup_steps``, then either constant or half a
  cosine to 0 at ``S = lr_decay_steps``,
  ``0.5 (1 + cos(pi (s - W) / (S - W)))``, 0 after ``S`` (Loshchilov & Hutter 2017, SGDR
  eq. 5 without restarts; diffusers' ``get_cosine_schedule_with_warmup`` has the same cosine;
  its warm-up is ``s / W``, one step behind ours).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from ..run_config import RunConfig

__all__ = ["build_lr_scheduler", "build_optimizer", "fused_available", "lr_multiplier"]


def fused_available(device: torch.device | str) -> bool:
    """Whether torch has fused Adam/AdamW kernels for ``device``'s type."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # an older torch: no fused CPU kernels either
        return torch.device(device).type == "cuda"
    return torch.device(device).type in _get_fused_kernels_supported_devices()


def build_optimizer(config: RunConfig, params: Iterable[torch.nn.Parameter],
                    device: torch.device | str) -> torch.optim.Optimizer:
    """``config.optimizer`` over ``params`` (already on ``device``)."""
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    kernel = ({"fused": True} if config.fused_optimizer and fused_available(device)
              else {"foreach": True})
    return cls(params, lr=config.lr, betas=tuple(config.adam_betas), eps=config.adam_eps,
               weight_decay=config.weight_decay, **kernel)


def lr_multiplier(config: RunConfig) -> Callable[[int], float]:
    """The learning-rate factor at optimiser step ``s`` (module docstring)."""
    warm = max(config.warmup_steps, 1)
    if config.lr_schedule == "constant":
        return lambda s: min(1.0, (s + 1) / warm)
    end, start = config.lr_decay_steps, config.warmup_steps

    def cosine(s: int) -> float:
        if s < start:
            return (s + 1) / warm
        progress = min(1.0, (s - start) / (end - start))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return cosine


def build_lr_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :func:`lr_multiplier` once per optimiser step (its state is
    the step count, so a resumed run continues the same curve)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(config))
