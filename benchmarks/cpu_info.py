"""The CPU facts every benchmark table prints (imported by the scripts in this folder)."""

from __future__ import annotations

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

    import torch

    return (f"{platform.processor() or platform.machine()}, CPU flags: {cpu_flags()}, torch "
            f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads")
