"""Our U-Net against other libraries' at about its parameter count, timed interleaved in one
process (``bench_models.py --vs-diffusers`` and ``--vs-monai``; their docstring and
``bench_models.py``'s say what each prints and how to run it).

Interleaved: each timed round runs one step of every model in turn, in an order rotated from
round to round, so a change in the machine's load hits all models alike; the medians of the
rounds are compared. The networks come from ``external_unets.py``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time

import torch
from cpu_info import cpu_flags, machine_line, matmul_gflops
from external_unets import DIFFUSERS_LAYOUTS, diffusers_unet, monai_unet
from flop_breakdown import breakdown_table, flop_breakdown

CPU_PRESET_PARAMS = 4_056_193  # UNet("cpu"); the diffusers layouts must stay within 10%


def vs_diffusers_models(size: int) -> dict[str, torch.nn.Module] | None:
    """Ours and the two diffusers layouts, freshly seeded; None when diffusers is absent."""
    from oasis_lib.models.unet import UNet

    torch.manual_seed(0)
    models = {"ours-cpu": UNet("cpu")}
    try:
        for name in DIFFUSERS_LAYOUTS:
            models[name] = diffusers_unet(name, size)
    except ImportError:
        return None
    return models


def forward_flops(model: torch.nn.Module, size: int) -> int:
    """Forward FLOP of one image; attention through the math kernel so its matmuls count
    (FlopCounterMode has no formula for the fused CPU attention kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x, t = torch.randn(1, 1, size, size), torch.randint(0, 1000, (1,))
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(
            SDPBackend.MATH):
        model.eval()(x, t)
    return counter.get_total_flops()


def interleaved_times(steps: dict, *, warmup: int, iters: int) -> dict[str, tuple[float, float]]:
    """Median ``(wall, CPU)`` seconds of each ``steps[name]()``: warm-up calls first, then
    ``iters`` rounds that each call every step once, in an order rotated from round to round.
    CPU seconds are this process's (all threads: ``time.process_time``)."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for i in range(iters):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            steps[name]()
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for n, v in times.items()}


def interleaved_seconds(steps: dict, *, warmup: int, iters: int) -> dict[str, float]:
    """Median wall seconds of each ``steps[name]()`` (:func:`interleaved_times`)."""
    return {n: wall for n, (wall, _) in
            interleaved_times(steps, warmup=warmup, iters=iters).items()}


def run_vs_diffusers(args) -> None:
    from oasis_lib.models.unet import count_parameters

    size, batch = 64, args.batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, CPU flags: {cpu_flags()}, "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    models = vs_diffusers_models(size)
    if models is None:
        print("skipping the diffusers comparison: diffusers is not installed "
              "(pip install diffusers; a bench-only dependency)")
        return
    import diffusers

    params = {n: count_parameters(m) for n, m in models.items()}
    for name, count in params.items():
        if abs(count / CPU_PRESET_PARAMS - 1) > 0.10:
            raise SystemExit(f"{name} has {count:,} parameters, not within 10% of the cpu "
                             f"preset's {CPU_PRESET_PARAMS:,}")
    flops = {n: forward_flops(m, size) for n, m in models.items()}
    (fp32, n32), (bf16, n16) = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    peak = {False: fp32, True: bf16}
    print(f"diffusers {diffusers.__version__}; matmul in this process: fp32 {fp32:.1f} GFLOP/s "
          f"({n32}x{n32}), bf16 {bf16:.1f} GFLOP/s ({n16}x{n16})")
    print(f"{size}x{size}, batch {batch}, {args.warmup} warm-up + {args.iters} interleaved "
          "timed rounds (median); train = forward + MSE + backward + AdamW; forward = "
          "inference_mode; GFLOP/s = (3 x for train) forward FLOP x img/s; % matmul = of the "
          "same-precision matmul above\n")
    print("| model | params | fwd GFLOP/img | precision | channels_last | train img/s "
          "| train GFLOP/s | % matmul | fwd img/s | fwd GFLOP/s | % matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for use_bf16 in (False, True):
        if use_bf16 and args.no_bf16:
            continue
        for cl in (False, True):
            rows = _interleaved_variant(size, batch, cl, use_bf16, args)
            for name, ((train_s, _), (fwd_s, _)) in rows.items():
                gf = flops[name] / 1e9
                tr_ips, fw_ips = batch / train_s, batch / fwd_s
                tr_gfs, fw_gfs = 3 * gf * tr_ips, gf * fw_ips
                print(f"| {name} | {params[name]:,} | {gf:.2f} | "
                      f"{'bf16' if use_bf16 else 'fp32'} | {'yes' if cl else 'no'} | "
                      f"{tr_ips:.1f} | {tr_gfs:.0f} | {100 * tr_gfs / peak[use_bf16]:.0f}% | "
                      f"{fw_ips:.1f} | {fw_gfs:.0f} | {100 * fw_gfs / peak[use_bf16]:.0f}% |",
                      flush=True)


def _interleaved_variant(size: int, batch: int, cl: bool, use_bf16: bool, args, *,
                          make_models=None):
    """``{name: ((train wall, CPU seconds), (forward wall, CPU seconds))}`` for one
    (channels_last, precision), of ``make_models(size)`` (default :func:`vs_diffusers_models`),
    built afresh."""
    fmt = torch.channels_last if cl else torch.contiguous_format
    models = {n: m.to(memory_format=fmt)
              for n, m in (make_models or vs_diffusers_models)(size).items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,), generator=g)

    def autocast():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16
                else contextlib.nullcontext())

    def train_step(model, opt):
        def step():
            with autocast():
                loss = torch.nn.functional.mse_loss(model(x, t).float(), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def forward(model):
        def step():
            with torch.inference_mode(), autocast():
                model(x, t)
        return step

    for m in models.values():
        m.train()
    train = interleaved_times(
        {n: train_step(m, torch.optim.AdamW(m.parameters(), lr=1e-4)) for n, m in models.items()},
        warmup=args.warmup, iters=args.iters)
    for m in models.values():
        m.eval()
    fwd = interleaved_times({n: forward(m) for n, m in models.items()},
                            warmup=args.warmup, iters=args.iters)
    return {n: (train[n], fwd[n]) for n in models}


# --------------------------------------------------------------------------- vs MONAI
MONAI_TOLERANCE = 0.20  # MONAI's channels are multiples of its 32 groups: (64, 128, 128) is +14%
GOAL_SPEEDUP = 1.3  # issue 25: ours trains >= 1.3x as fast as MONAI's at equal parameters


def vs_monai_models(size: int) -> dict[str, torch.nn.Module] | None:
    """Ours, diffusers' example layout (when diffusers is installed) and MONAI's tutorial layout
    at half its width (``monai-scaled``), freshly seeded; None when MONAI is absent."""
    from oasis_lib.models.unet import UNet

    torch.manual_seed(0)
    models = {"ours-cpu": UNet("cpu")}
    with contextlib.suppress(ImportError):
        models["diffusers-example"] = diffusers_unet("diffusers-example", size)
    try:
        models["monai-scaled"] = monai_unet("monai-scaled", size)
    except ImportError:
        return None
    return models


def run_vs_monai(args) -> None:
    """The fp32 table of ours, diffusers' example and MONAI's scaled tutorial network, contiguous
    and ``channels_last``, after the table of where each spends its forward FLOPs; then the
    read-off of the speed goal (ours / MONAI's training img/s >= :data:`GOAL_SPEEDUP`)."""
    from oasis_lib.models.unet import count_parameters

    size, batch = 64, args.batch
    print(machine_line())
    models = vs_monai_models(size)
    if models is None:
        print("skipping the MONAI comparison: MONAI is not installed "
              "(pip install 'monai[einops]'; a bench-only dependency)")
        return
    import monai

    params = {n: count_parameters(m) for n, m in models.items()}
    for name, count in params.items():
        if abs(count / CPU_PRESET_PARAMS - 1) > MONAI_TOLERANCE:
            raise SystemExit(f"{name} has {count:,} parameters, not within "
                             f"{MONAI_TOLERANCE:.0%} of the cpu preset's {CPU_PRESET_PARAMS:,}")
    flops = {n: forward_flops(m, size) for n, m in models.items()}
    fp32, n32 = matmul_gflops(torch.float32, clock=time.process_time)
    print(f"monai {monai.__version__}; matmul in this process: fp32 {fp32:.1f} GFLOP per "
          f"CPU-second ({n32}x{n32}); load average at start {_load()}\n")
    print(f"Where the forward FLOPs go, GFLOP per {size}x{size} image (conv SxS: convolutions "
          "whose input is SxS; attention SxS: attention blocks over SxS pixels, projections "
          "included; other: time embedding and FiLM):\n")
    print(breakdown_table({n: flop_breakdown(m, size) for n, m in models.items()}))
    print(f"\n{size}x{size}, batch {batch}, fp32, {torch.get_num_threads()} thread(s), "
          f"{args.warmup} warm-up + {args.iters} interleaved timed rounds (median); train = "
          "forward + MSE + backward + AdamW; forward = inference_mode; img/s: per wall second, "
          "img/CPU-s: per CPU-second of this process (on a shared machine, with one thread, "
          "the rate of an idle core); GFLOP/CPU-s = (3 x for train) forward FLOP x img/CPU-s; "
          "% matmul = of the matmul above; ours / this = ours-cpu's training img/CPU-s over "
          "this model's\n")
    print("| model | params | fwd GFLOP/img | channels_last | train img/s | train img/CPU-s "
          "| train GFLOP/CPU-s | % matmul | fwd img/s | fwd img/CPU-s | fwd GFLOP/CPU-s "
          "| % matmul | ours / this (train) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rate: dict[tuple[str, bool], tuple[float, float]] = {}  # (wall, CPU) training img/s
    for cl in (False, True):
        rows = _interleaved_variant(size, batch, cl, False, args, make_models=vs_monai_models)
        ours = batch / rows["ours-cpu"][0][1]
        for name, ((tr_wall, tr_cpu), (fw_wall, fw_cpu)) in rows.items():
            gf = flops[name] / 1e9
            rate[name, cl] = (batch / tr_wall, batch / tr_cpu)
            tr, fw = batch / tr_cpu, batch / fw_cpu
            print(f"| {name} | {params[name]:,} | {gf:.2f} | {'yes' if cl else 'no'} | "
                  f"{batch / tr_wall:.2f} | {tr:.2f} | {3 * gf * tr:.0f} | "
                  f"{300 * gf * tr / fp32:.0f}% | {batch / fw_wall:.2f} | {fw:.2f} | "
                  f"{gf * fw:.0f} | {100 * gf * fw / fp32:.0f}% | {ours / tr:.2f}x |", flush=True)
    print(f"\nload average at end {_load()}")
    for i, clock in enumerate(("CPU-second", "wall second")):
        best = {n: max(rate[n, cl][1 - i] for cl in (False, True)) for n in models}
        ratio = best["ours-cpu"] / best["monai-scaled"]
        print(f"Read-off (img per {clock}): ours trains {ratio:.2f}x as fast as MONAI's "
              f"network (fp32, each in its faster memory format: {best['ours-cpu']:.2f} "
              f"against {best['monai-scaled']:.2f}); goal >= {GOAL_SPEEDUP}x: "
              f"{'met' if ratio >= GOAL_SPEEDUP else 'not met'}.")
    print(f"Forward FLOPs: MONAI's {flops['monai-scaled'] / flops['ours-cpu']:.2f}x ours.")


def _load() -> str:
    return (" ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg")
            else "n/a")
