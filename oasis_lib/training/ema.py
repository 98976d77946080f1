"""Exponential moving average of model weights (the weights we sample from).

theta_ema <- decay * theta_ema + (1 - decay) * theta, after every optimiser step. With
``warmup`` the decay ramps as min(decay, (1 + n) / (10 + n)) over the first updates (n = updates
so far), so early averages are not dominated by the random initialisation (as in many DDPM
codebases). With ``power`` the ramp is min(decay, 1 - (1 + n / inv_gamma) ** -power) instead:
the warm-up of diffusers' ``EMAModel(use_ema_warmup=True)`` (after k-diffusion's EMAWarmup),
which is 0 at the first update (the average starts as the live weights); its unconditional
training example uses inv_gamma 1, power 3/4 (decay 0.999 after ~10k updates).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds a frozen copy of ``model`` and updates it towards the live weights."""

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True,
                 power: float | None = None, inv_gamma: float = 1.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if (power is not None and not power > 0) or not inv_gamma > 0:
            raise ValueError(f"EMA power and inv_gamma must be > 0, got {power}, {inv_gamma}")
        self.decay = decay
        self.warmup = warmup
        self.power, self.inv_gamma = power, inv_gamma
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.num_updates
        if not self.warmup:
            return self.decay
        if self.power is not None:
            return min(self.decay, 1.0 - (1.0 + n / self.inv_gamma) ** -self.power)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_p = list(self.model.parameters())
        live_p = list(model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in live_p], 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)  # BatchNorm statistics (SimpleUNet) are copied, not averaged
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates,
                "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
