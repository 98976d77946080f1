"""Speed knobs of one training step, timed interleaved (a benchmark, not a test).

Acts on ``benchmarks/results/profile_step.md``: builds the real
:class:`~oasis_lib.training.trainer.Trainer` (``cpu`` preset, 64x64, batch 16, the shipped
recipe) once per variant and times ``Trainer.train_step`` in rounds that call every variant
once, in an order rotated from round to round, on the same batches (so a change in machine
load hits every variant alike); it prints the median seconds per step.

* ``fp32 foreach`` / ``fp32 fused``: AdamW's ``foreach`` kernel against ``fused=True``
  (``TrainConfig.fused_optimizer``). Both trainers start from the same weights and see the
  same batches, flips, t and noise, so the largest weight difference after the timed steps
  says how far the two kernels' float rounding drifts apart.
* ``bf16 ...``: under bf16 autocast, the attention left to autocast (bf16
  ``scaled_dot_product_attention``, which picks the fused flash kernel on a CPU: the code
  before ``unet.attend``), the same call forced to the math kernel
  (``sdpa_kernel(SDPBackend.MATH)``), and the attention product kept in fp32 under autocast
  (q, k, v cast to fp32, autocast off around the call: what ``unet.attend`` now does).

``--attention`` times only the attention layers instead (less exposed to machine load than
whole steps): every ``Attention`` module of the ``cpu`` U-Net on the input it sees in a
batch-16 forward, forward + backward under bf16 autocast, per variant, interleaved, summed
over the layers (median over ``--reps``).

Keep it short on a shared machine (one thread, about two CPU-minutes):

    OMP_NUM_THREADS=1 python benchmarks/bench_step_options.py --rounds 6
    OMP_NUM_THREADS=1 python benchmarks/bench_step_options.py --attention --reps 30
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from oasis_lib.models import unet as unet_module

_ORIGINAL_ATTENTION = unet_module.Attention.forward


def _attention(self, x: torch.Tensor, *, fp32: bool) -> torch.Tensor:
    """``unet.Attention.forward`` with the product in fp32 under autocast (``fp32``: what
    ``unet.attend`` does on a CPU) or left to autocast (bf16: the code before)."""
    b, c, h, w = x.shape
    tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
    q, k, v = (u.transpose(1, 2) for u in
               self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).unbind(2))
    if fp32:
        with torch.autocast(x.device.type, enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    else:
        out = F.scaled_dot_product_attention(q, k, v)
    out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
    return x + out.view(b, h, w, c).permute(0, 3, 1, 2)


def _bf16_attention(self, x):
    return _attention(self, x, fp32=False)


def _fp32_attention(self, x):
    return _attention(self, x, fp32=True)


def _math_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


VARIANTS = {  # name: (precision, fused_optimizer, attention forward, context of the step)
    "fp32 foreach": ("fp32", False, _ORIGINAL_ATTENTION, contextlib.nullcontext),
    "fp32 fused": ("fp32", True, _ORIGINAL_ATTENTION, contextlib.nullcontext),
    "bf16 fused, sdpa (flash)": ("bf16", True, _bf16_attention, contextlib.nullcontext),
    "bf16 fused, sdpa math kernel": ("bf16", True, _bf16_attention, _math_kernel),
    "bf16 fused, attention in fp32": ("bf16", True, _fp32_attention, contextlib.nullcontext),
}


ATTENTION_VARIANTS = {"sdpa (flash)": (_bf16_attention, contextlib.nullcontext),
                      "sdpa math kernel": (_bf16_attention, _math_kernel),
                      "attention in fp32": (_fp32_attention, contextlib.nullcontext)}


def time_attention(reps: int) -> None:
    """Forward + backward of the cpu U-Net's attention layers under bf16 autocast."""
    from oasis_lib.models.unet import UNet

    torch.manual_seed(0)
    model = UNet("cpu")
    for m in model.modules():  # (proj starts at zero: the output would be x, whatever the kernel)
        if isinstance(m, unet_module.Attention):
            torch.nn.init.normal_(m.proj.weight, std=0.1)
    inputs = []
    layers = [m for m in model.modules() if isinstance(m, unet_module.Attention)]
    hooks = [m.register_forward_hook(lambda mod, args, out: inputs.append((mod, args[0])))
             for m in layers]
    with torch.no_grad():
        model(torch.randn(16, 1, 64, 64), torch.randint(0, 1000, (16,)))
    for h in hooks:
        h.remove()
    shapes = ", ".join(f"{tuple(x.shape)} x {mod.heads} heads" for mod, x in inputs)
    print(f"attention layers (input, heads): {shapes}")

    def run(name: str) -> float:
        forward, context = ATTENTION_VARIANTS[name]
        unet_module.Attention.forward = forward
        try:
            t0 = time.perf_counter()
            for mod, x in inputs:
                x = x.detach().requires_grad_(True)
                with context(), torch.autocast("cpu", dtype=torch.bfloat16):
                    out = mod(x)
                out.float().square().mean().backward()
            return time.perf_counter() - t0
        finally:
            unet_module.Attention.forward = _ORIGINAL_ATTENTION

    names = list(ATTENTION_VARIANTS)
    outs = {}
    for name in names:  # warm-up, and the outputs compared with the fp32 reference
        run(name)
        forward, context = ATTENTION_VARIANTS[name]
        unet_module.Attention.forward = forward
        with torch.no_grad(), context(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs[name] = [mod(x).float() for mod, x in inputs]
        unet_module.Attention.forward = _ORIGINAL_ATTENTION
    with torch.no_grad():
        ref = [mod(x) for mod, x in inputs]  # fp32, no autocast
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(reps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(run(name))
    print("\n| bf16 autocast, attention layers fwd + bwd | median ms | min ms "
          "| max abs error vs fp32 |")
    print("|---|---|---|---|")
    for name in names:
        err = max(float((o - r).abs().max()) for o, r in zip(outs[name], ref, strict=True))
        print(f"| {name} | {1e3 * statistics.median(times[name]):.1f} | "
              f"{1e3 * min(times[name]):.1f} | {err:.2e} |")


def main(argv: list[str] | None = None) -> None:
    from cpu_info import cpu_flags

    from oasis_lib.config import DEMO_RECIPE, TrainConfig
    from oasis_lib.data import load_splits
    from oasis_lib.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--data", default=None, help="data root (default $OASIS_DATA or demo)")
    parser.add_argument("--attention", action="store_true",
                        help="time only the attention layers (module docstring)")
    parser.add_argument("--reps", type=int, default=30, help="--attention: timed repetitions")
    args = parser.parse_args(argv)
    if args.attention:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags: "
              f"{cpu_flags()}; {args.reps} interleaved repetitions")
        time_attention(args.reps)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, CPU flags: {cpu_flags()}, torch CPU "
          f"capability {torch.backends.cpu.get_cpu_capability()}; cpu preset, 64x64, batch 16, "
          f"{args.warmup} warm-up + {args.rounds} interleaved rounds")
    train_set, val_set = load_splits(args.data, image_size=64, augment=False)
    g = torch.Generator().manual_seed(0)
    batches = [torch.stack([train_set[int(i)] for i in
                            torch.randint(0, len(train_set), (16,), generator=g)])
               for _ in range(args.warmup + args.rounds)]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for name in args.variants:
            precision, fused = VARIANTS[name][:2]
            cfg = TrainConfig.from_preset(
                "cpu", **DEMO_RECIPE, precision=precision, fused_optimizer=fused,
                out_dir=f"{tmp}/{len(trainers)}", progress=False, val_size=16)
            trainers[name] = Trainer(cfg, train_set=train_set, val_set=val_set)

        def step(name: str, x0: torch.Tensor) -> float:
            unet_module.Attention.forward = VARIANTS[name][2]
            try:
                with VARIANTS[name][3]():
                    t0 = time.perf_counter()
                    trainers[name].train_step(x0)
                    return time.perf_counter() - t0
            finally:
                unet_module.Attention.forward = _ORIGINAL_ATTENTION

        names = list(trainers)
        for name in names:
            for x0 in batches[:args.warmup]:
                step(name, x0)
        times: dict[str, list[float]] = {n: [] for n in names}
        for i, x0 in enumerate(batches[args.warmup:]):
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[name].append(step(name, x0))
        print("\n| variant | median s/step | img/s | min s/step |")
        print("|---|---|---|---|")
        for name in names:
            med = statistics.median(times[name])
            print(f"| {name} | {med:.3f} | {16 / med:.2f} | {min(times[name]):.3f} |")
        if {"fp32 foreach", "fp32 fused"} <= set(names):
            a = trainers["fp32 foreach"].raw_model.state_dict()
            b = trainers["fp32 fused"].raw_model.state_dict()
            diff = max(float((a[k] - b[k]).abs().max()) for k in a)
            scale = max(float(a[k].abs().max()) for k in a)
            print(f"\nfp32 foreach vs fused after {args.warmup + args.rounds} identical steps: "
                  f"max |weight difference| {diff:.2e} (largest |weight| {scale:.2f})")
        for trainer in trainers.values():
            trainer.lock.release()


if __name__ == "__main__":
    main()
