"""Speed and memory of the denoising networks on this machine (a benchmark, not a test).

For each model (the UNet presets and the seed's SimpleUNet) and image size it prints one
Markdown row per variant (contiguous / ``channels_last`` x fp32 / bf16 autocast):

* parameters, and forward GFLOP per image counted by ``torch.utils.flop_counter.FlopCounterMode``
  (one multiply-add = 2 FLOP; a training step costs about 3x the forward);
* training images/s: forward + MSE loss + backward + AdamW step, batch 16, median of the timed
  iterations after a few warm-up ones; the achieved GFLOP/s (3 x forward FLOPs x images/s) and
  its fraction of a large matmul in the same dtype (the practical peak of this machine);
* sampling images/s: one forward under ``torch.inference_mode``, batch 16, eval mode;
* peak memory: every variant runs in a fresh subprocess, which reports the high-water mark of
  its resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus its resident set just
  before the model was built (after ``import torch``). ``tracemalloc`` cannot see torch's
  allocations, hence this method. It includes AdamW's state and the autograd graph.

A step slower than ``--max-step`` seconds is timed once and its rate marked ``~``: on a CPU
without native bf16 (AVX2 only; one of our machines in session 2, with torch 2.14) bf16
convolutions fall back to a slow reference kernel and were 10-50x slower than fp32 there.

Run it on an otherwise idle machine; other processes on the same cores make the numbers wrong.

    python benchmarks/bench_models.py                  # tiny, cpu, gpu, simple at 64x64
    python benchmarks/bench_models.py --large          # + gpu preset and SimpleUNet at 128x128
    python benchmarks/bench_models.py --presets cpu --iters 10
    python benchmarks/bench_models.py --quick          # smoke test: tiny preset, 2 iterations

**Against diffusers** (``--vs-diffusers``; diffusers is an optional, bench-only dependency:
``pip install diffusers``; without it the mode says so and stops): our ``cpu`` preset
(4,056,193 parameters) next to diffusers' ``UNet2DModel`` at a parameter count within 10% of
it, in two layouts, all three in *one* process and timed *interleaved* (each timed round runs
one step of every model in turn, so a change in machine load hits all three alike):

* ``diffusers-default``: UNet2DModel's default layout (block types Down, AttnDown x3; two
  ResNet layers per block; channels 224-448-672-896, 32 GroupNorm groups, attention heads of
  8) scaled by 1/8 to channels 28-56-84-112 (4,302,509 parameters, +6.1%); 4 GroupNorm groups
  keep its 7/14/21/28 channels per group, and heads of 4 channels (8 does not divide 84);
* ``diffusers-example``: the layout of diffusers' unconditional training example
  (``examples/unconditional_image_generation/train_unconditional.py``: channels
  128-128-256-256-512-512, Down x4 then AttnDown then Down, up mirrored with AttnUp second)
  scaled by 3/16 to 24-24-48-48-96-96 (4,013,089 parameters, -1.1%); 6 groups keep its 4/8/16
  channels per group, heads of 8 as in the example.

For each of fp32 and bf16 autocast, channels_last off and on: the training step (forward,
MSE, backward, AdamW) and the forward (``inference_mode``), batch ``--batch`` at 64x64, as
img/s (median over the timed rounds), forward GFLOP per image (``FlopCounterMode`` with
attention computed by the math kernel, so its matmuls are counted; training = 3x forward),
GFLOP/s and its fraction of the same-precision 2048^2 matmul rate measured in the same
process. The CPU's flags are printed first. Run it on an idle machine:

    python benchmarks/bench_models.py --vs-diffusers                # the full table
    python benchmarks/bench_models.py --vs-diffusers --iters 2 --warmup 1 --no-bf16  # smoke

**Against MONAI** (``--vs-monai``; MONAI is an optional, bench-only dependency: ``pip install
'monai[einops]'``): our ``cpu`` preset, ``diffusers-example`` (when diffusers is installed) and
``monai-scaled``, MONAI's ``DiffusionModelUNet`` in the layout of its 2D DDPM tutorial at half
the tutorial's width (channels 64-128-128, attention at levels 2 and 3, one ResBlock per level:
4,634,305 parameters, +14.3%; ``external_unets.py``), fp32 only, contiguous and
``channels_last``, interleaved as above. It first prints where each network spends its forward
FLOPs (``flop_breakdown.py``: per feature-map size, convolutions apart from attention), then the
timing table with ours' training img/s over each model's, and a read-off of the issue's goal
(ours trains >= 1.3x as fast as MONAI's at equal parameters):

    OMP_NUM_THREADS=2 python benchmarks/bench_models.py --vs-monai
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# re-exported: they used to live here (bench_recipes.py and older scripts import them)
from cpu_info import matmul_gflops  # noqa: E402
from external_unets import DIFFUSERS_LAYOUTS, diffusers_unet  # noqa: E402, F401
from vs_libraries import (  # noqa: E402, F401
    CPU_PRESET_PARAMS,
    forward_flops,
    interleaved_seconds,
    run_vs_diffusers,
    run_vs_monai,
    vs_diffusers_models,
)

MODELS = ("tiny", "cpu", "gpu", "simple")  # UNet presets, and "simple" for SimpleUNet
VARIANTS = ((False, False), (True, False), (False, True), (True, True))  # (channels_last, bf16)


def build_model(name: str) -> torch.nn.Module:
    from oasis_lib.models.simple_unet import SimpleUNet
    from oasis_lib.models.unet import UNet

    return SimpleUNet() if name == "simple" else UNet(name)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:  # Linux; elsewhere fall back to the high-water mark
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, else KiB


def median_seconds(fn, *, warmup: int, iters: int, max_step: float) -> tuple[float, bool]:
    """Median duration of ``fn()`` after ``warmup`` calls. If one call takes longer than
    ``max_step`` seconds, stop there and return that duration, flagged as approximate."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if (took := time.perf_counter() - t0) > max_step:
            return took, True
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), False


