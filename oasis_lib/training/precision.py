"""Which autocast dtype a run uses, and why: ``precision="auto"`` decided per processor.

On CUDA, ``auto`` is bf16 autocast where the GPU supports it and fp16 (with a grad scaler)
elsewhere. On a CPU the answer depends on the processor, not on the library: a CPU with native
bf16 instructions (AVX512-BF16, or AMX tiles) runs bf16 matrix products several times faster
than fp32, while on an AVX2-only CPU bf16 is emulated and tens of times *slower*
(benchmarks/results/models.md). So on a CPU ``auto`` is bf16 only when

1. the processor reports native bf16 at run time (``torch.cpu._is_avx512_bf16_supported()`` /
   ``_is_amx_tile_supported()`` where torch has them, else the ``avx512_bf16`` / ``amx_bf16``
   flags of ``/proc/cpuinfo``), and
2. a tiny bf16 matmul measured here beats the same fp32 matmul (:func:`bf16_matmul_speedup`,
   cached for the process), which also catches a torch build without the fast kernels.

Otherwise it is fp32. :func:`resolve_precision` returns ``(dtype or None, reason)``; the Trainer
logs both. Runs that compare exact numbers (tests, golden notebook outputs) pin ``"fp32"``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ..run_config import PRECISIONS

_EXPLICIT = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native-bf16 features this CPU reports: a subset of ``("avx512_bf16", "amx_bf16")``.

    Asks torch first (it reads CPUID itself); falls back to the ``flags`` line of
    ``cpuinfo`` (Linux) when torch has no such query. An empty tuple: no native bf16.
    """
    found = []
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if avx is not None and amx is not None:
        if avx():
            found.append("avx512_bf16")
        if amx():
            found.append("amx_bf16")
        return tuple(found)
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in ("avx512_bf16", "amx_bf16") if f in flags)


@functools.cache
def bf16_matmul_speedup(n: int = 512, reps: int = 5) -> float:
    """fp32 time / bf16 time of an ``n x n`` matmul on this CPU (best of ``reps``; cached).

    About 10 ms at ``n=512``. Above 1: bf16 is faster here.
    """
    def best(dtype: torch.dtype) -> float:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(dtype)
        b = torch.randn(n, n, generator=g).to(dtype)
        a @ b  # warm-up: kernel selection, page faults
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(torch.float32) / max(best(torch.bfloat16), 1e-12)


def resolve_precision(precision: str, device: torch.device | str) -> tuple[torch.dtype | None,
                                                                            str]:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain fp32) and why.

    Args:
        precision: ``"auto"`` | ``"fp32"`` | ``"bf16"`` | ``"fp16"`` (fp16 needs CUDA: it
            trains with a grad scaler).
        device: the training device.

    Returns:
        ``(dtype, reason)``, e.g. ``(torch.bfloat16, "auto on cpu: native bf16 (avx512_bf16),
        bf16 matmul 2.5x fp32")``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    device = torch.device(device)
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision 'fp16' needs CUDA (it uses a grad scaler); "
                             "use 'bf16' or 'fp32'")
        return _EXPLICIT[precision], f"{precision} as configured"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto on cuda: the GPU supports bf16"
        return torch.float16, "auto on cuda: no bf16 on this GPU, fp16 with a grad scaler"
    if device.type != "cpu":
        return None, f"auto on {device.type}: fp32 (no autocast default for this device)"
    flags = cpu_bf16_flags()
    if not flags:
        return None, "auto on cpu: fp32, the CPU has no native bf16 (no avx512_bf16/amx_bf16)"
    speedup = bf16_matmul_speedup()
    if speedup <= 1.0:
        return None, (f"auto on cpu: fp32, the CPU reports {'/'.join(flags)} but a bf16 "
                      f"matmul ran at {speedup:.2f}x fp32 here")
    return torch.bfloat16, (f"auto on cpu: bf16 autocast, native bf16 ({'/'.join(flags)}), "
                            f"bf16 matmul {speedup:.1f}x fp32")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision choice on a device (``None``: plain fp32); see
    :func:`resolve_precision` for the reason too."""
    return resolve_precision(precision, device)[0]
