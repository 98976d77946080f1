"""Pixel-space diffusion at 64x64 against latent diffusion at 256x256.

Samples ``--n`` slices from each model with the same sampler (DPM-Solver++(2M), ``--steps``;
a rectified-flow latent model: Euler on the flow ODE, its default, at the same steps),
times them, and scores them with the evaluation of notebook 06 (each metric next to its
real-vs-real reference, the "floor"). Both models are scored against the same held-out set,
the validate slices, the one split neither model trained on (both learned from train; the
latent model of an earlier table from train + test); the floor is the same metric for as many
train and test slices against validate (``oasis_lib.evaluation.report``):

* **at 64x64**, for a side by side: the pixel model's samples as they are, the latent model's
  256x256 samples area-downsampled to 64x64, both with the shipped 64x64 segmenter;
* **at 128x128**, closer to the latent model's native resolution: its samples area-downsampled
  to 128x128 and scored with a segmenter trained at 128x128 (``--segmenter128``), against a
  128x128 floor. The pixel model has no row here: upsampling its 64x64 samples would only add
  blur;
* **texture at 256x256** (latent models only): the |Laplacian| and high-frequency share ratios of
  ``oasis_lib.evaluation.texture`` (samples against validate slices, unpaired), each with its
  floor, the same ratio for train slices.

Prints a Markdown table (parameters, training CPU time as given on the command line from
checkpoints/README.md, seconds per sample, every metric with its floor), the CPU flags and the
load average at the start and the end, and writes it with a JSON copy to ``--out``. Two times
per sample: the process's CPU time, which on one thread (``OMP_NUM_THREADS=1``) hardly depends
on what else the machine runs, and the wall-clock time, which does. The shipped pair::

    OMP_NUM_THREADS=1 python benchmarks/bench_latent_vs_pixel.py --n 128 \\
        --pixel checkpoints/demo_cpu64_ema.safetensors \\
        --latent checkpoints/demo_ldm256_ema.safetensors \\
        --segmenter128 checkpoints/segmenter_demo128.safetensors \\
        --train-cpu-minutes 88 121

The run of ``benchmarks/results/latent_vs_pixel.md`` took about 13 minutes of wall-clock time
on a 2-core machine at a load average of 5-7 (its header gives the load at start and end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from cpu_info import cpu_flags  # benchmarks/cpu_info.py (the script's folder)

from oasis_lib.diffusion.samplers import display_name
from oasis_lib.evaluation.report import evaluate_samples, generate_samples
from oasis_lib.evaluation.segmenter import load_segmenter
from oasis_lib.models.unet import count_parameters
from oasis_lib.pretrained import load_model

HERE = Path(__file__).resolve().parent
METRICS = (("frechet_segmenter", "Fréchet (segmenter)", 3), ("kid_segmenter", "KID", 4),
           ("tissue_fractions", "tissue W1", 4), ("intensity_histogram", "intensity W1", 4),
           ("diversity_ssim", "pairwise SSIM", 3))


def area(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def scores(samples: torch.Tensor, segmenter, seed: int, *, texture: bool = False) -> dict:
    """Scored as if both models had trained on train + test: the held-out split is validate,
    which no model here trained on, so every model and every earlier table share one yardstick.
    ``texture``: add the texture metrics at the samples' own size."""
    report = evaluate_samples(samples, segmenter=segmenter, seed=seed, progress=False,
                              train_splits=("train", "test"), texture=texture)
    return report.to_dict()["metrics"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixel", default=None, help="pixel model (default: the shipped one)")
    ap.add_argument("--latent", required=True, help="latent diffusion export or run")
    ap.add_argument("--segmenter128", default=None, help="a 128x128 segmenter (.safetensors)")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-cpu-minutes", type=float, nargs=2, metavar=("PIXEL", "LATENT"),
                    help="training CPU minutes of the two checkpoints (checkpoints/README.md)")
    ap.add_argument("--out", default=str(HERE / "results" / "latent_vs_pixel"))
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]

    rows, row_sampler = {}, {}
    seg64 = load_segmenter(device="cpu")
    for name, path in (("pixel 64x64", args.pixel), ("latent 256x256", args.latent)):
        pipe = load_model(path, device="cpu")
        cpu0 = time.process_time()
        # DPM-Solver++(2M) for a VP model; a model of another process with its own default
        # sampler (rectified flow: Euler on the flow ODE), at the same number of steps
        sampler = "dpm++2m" if pipe.process.name == "vp" else pipe.process.default_sampler
        row_sampler[name] = sampler
        samples, spi = generate_samples(pipe, args.n, sampler=sampler, steps=args.steps,
                                        seed=args.seed, batch_size=16, progress=False)
        cpu_spi = (time.process_time() - cpu0) / args.n
        params = count_parameters(pipe.model)
        ae_params = count_parameters(pipe.autoencoder) if pipe.autoencoder is not None else 0
        row = {"parameters": params, "autoencoder_parameters": ae_params,
               "seconds_per_sample": spi, "cpu_seconds_per_sample": cpu_spi,
               "size": samples.shape[-1],
               "at64": scores(area(samples, 64), seg64, args.seed)}
        if pipe.autoencoder is not None and args.segmenter128:
            seg128 = load_segmenter(args.segmenter128, device="cpu")
            row["at128"] = scores(area(samples, 128), seg128, args.seed)
        if pipe.autoencoder is not None:  # the texture at the native size, where the decoder blurs
            row["texture256"] = {k: v for k, v in scores(samples, seg64, args.seed,
                                                         texture=True).items()
                                 if k.startswith("texture_")}
        rows[name] = row
    if args.train_cpu_minutes:
        for name, minutes in zip(rows, args.train_cpu_minutes, strict=True):
            rows[name]["train_cpu_minutes"] = minutes
    load_end = os.getloadavg()[0]

    columns = []  # (label, row name, key of the scores)
    for name, row in rows.items():
        columns.append((f"{name}, scored at 64", name, "at64"))
        if "at128" in row:
            columns.append((f"{name}, scored at 128", name, "at128"))
    samplers = ", ".join(dict.fromkeys(display_name(v) for v in row_sampler.values()))
    lines = [f"# Pixel 64x64 against latent 256x256 ({samplers}, {args.steps} steps, "
             f"n = {args.n})", "",
             f"CPU: {platform.processor() or platform.machine()}; flags: {cpu_flags()}; torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads; load average at start "
             f"{load:.2f}, at the end {load_end:.2f}", "",
             "| | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]

    def cell(name, fmt):
        return " | ".join(fmt(rows[r], key) for _, r, key in columns)

    lines.append("| U-Net + autoencoder parameters | " + cell(None, lambda r, k: (
        f"{r['parameters']:,} + {r['autoencoder_parameters']:,}")) + " |")
    lines.append("| training CPU minutes | " + cell(None, lambda r, k: (
        f"{r['train_cpu_minutes']:.0f}" if "train_cpu_minutes" in r else "-")) + " |")
    lines.append("| CPU seconds per sample (batch 16) | " + cell(None, lambda r, k: (
        f"{r['cpu_seconds_per_sample']:.3f}")) + " |")
    lines.append("| wall-clock seconds per sample (batch 16) | " + cell(None, lambda r, k: (
        f"{r['seconds_per_sample']:.3f}")) + " |")
    for key, label, digits in METRICS:
        def fmt(r, k, key=key, digits=digits):
            m = r[k].get(key)
            if not m or m.get("value") is None:
                return "-"
            floor = "" if m.get("floor") is None else f" ({m['floor']:.{digits}f})"
            return f"{m['value']:.{digits}f}{floor}"
        lines.append(f"| {label} (floor) | " + cell(None, fmt) + " |")
    for key, label in (("texture_laplacian", r"\|Laplacian\| ratio at 256, median (floor)"),
                       ("texture_hf_share", "high-frequency share ratio at 256, median (floor)")):
        def tex(r, k, key=key):
            m = r.get("texture256", {}).get(key)
            return "-" if m is None else f"{m['value']:.2f} ({m['floor']:.2f})"
        lines.append(f"| {label} | " + cell(None, tex) + " |")
    dice = " | ".join(f"{rows[r][k]['segmenter_dice']['value']:.3f}" for _, r, k in columns)
    lines.append(f"| segmenter's validate Dice (trust in the above) | {dice} |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"n": args.n, "steps": args.steps, "samplers": row_sampler, "cpu_flags": cpu_flags(),
         "load_average": load,
         "load_average_end": load_end,
         "rows": rows}, indent=1, default=float))
    print(f"\nwrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
