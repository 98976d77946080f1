"""Where a training step of the ``cpu`` preset spends its CPU time (a profile, not a test).

Builds the real :class:`~oasis_lib.training.trainer.Trainer` for the ``cpu`` U-Net preset at
64x64 with batch 16 on the demo data (or ``$OASIS_DATA``), and runs ``Trainer.train_step``
(random flips, q_sample, the v-prediction MSE with min-SNR weighting as the shipped recipe,
backward, gradient clipping, AdamW, the EMA update) under ``torch.profiler``, once in fp32 and
once under bf16 autocast. For each it prints the operators with the most *self* CPU time
(time in the operator itself, not in the operators it calls, so the shares add up to 100%),
each assigned to the group of its outermost grouped caller (the elementwise kernels AdamW runs
count as optimiser, those inside a convolution's backward as convolution), and the total per
group:

* convolution: forward and backward convolutions (``aten::*conv*``);
* GroupNorm: ``native_group_norm`` and its backward;
* SiLU: ``silu`` and its backward;
* attention: scaled-dot-product attention kernels, softmax, batched matmuls;
* optimiser: AdamW, gradient clipping and the EMA (``_foreach_*`` kernels, ``Optimizer.step``);
* other: everything else (additions of the residual paths, copies, the loss, linear layers of
  the time embedding, memory-format conversions, ...).

Then it times ``AdamW.step`` alone on the model's parameters with ``foreach`` (PyTorch's CPU
default) and with ``fused=True``, as a cheap candidate for a win.

Keep it short on a shared machine (one thread, a few steps: about a minute of CPU):

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --warmup 1 --steps 3
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

GROUPS = (  # first match wins; matched against an operator's name and its callers' names
    ("optimiser", re.compile(r"_foreach|Optimizer|adam|clip_grad", re.IGNORECASE)),
    ("convolution", re.compile(r"conv", re.IGNORECASE)),
    ("GroupNorm", re.compile(r"group_?norm", re.IGNORECASE)),
    ("SiLU", re.compile(r"silu", re.IGNORECASE)),
    ("attention", re.compile(r"scaled_?dot_?product|flash_?attention|softmax|bmm",
                             re.IGNORECASE)),
)
GROUP_NAMES = tuple(g for g, _ in GROUPS) + ("other",)


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if pattern.search(name):
            return group
    return "other"


def group_of_event(event) -> str:
    """The group of a profiled operator call: that of its outermost caller with a group
    (so the ``aten::mul`` inside ``AdamW.step``, or the ``aten::copy_`` inside a convolution's
    backward, count where they are spent), else of its own name, else "other"."""
    chain = []
    while event is not None:
        chain.append(event.name)
        event = event.cpu_parent
    for name in reversed(chain):
        group = group_of(name)
        if group != "other":
            return group
    return "other"


def make_trainer(precision: str, out_dir: str, data_root=None):
    from oasis_lib.config import DEMO_RECIPE, TrainConfig
    from oasis_lib.data import load_splits
    from oasis_lib.training.trainer import Trainer

    cfg = TrainConfig.from_preset("cpu", image_size=64, batch_size=16, precision=precision,
                                  out_dir=out_dir, progress=False, data_root=data_root,
                                  **DEMO_RECIPE)
    train_set, val_set = load_splits(data_root, image_size=64, augment=False)
    return Trainer(cfg, train_set=train_set, val_set=val_set), train_set


def profile_precision(precision: str, *, warmup: int, steps: int, data_root=None) -> dict:
    """Self CPU microseconds per operator over ``steps`` train steps, and seconds per step."""
    with tempfile.TemporaryDirectory() as out:
        trainer, train_set = make_trainer(precision, out, data_root)
        g = torch.Generator().manual_seed(0)
        batches = [torch.stack([train_set[int(i)] for i in
                                torch.randint(0, len(train_set), (16,), generator=g)])
                   for _ in range(warmup + steps)]
        for x0 in batches[:warmup]:
            trainer.train_step(x0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for x0 in batches[warmup:]:
                trainer.train_step(x0)
            seconds = (time.perf_counter() - t0) / steps
        ops: dict[tuple[str, str], float] = defaultdict(float)  # (operator, group) -> us
        for e in prof.events():
            ops[(e.name, group_of_event(e))] += e.self_cpu_time_total
        reason = trainer.precision_reason
        trainer.lock.release()
    return {"ops": ops, "seconds_per_step": seconds, "reason": reason}


def print_profile(precision: str, result: dict, *, top: int) -> None:
    ops = result["ops"]
    total = sum(ops.values()) or 1.0
    print(f"\n### {precision}: {result['seconds_per_step']:.2f} s per step "
          f"({16 / result['seconds_per_step']:.1f} img/s under the profiler); "
          f"{result['reason']}\n")
    print("| operator | group | self CPU ms/step | share |")
    print("|---|---|---|---|")
    steps = result["steps"]
    for (name, group), us in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| `{name}` | {group} | {us / 1e3 / steps:.1f} | {100 * us / total:.1f}% |")
    by_group: dict[str, float] = defaultdict(float)
    for (_, group), us in ops.items():
        by_group[group] += us
    print("\n| group | self CPU ms/step | share |")
    print("|---|---|---|")
    for group in GROUP_NAMES:
        us = by_group[group]
        print(f"| {group} | {us / 1e3 / steps:.1f} | {100 * us / total:.1f}% |")


def time_adamw(*, iters: int = 30) -> None:
    """Median seconds of AdamW.step on the cpu preset's parameters, foreach vs fused."""
    from oasis_lib.models.unet import UNet

    model = UNet("cpu")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    print("\n| AdamW.step on 4.06M parameters | median ms |")
    print("|---|---|")
    for label, kwargs in (("foreach (default)", {"foreach": True}), ("fused", {"fused": True}),
                          ("for-loop", {"foreach": False})):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **kwargs)
        opt.step()  # state allocated
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        print(f"| {label} | {1e3 * statistics.median(times):.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=("fp32", "bf16"))
    parser.add_argument("--data", default=None, help="data root (default $OASIS_DATA or demo)")
    args = parser.parse_args(argv)
    from bench_autoencoder import cpu_flags

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, CPU flags: {cpu_flags()}; "
          f"cpu preset, 64x64, batch 16, {args.warmup} warm-up + {args.steps} profiled steps")
    for precision in args.precisions:
        result = profile_precision(precision, warmup=args.warmup, steps=args.steps,
                                   data_root=args.data)
        result["steps"] = args.steps
        print_profile(precision, result, top=args.top)
    time_adamw()


if __name__ == "__main__":
    main()