def run_child(spec: dict) -> dict:
    """Measure one (model, size, channels_last, bf16) variant in this process."""
    from torch.utils.flop_counter import FlopCounterMode

    from oasis_lib.models.unet import count_parameters

    torch.manual_seed(0)
    rss_before = current_rss_mb()
    model = build_model(spec["model"])
    size, batch, cl, bf16 = spec["size"], spec["batch"], spec["channels_last"], spec["bf16"]
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else (
        contextlib.nullcontext)

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x[:1], t[:1])
    flops = counter.get_total_flops()

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def train_step():
        with autocast():
            loss = torch.nn.functional.mse_loss(model(x, t).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    timing = {"warmup": spec["warmup"], "iters": spec["iters"], "max_step": spec["max_step"]}
    train_s, train_approx = median_seconds(train_step, **timing)
    model.eval()

    def sample_step():
        with torch.inference_mode(), autocast():
            model(x, t)

    sample_s, sample_approx = median_seconds(sample_step, **timing)
    return {
        "params": count_parameters(model),
        "flops": flops,
        "train_ips": batch / train_s,
        "train_approx": train_approx,
        "sample_ips": batch / sample_s,
        "sample_approx": sample_approx,
        "peak_mb": maxrss_mb() - rss_before,
    }


def spawn(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:80]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(MODELS), choices=MODELS,
                        help="UNet presets and/or 'simple' (SimpleUNet)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64],
                        help="image sizes for every model (default 64)")
    parser.add_argument("--large", action="store_true",
                        help="also run the gpu preset and SimpleUNet at 128x128")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast variants")
    parser.add_argument("--max-step", type=float, default=30,
                        help="a step slower than this many seconds is timed once (marked ~)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per variant")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny preset at 64x64, 2 warm-up + 2 timed iterations, "
                        "--max-step 10")
    parser.add_argument("--vs-diffusers", action="store_true",
                        help="ours (cpu preset) against diffusers' UNet2DModel in two layouts, "
                        "interleaved in one process (see the module docstring)")
    parser.add_argument("--vs-monai", action="store_true",
                        help="ours (cpu preset), diffusers' example layout and MONAI's "
                        "DiffusionModelUNet at about our parameter count, fp32, interleaved in "
                        "one process, with where each spends its FLOPs (vs_libraries.py)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return
    if args.vs_diffusers:
        run_vs_diffusers(args)
        return
    if args.vs_monai:
        run_vs_monai(args)
        return
    if args.quick:
        args.presets, args.sizes, args.large = ["tiny"], [64], False
        args.iters, args.warmup, args.max_step = 2, 2, 10

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    (fp32, n32), (bf16, n16) = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"matmul: fp32 {fp32:.1f} GFLOP/s ({n32}x{n32}), bf16 {bf16:.1f} GFLOP/s ({n16}x{n16})")
    if bf16 < fp32:
        print("bf16 is slower than fp32 here (no native bf16 in this CPU or this torch build): "
              "expect the bf16 autocast rows to be slow.")
    # '% matmul' compares with the fastest matmul the variant may use (autocast keeps some fp32)
    peak = {False: fp32, True: max(fp32, bf16)}
    print(f"batch {args.batch}, {args.warmup} warm-up + {args.iters} timed iterations (median); "
          "train = forward + backward + AdamW step; sample = one forward (inference_mode)\n")

    jobs = [(m, s) for m in args.presets for s in args.sizes]
    if args.large:
        jobs += [(m, 128) for m in ("gpu", "simple") if (m, 128) not in jobs]
    variants = [v for v in VARIANTS if not (args.no_bf16 and v[1])]

    print("| model | size | params | fwd GFLOP/img | channels_last | bf16 | train img/s "
          "| train GFLOP/s | % matmul | sample img/s | sample GFLOP/s | % matmul | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, size in jobs:
        for cl, bf16 in variants:
            spec = {"model": model, "size": size, "batch": args.batch, "channels_last": cl,
                    "bf16": bf16, "iters": args.iters, "warmup": args.warmup,
                    "max_step": args.max_step}
            r = spawn(spec, args.timeout)
            head = f"| {model} | {size} |"
            flags = f" {'yes' if cl else 'no'} | {'yes' if bf16 else 'no'} |"
            if "error" in r:
                print(f"{head} | |{flags} {r['error']} | | | | | | |", flush=True)
                continue
            gf = r["flops"] / 1e9
            train_gfs, sample_gfs = 3 * gf * r["train_ips"], gf * r["sample_ips"]
            tilde = {k: "~" if r[f"{k}_approx"] else "" for k in ("train", "sample")}
            print(f"{head} {r['params']:,} | {gf:.2f} |{flags} "
                  f"{tilde['train']}{r['train_ips']:.1f} | "
                  f"{train_gfs:.0f} | {100 * train_gfs / peak[bf16]:.0f}% | "
                  f"{tilde['sample']}{r['sample_ips']:.1f} | {sample_gfs:.0f} | "
                  f"{100 * sample_gfs / peak[bf16]:.0f}% | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
