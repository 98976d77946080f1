"""The CPU facts every benchmark table prints (imported by the scripts in this folder), and
the practical peak of this CPU: the rate of a large matmul (:func:`matmul_gflops`)."""

from __future__ import annotations

import time

import torch

SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    """The SIMD flags of :data:`SHOWN` this CPU has (``/proc/cpuinfo``), comma-separated."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(ln for ln in f if ln.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    return ", ".join(f for f in SHOWN if f in flags) or "unknown"


def machine_line() -> str:
    """One line naming the processor, its :func:`cpu_flags`, torch's version, CPU capability and
    thread count: the first line of a benchmark table."""
    import platform

    return (f"{platform.processor() or platform.machine()}, CPU flags: {cpu_flags()}, torch "
            f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads")


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0, *,
                  clock=time.perf_counter) -> tuple[float, int]:
    """GFLOP/s of an ``n x n`` matmul (2 n^3 FLOP), best of repeated runs for ``seconds``.

    A CPU without native bf16 can be 100x slower in bf16 (one 2048 matmul then takes a minute),
    so a 512 matmul is timed first and ``n`` is only used when that one is fast. ``clock``
    times each run: wall time, or ``time.process_time`` for GFLOP per CPU-second (with one
    thread, the rate of an idle core even on a shared machine).
    Returns ``(GFLOP/s, matrix size used)``."""
    if n > 512:
        small = _time_matmul(dtype, 512, seconds, clock)
        if small < 10:
            return small, 512
    return _time_matmul(dtype, n, seconds, clock), n


def _time_matmul(dtype: torch.dtype, n: int, seconds: float, clock=time.perf_counter) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t0 = clock()
        a @ b
        best = min(best, clock() - t0)
    return 2 * n**3 / best / 1e9
