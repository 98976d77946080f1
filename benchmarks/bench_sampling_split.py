"""Where the time of latent sampling goes: network calls, decoding, and the rest (a benchmark).

``pipe.sample(16)`` of a latent model is ``steps`` U-Net calls on ``16 x c x 64 x 64`` latents,
then one decoder pass to ``16 x 1 x 256 x 256``, and the sampler's own arithmetic between the
calls. This script times each part on its own (median of ``--repeats`` after a warm-up, under
``torch.inference_mode``), counts its FLOPs (``torch.utils.flop_counter``: one multiply-add = 2
FLOP), and prints GFLOP and GFLOP/s per part, for each way of running it:

* ``fp32``: as ``pipe.sample`` runs today;
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the part, only where the CPU has
  native bf16 (``oasis_lib.training.precision.cpu_bf16_flags``; emulated bf16 is many times
  slower, so the row is skipped and the reason printed);
* ``channels_last``: the network's weights and inputs in NHWC (``torch.channels_last``);
* ``compile``: ``torch.compile`` of the part (the first call's compile time is printed apart:
  it pays back only if the saving per call, times the calls of one ``sample``, exceeds it).

The whole ``sample`` is timed as well (fp32); "rest" is that minus the parts. Run it on idle
cores (the load average is printed; other processes make every time longer)::

    python benchmarks/bench_sampling_split.py \\
        --checkpoint checkpoints/demo_ldm256_rf_ema.safetensors
    python benchmarks/bench_sampling_split.py --checkpoint FILE --modes fp32 bf16 --out FILE.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from bench_latent_sampling import gflop, median_s, show_and_write  # the script's folder
from cpu_info import machine_line

from oasis_lib.diffusion.sampling_defaults import resolve_sampling
from oasis_lib.pretrained import load_model
from oasis_lib.training.precision import cpu_bf16_flags

MODES = ("fp32", "bf16", "channels_last", "compile")


def prepared(owner: torch.nn.Module, method: str, mode: str):
    """A call of ``owner`` (``method`` ``"forward"``) or of its ``method`` (e.g. ``"decode"``)
    made ready for ``mode``: weights and 4-D inputs in NHWC for channels_last, compiled for
    compile, under bf16 autocast for bf16."""
    if mode == "channels_last":
        owner.to(memory_format=torch.channels_last)
    fn = owner if method == "forward" else getattr(owner, method)
    if mode == "compile":
        fn = torch.compile(fn)

    def call(*inputs):
        if mode == "channels_last":
            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4
                           else x for x in inputs)
        if mode == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(*inputs)
        return fn(*inputs)

    return call


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a latent diffusion export")
    ap.add_argument("--n", type=int, default=16, help="slices per sample call")
    ap.add_argument("--steps", type=int, default=None, help="network calls (default: the file's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    pipe = load_model(args.checkpoint, device="cpu")
    if pipe.autoencoder is None:
        raise SystemExit(f"error: {args.checkpoint} is a pixel-space model; pass a latent one")
    choice = resolve_sampling(pipe.sampling_defaults, pipe.process, None, args.steps)
    steps = choice.step_count(pipe.process)
    z = torch.randn(args.n, *pipe.sample_shape, generator=torch.Generator().manual_seed(0))
    tau = torch.full((args.n,), 0.5 * pipe.process.T)
    net, decoder = pipe.model.eval(), pipe.autoencoder.eval()
    latents = z / pipe.scale_factor  # what the decoder receives from pipe.decode
    parts = {"network call": (net, "forward", (z, tau)),
             "decode": (decoder, "decode", (latents,))}
    gfs = {"network call": gflop(lambda: net(z, tau)), "decode": gflop(lambda: pipe.decode(z))}

    native_bf16 = bool(cpu_bf16_flags())
    rows, skipped = [], []
    for mode in args.modes:
        if mode == "bf16" and not native_bf16:
            skipped.append("bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16), where "
                           "bf16 is emulated and slower")
            continue
        for name, (owner, method, inputs) in parts.items():
            call = prepared(owner, method, mode)
            t0 = time.perf_counter()
            with torch.inference_mode():
                call(*inputs)  # the first call: warm-up, and compilation for compile
            first = time.perf_counter() - t0
            seconds = median_s(lambda c=call, i=inputs: c(*i), args.repeats)
            rows.append((mode, name, gfs[name], seconds, first))
            owner.to(memory_format=torch.contiguous_format)

    def whole():
        return pipe.sample(args.n, steps=args.steps, generator=torch.Generator().manual_seed(0),
                           progress=False)

    total = median_s(whole, args.repeats)
    fp32 = {name: s for mode, name, _, s, _ in rows if mode == "fp32"}
    lines = [f"# Where the time of sampling {args.n} slices goes ({choice.describe(pipe.process)})",
             "", f"{machine_line()}; load average before: {load:.2f}; "
             f"{Path(args.checkpoint).name}", "",
             "| mode | part | GFLOP per call | calls per sample | seconds per call | "
             "seconds per sample | GFLOP/s | first call (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, name, gf, seconds, first in rows:
        calls = steps if name == "network call" else 1
        lines.append(f"| {mode} | {name} | {gf:.1f} | {calls} | {seconds:.3f} | "
                     f"{calls * seconds:.2f} | {gf / seconds:.0f} | {first:.2f} |")
    if fp32:
        parts_s = steps * fp32.get("network call", 0.0) + fp32.get("decode", 0.0)
        lines += ["", f"Whole `pipe.sample({args.n})`, fp32: {total:.2f} s; network calls "
                  f"{steps * fp32.get('network call', 0.0):.2f} s, decode "
                  f"{fp32.get('decode', 0.0):.2f} s, the rest (sampler arithmetic, noise, "
                  f"copies) {total - parts_s:.2f} s."]
    lines += [f"Skipped: {s}." for s in skipped]
    show_and_write("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
