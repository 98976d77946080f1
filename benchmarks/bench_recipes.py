"""Our `cpu` recipe against the seed's recipe at the same training-time budget (a benchmark).

Both recipes train from scratch on the same data for ``--minutes`` of CPU time in optimiser
steps each (``TrainConfig.max_minutes`` with ``budget_clock="cpu"``: the process's CPU seconds,
all threads, so that other jobs on the machine do not shorten one recipe's budget; validation
and sample grids are not counted), then draw ``--n``
samples with the same sampler and seed, scored by :func:`oasis_lib.evaluate_samples` against
the real slices, next to the real-vs-real floor.

* ``cpu``: ``DEMO_RECIPE`` on the ``cpu`` preset, what trained the shipped demo checkpoint
  (4.1M-parameter U-Net, cosine T = 1000, v-prediction, MSE with min-SNR-5, AdamW 3e-4 with
  warm-up and clipping, EMA 0.999).
* ``seed``: ``SEED_RECIPE``, the project's seed (62.6M SimpleUNet, quadratic T = 500,
  eps-prediction, L1, Adam 1e-3, no EMA).

Both use batch 16 at 64x64 with random flips, fp32, and DDIM with 50 steps for sampling (the
seed itself ran all 500 ancestral steps; DDIM keeps the comparison about training).

    python benchmarks/bench_recipes.py                    # 15 CPU-minutes per recipe, n = 100
    python benchmarks/bench_recipes.py --minutes 2 --n 32 # a quick look

Run folders (resumable checkpoints, metrics, evaluation figures) go to ``--work``
(``outputs/bench_recipes``); the table to ``--out`` (``benchmarks/results``): ``recipes.md`` and
``recipes.json``, which the README and notebook 06 read.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from oasis_lib.config import DEMO_RECIPE, SEED_RECIPE, TrainConfig
from oasis_lib.evaluation import report as evaluation
from oasis_lib.evaluation.segmenter import load_segmenter
from oasis_lib.models.unet import count_parameters
from oasis_lib.pretrained import load_model
from oasis_lib.training import train

RECIPES = {"cpu": DEMO_RECIPE, "seed": SEED_RECIPE}
METRICS = (("frechet_segmenter", "Fréchet (segmenter features)", 1.0, 2),
           ("kid_segmenter", "KID x1e3", 1e3, 2),
           ("tissue_fractions", "tissue-fraction W1", 1.0, 4),
           ("intensity_histogram", "in-brain intensity W1", 1.0, 4),
           ("diversity_ssim", "pairwise SSIM (diversity)", 1.0, 3),
           ("memorization_pixel", "near-copy fraction (pixel)", 1.0, 2))


def recipe_config(name: str, out: Path, minutes: float, data_root, seed: int) -> TrainConfig:
    recipe = dict(RECIPES[name])
    return TrainConfig.from_preset(
        "cpu", **recipe, max_minutes=minutes, budget_clock="cpu", epochs=10_000,
        out_dir=str(out / name), data_root=data_root, seed=seed, validate_every=10_000,
        sample_every=10_000, checkpoint_every=100, progress=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training time per recipe")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--n", type=int, default=100, help="samples per recipe")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--batch-size", type=int, default=50, help="sampling batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="data root (default: $OASIS_DATA or demo)")
    parser.add_argument("--work", default="outputs/bench_recipes", help="run folders")
    parser.add_argument("--out", default="benchmarks/results", help="table and JSON")
    parser.add_argument("--resume", action="store_true", help="continue runs in --out")
    args = parser.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.minutes} min "
          f"per recipe; load average at start {load:.2f}")

    results = {}
    for name in args.recipes:
        cfg = recipe_config(name, work, args.minutes, args.data, args.seed)
        t0 = time.perf_counter()
        result = train(cfg, resume=args.resume and (work / name / "last.pt").exists())
        wall = time.perf_counter() - t0
        pipe = load_model(work / name / "last.pt")  # EMA weights
        device = pipe.device
        samples, spi = evaluation.generate_samples(
            pipe, args.n, sampler="ddim", steps=args.steps, seed=args.seed,
            batch_size=args.batch_size)
        report = evaluation.evaluate_samples(
            samples, data_root=args.data, segmenter=load_segmenter(device=device),
            out=work / name / "eval", device=device, seed=args.seed, progress=False,
            meta={"recipe": name, "sampler": "ddim", "steps": args.steps},
            train_splits=pipe.config.train_splits)  # the run's own: test held out by default
        results[name] = {"params": count_parameters(pipe.model), "steps": result.step,
                         "images_per_s": result.images_per_second, "train_wall_seconds": wall,
                         "seconds_per_image": spi, "metrics": report["metrics"]}
        print(f"{name}: {result.step} steps, {result.images_per_second:.2f} img/s, "
              f"{spi:.3f} s/img sampling", flush=True)

    names = list(results)

    def line(label: str, cells) -> str:
        return f"| {label} | {' | '.join(cells)} |"

    def fmt(value, scale: float = 1.0, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value * scale:.{digits}f}"

    lines = [line("metric (lower is better unless noted)", [*names, "floor"]),
             "|---|" + "---|" * (len(names) + 1),
             line("parameters", [f"{results[k]['params']:,}" for k in names] + [""]),
             line(f"optimiser steps in {args.minutes:g} min",
                  [str(results[k]["steps"]) for k in names] + [""]),
             line("training images/s", [fmt(results[k]["images_per_s"], digits=1)
                                        for k in names] + [""]),
             line(f"sampling s/img (DDIM {args.steps})",
                  [fmt(results[k]["seconds_per_image"]) for k in names] + [""])]
    for key, label, scale, digits in METRICS:
        cells = [results[k]["metrics"][key]["value"] for k in names]
        cells.append(results[names[0]]["metrics"][key]["floor"])
        lines.append(line(label, [fmt(v, scale, digits) for v in cells]))
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipes.md").write_text(table + "\n")
    (out / "recipes.json").write_text(json.dumps(
        {"argv": vars(args), "torch": torch.__version__, "load_average_at_start": load,
         "results": results}, indent=1, default=str))
    print(f"wrote {out / 'recipes.md'} and {out / 'recipes.json'}")


if __name__ == "__main__":
    main()
