"""How fast does latent diffusion sample native 256x256 slices? (issue 11's speed target)

Times, wall clock, the whole of ``pipeline.sample(16, sampler="dpm++2m", steps=20)`` for a
latent model: 20 U-Net evaluations on the ``16 x c x 64 x 64`` latents (f=4) plus the decoder
bringing them to ``16 x 1 x 256 x 256``. fp32, ``torch.inference_mode``, the process's torch
threads (print below), median of ``--repeats`` runs after one warm-up. Goal: <= 10 s on a
2-core CPU.

Then the same sampler in pixel space at 256x256: the same ``cpu`` U-Net preset on
``16 x 1 x 256 x 256`` images. A full 20-step run takes minutes, so it times ``--pixel-steps``
network evaluations and multiplies the median by 20 (a sampler step is one network call plus a
few element-wise operations on the batch, negligible next to it). The ratio of the two is what
the autoencoder buys.

The weights do not change the time: without ``--checkpoint`` the networks are the presets'
randomly initialised ones; with it (a latent export or run) the trained ones. GFLOP are counted
with ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2 FLOP).

Run it on an otherwise idle machine (the load average is printed; other processes on the same
cores make every time longer)::

    python benchmarks/bench_latent_sampling.py --repeats 3
    python benchmarks/bench_latent_sampling.py --checkpoint checkpoints/demo_ldm256_ema.safetensors
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from cpu_info import cpu_flags  # benchmarks/cpu_info.py (the script's folder)
from torch.utils.flop_counter import FlopCounterMode

from oasis_lib.config import TrainConfig
from oasis_lib.models.autoencoder import AutoencoderConfig, AutoencoderKL
from oasis_lib.models.factory import build_pipeline
from oasis_lib.pretrained import load_model

N, STEPS, SIZE = 16, 20, 256


def gflop(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        fn()
    return counter.get_total_flops() / 1e9


def median_s(fn, repeats: int) -> float:
    with torch.inference_mode():
        fn()  # warm-up: allocator, oneDNN kernels
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def show_and_write(text: str, out: str | None) -> None:
    """Print the table, and write it to ``out`` (markdown) when given."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        print(f"\nwrote {out}")


def latent_pipeline(checkpoint: str | None):
    if checkpoint:
        return load_model(checkpoint, device="cpu")
    cfg = TrainConfig.from_preset("cpu", image_size=SIZE, precision="fp32", device="cpu",
                                  latent_scale_factor=1.0, autoencoder="(random init)")
    return build_pipeline(cfg, autoencoder=AutoencoderKL(AutoencoderConfig.preset("cpu")).eval(),
                          warn=False).eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a latent diffusion export or run (default: presets)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pixel-steps", type=int, default=2,
                    help="pixel-space 256x256 U-Net calls timed (then x 20)")
    ap.add_argument("--out", default=None,
                    help="also write the table here, e.g. benchmarks/results/latent_sampling.md")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]

    pipe = latent_pipeline(args.checkpoint)
    if pipe.autoencoder is None:
        raise SystemExit(f"{args.checkpoint} is a pixel-space model; pass a latent one")
    c, h, w = pipe.sample_shape
    g = torch.Generator().manual_seed(0)

    def sample_latent():
        return pipe.sample(N, sampler="dpm++2m", steps=STEPS, generator=g, progress=False)

    z = torch.randn(N, c, h, w)
    t = torch.full((N,), 500)
    unet_gf = gflop(lambda: pipe.model(z[:1], t[:1]))
    decode_gf = gflop(lambda: pipe.autoencoder.decode(z[:1]))
    latent_s = median_s(sample_latent, args.repeats)

    pixel_cfg = TrainConfig.from_preset("cpu", image_size=SIZE, precision="fp32", device="cpu")
    pixel = build_pipeline(pixel_cfg, warn=False).model.eval()
    x = torch.randn(N, 1, SIZE, SIZE)
    pixel_gf = gflop(lambda: pixel(x[:1], t[:1]))

    def pixel_calls():
        for _ in range(args.pixel_steps):
            pixel(x, t)

    pixel_s = median_s(pixel_calls, max(1, args.repeats // 2)) / args.pixel_steps * STEPS

    total_latent = N * (STEPS * unet_gf + decode_gf)
    lines = [
        f"# Sampling {N} slices of {SIZE}x{SIZE}, DPM-Solver++(2M), {STEPS} steps, fp32", "",
        f"CPU: {platform.processor() or platform.machine()}; flags: {cpu_flags()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average before: {load:.2f}", "",
        "| space | network input | GFLOP per image per step | decode GFLOP per image "
        "| total GFLOP | seconds (16 slices) |",
        "|---|---|---|---|---|---|",
        f"| latent (f={SIZE // h}) | {c}x{h}x{w} | {unet_gf:.2f} | {decode_gf:.2f} "
        f"| {total_latent:.0f} | {latent_s:.2f} (measured, median of {args.repeats}) |",
        f"| pixel | 1x{SIZE}x{SIZE} | {pixel_gf:.2f} | - | {N * STEPS * pixel_gf:.0f} "
        f"| {pixel_s:.1f} ({args.pixel_steps} calls timed, x {STEPS}) |", "",
        f"Latent sampling is {pixel_s / latent_s:.1f}x faster than pixel space at "
        f"{SIZE}x{SIZE}. Goal <= 10 s for the latent row: "
        f"{'met' if latent_s <= 10 else 'not met'} ({latent_s:.2f} s)."]
    show_and_write("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
