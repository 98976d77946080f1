"""How a checker compares the reader's output with the library's (:mod:`.exercises`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _as_tensors(value) -> list[Tensor]:
    if isinstance(value, (tuple, list)):
        return [torch.as_tensor(v) for v in value]
    return [torch.as_tensor(value)]


def _compare(got, want, atol: float, rtol: float) -> tuple[float, str | None]:
    """(max abs error, None) if ``got`` matches ``want`` (same shapes, ``|got - want| <= atol +
    rtol |want|`` everywhere), else (error so far, what differs)."""
    got_t, want_t = _as_tensors(got), _as_tensors(want)
    if len(got_t) != len(want_t):
        return math.inf, f"returned {len(got_t)} value(s), expected {len(want_t)}"
    worst = 0.0
    for k, (a, b) in enumerate(zip(got_t, want_t, strict=True)):
        label = f"output {k}: " if len(want_t) > 1 else ""
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.shape != b.shape:
            return math.inf, f"{label}shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        if not torch.isfinite(a).all():
            return math.inf, f"{label}non-finite values (NaN or inf)"
        err = (a - b).abs()
        worst = max(worst, float(err.max()) if err.numel() else 0.0)
        bad = err > atol + rtol * b.abs()
        if bad.any():
            idx = tuple(int(i) for i in torch.nonzero(bad)[0])
            return worst, (f"{label}max abs error {float(err.max()):.3g}; first mismatch at "
                           f"index {idx}: got {float(a[idx]):.6g}, expected {float(b[idx]):.6g}")
    return worst, None
