"""Sample quality against sampler and number of steps, on one checkpoint (a benchmark).

For each (sampler, steps) it draws ``--n`` samples from the same seed (so every sampler starts
from the same noise), times them, and scores them with :func:`oasis_lib.evaluate_samples`
against the real slices. Every metric is printed next to its **floor**: the same metric for
real held-out (validate) slices against the training slices at the same sample size. A model
cannot be expected to beat its floor; the gap to it is what sampling (or training) loses.

Columns: ``NFE`` network calls per image; ``s/img`` wall-clock sampling seconds per image on
this machine (batch ``--batch-size``); ``Fréchet`` and ``KID x1e3`` in the tissue segmenter's
feature space (lower is better); ``tissue W1`` the Wasserstein-1 distance of per-slice
CSF/grey/white fractions (lower); ``intensity W1`` the same for in-brain intensities (lower);
``SSIM`` mean pairwise SSIM among the samples (near the floor is right: higher = less
diverse); ``near-copy`` the fraction of samples closer to a training slice (pixel space) than
any validate slice is (the floor is what real held-out slices score).

    python benchmarks/bench_samplers.py                      # the issue's table, n = 100
    python benchmarks/bench_samplers.py --n 500 --ddpm-n 100 # closer to the evaluate default
    python benchmarks/bench_samplers.py --runs ddim:10 dpm++2m:10 --n 32   # a quick look

Results go to ``--out`` (``benchmarks/results``): ``samplers.md`` and ``samplers.json``, which
the README and notebook 06 read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from oasis_lib.evaluation import report as evaluation
from oasis_lib.evaluation.segmenter import load_segmenter
from oasis_lib.pretrained import load_model

RUNS = ("ddpm:1000", "ddim:10", "ddim:25", "ddim:50", "ddim:100",
        "dpm++2m:10", "dpm++2m:15", "dpm++2m:25")
COLUMNS = ("frechet_segmenter", "kid_segmenter", "tissue_fractions", "intensity_histogram",
           "diversity_ssim", "memorization_pixel")


def parse_run(text: str) -> tuple[str, int]:
    sampler, _, steps = text.partition(":")
    if sampler not in ("ddpm", "ddim", "dpm++2m") or not steps.isdigit():
        raise ValueError(f"bad run {text!r}; expected sampler:steps with sampler one of "
                         "ddpm, ddim, dpm++2m, e.g. ddim:50")
    return sampler, int(steps)


def row(name: str, nfe, spi, metrics: dict, key: str = "value") -> str:
    def cell(metric: str, scale: float = 1.0, digits: int = 3) -> str:
        value = metrics[metric][key]
        return "n/a" if value is None else f"{value * scale:.{digits}f}"

    timing = "" if spi is None else f"{spi:.3f}"
    return (f"| {name} | {nfe} | {timing} | {cell('frechet_segmenter', digits=2)} | "
            f"{cell('kid_segmenter', 1e3, 2)} | {cell('tissue_fractions', digits=4)} | "
            f"{cell('intensity_histogram', digits=4)} | {cell('diversity_ssim')} | "
            f"{cell('memorization_pixel', digits=2)} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped demo model")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="sampler:steps ...")
    parser.add_argument("--n", type=int, default=100, help="samples per run")
    parser.add_argument("--ddpm-n", type=int, default=50,
                        help="samples for the 1000-step DDPM run (the slow one)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="data root (default: $OASIS_DATA or demo)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    runs = [parse_run(r) for r in args.runs]

    pipe = load_model(args.checkpoint)
    device = pipe.device
    segmenter = load_segmenter(device=device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"device {device.type}; checkpoint {args.checkpoint or 'shipped demo'}; "
          f"load average at start {load:.2f}")

    results = []
    for sampler, steps in runs:
        n = args.ddpm_n if sampler == "ddpm" else args.n
        t0 = time.perf_counter()
        samples, spi = evaluation.generate_samples(
            pipe, n, sampler=sampler, steps=steps,
            seed=args.seed, batch_size=args.batch_size, progress=True)
        report = evaluation.evaluate_samples(
            samples, data_root=args.data, segmenter=segmenter, device=device, seed=args.seed,
            meta={"sampler": sampler, "steps": steps}, progress=False)
        nfe = pipe.schedule.T if sampler == "ddpm" else steps
        results.append({"sampler": sampler, "steps": steps, "nfe": nfe, "n": n,
                        "seconds_per_image": spi, "metrics": report["metrics"],
                        "total_seconds": time.perf_counter() - t0})
        print(f"{sampler}:{steps}  n={n}  {spi:.3f} s/img  "
              f"frechet {report['metrics']['frechet_segmenter']['value']:.2f}", flush=True)

    header = ("| sampler (n) | NFE | s/img | Fréchet | KID x1e3 | tissue W1 | intensity W1 | "
              "SSIM | near-copy |\n|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in results:
        label = f"{'DPM-Solver++(2M)' if r['sampler'] == 'dpm++2m' else r['sampler'].upper()} " \
                f"{r['steps']} ({r['n']})"
        lines.append(row(label, r["nfe"], r["seconds_per_image"], r["metrics"]))
    for n in sorted({r["n"] for r in results}, reverse=True):  # floors depend on set size
        first = next(r for r in results if r["n"] == n)
        compared = first["metrics"]["frechet_segmenter"].get("n_compared", n)
        lines.append(row(f"floor: real validate vs train ({compared})", "", None,
                         first["metrics"], key="floor"))
    table = "\n".join(lines)
    print(table)
    (out / "samplers.md").write_text(table + "\n")
    (out / "samplers.json").write_text(json.dumps(
        {"argv": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "load_average_at_start": load, "results": results}, indent=1, default=str))
    print(f"wrote {out / 'samplers.md'} and {out / 'samplers.json'}")


if __name__ == "__main__":
    main()
