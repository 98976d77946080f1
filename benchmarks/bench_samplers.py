"""Sample quality against sampler and number of steps, on one checkpoint (a benchmark).

For each (sampler, steps, spacing) it draws ``--n`` samples from the same seed (so every sampler
starts from the same noise), times them, and scores them with :func:`oasis_lib.evaluate_samples`
against the real slices. Every row, DDPM-1000 included, uses the same ``--n`` (default 128):
Fréchet distance and KID are biased by the sample count, so rows at different n do not compare.
Every metric scores the samples against the split the checkpoint never trained on (its
``train_splits``; test for the shipped checkpoint) and is printed next to its **floor**: the
same metric for as many train slices (``oasis_lib.evaluation.report``). Every row shares that
reference, so the rows compare with each other and with DDPM-1000. The gap to the floor is
what sampling (or training) loses (a reference, not a bound: a row can score below it). A
table written before this rule (its floor row says "validate vs train") compared the samples
with train + test slices instead, and validate slices gave the floor.

Columns: ``NFE`` network calls per image; ``s/img`` wall-clock sampling seconds per image on
this machine (batch ``--batch-size``); ``Fréchet`` and ``KID x1e3`` in the tissue segmenter's
feature space (lower is better); ``tissue W1`` the Wasserstein-1 distance of per-slice
CSF/grey/white fractions (lower); ``intensity W1`` the same for in-brain intensities (lower);
``SSIM`` mean pairwise SSIM among the samples (near the floor is right: higher = less
diverse); ``near-copy`` the fraction of samples closer to a training slice (pixel space) than
any held-out slice is (the floor is the chance level).

The goal line checks "a sampler with <= 20 network calls within 5% of DDPM-1000 on both Fréchet
and KID" (value <= 1.05 x DDPM's) against the DDPM row of the same run.

    python benchmarks/bench_samplers.py              # the full table, n = 128 (long: DDPM-1000
                                                     # makes 1000 network calls per image)
    python benchmarks/bench_samplers.py --n 8 --runs ddpm:1000 unipc:20 --out outputs/smoke

Results go to ``--out`` (``benchmarks/results``): ``samplers.md`` and ``samplers.json``, which
the README and notebook 05 read. Both are rewritten after every run, so a stopped benchmark
keeps what it measured; ``--resume`` skips the runs already in ``samplers.json`` (same n, seed
and checkpoint) and measures the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_info import machine_line  # noqa: E402

from oasis_lib.diffusion.samplers import SAMPLERS, SPACINGS, get_sampler  # noqa: E402
from oasis_lib.evaluation import report as evaluation  # noqa: E402
from oasis_lib.evaluation.segmenter import load_segmenter  # noqa: E402
from oasis_lib.pretrained import load_model  # noqa: E402

FAST = ("dpm++2m", "dpm++2m-sde", "dpm++3m", "unipc")
RUNS = ("ddpm:1000", "ddim:10", "ddim:20", "ddim:50",
        *(f"{s}:{n}" for s in FAST for n in (10, 15, 20)),
        *(f"{s}:{n}:karras" for s in FAST for n in (10, 20)))
LABELS = {name: get_sampler(name).display_name for name in SAMPLERS}  # the registry's names
GOAL_NFE, GOAL_RATIO = 20, 1.05
COLUMNS = ("frechet_segmenter", "kid_segmenter", "tissue_fractions", "intensity_histogram",
           "diversity_ssim", "memorization_pixel")


def parse_run(text: str) -> tuple[str, int, str]:
    """``sampler:steps[:spacing]`` -> (sampler, steps, spacing); spacing defaults to trailing."""
    parts = text.split(":")
    sampler, steps = parts[0], parts[1] if len(parts) > 1 else ""
    spacing = parts[2] if len(parts) == 3 else "trailing"
    if (len(parts) not in (2, 3) or sampler not in SAMPLERS or not steps.isdigit()
            or spacing not in SPACINGS):
        raise ValueError(f"bad run {text!r}; expected sampler:steps[:spacing] with sampler one of "
                         f"{SAMPLERS} and spacing one of {SPACINGS}, e.g. unipc:20:karras")
    return sampler, int(steps), spacing


def goal_lines(results: list[dict]) -> list[str]:
    """Which rows with <= GOAL_NFE network calls are within 5% of DDPM-1000 on Fréchet and KID."""
    ddpm = next((r for r in results if r["sampler"] == "ddpm"), None)
    if ddpm is None:
        return ["goal: no DDPM-1000 row in this run, not checked"]
    ref = {k: ddpm["metrics"][k]["value"] for k in ("frechet_segmenter", "kid_segmenter")}
    lines, met = [], []
    for r in results:
        if r["sampler"] == "ddpm" or r["nfe"] > GOAL_NFE:
            continue
        value = {k: r["metrics"][k]["value"] for k in ref}
        # within 5%: value <= ref + 5% |ref| (KID's unbiased estimate can be <= 0)
        ok = all(value[k] <= ref[k] + (GOAL_RATIO - 1) * abs(ref[k]) for k in ref)
        ratios = {k: value[k] / ref[k] if ref[k] > 0 else float("nan") for k in ref}
        met += [r["label"]] if ok else []
        lines.append(f"  {r['label']}: Fréchet {ratios['frechet_segmenter']:.2f}x, "
                     f"KID {ratios['kid_segmenter']:.2f}x DDPM-1000{'  <- meets' if ok else ''}")
    head = (f"goal (<= {GOAL_NFE} NFE within {GOAL_RATIO - 1:.0%} of DDPM-1000 on Fréchet and "
            f"KID, n = {ddpm['n']}): " + (f"met by {', '.join(met)}" if met else "not met"))
    return [head, *lines]


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
    parser.add_argument("--runs", nargs="+", default=list(RUNS),
                        help="sampler:steps[:spacing] ...")
    parser.add_argument("--n", type=int, default=128, help="samples per run (every run)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="data root (default: $OASIS_DATA or demo)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out/samplers.json, measure the rest")
    args = parser.parse_args(argv)
    runs = [parse_run(r) for r in args.runs]

    pipe = load_model(args.checkpoint)
    device = pipe.device
    segmenter = load_segmenter(device=device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = machine_line() + f", device {device.type}"
    print(f"{machine}; checkpoint {args.checkpoint or 'shipped demo'}; "
          f"load average at start {load:.2f}")

    results = []
    if args.resume and (out / "samplers.json").exists():
        kept = json.loads((out / "samplers.json").read_text())
        same = {k: kept["argv"].get(k) == getattr(args, k) for k in ("n", "seed", "checkpoint")}
        if not all(same.values()):
            raise SystemExit(f"error: --resume: {out / 'samplers.json'} was measured with other "
                             f"settings ({', '.join(k for k, v in same.items() if not v)}); "
                             "use another --out or leave out --resume")
        results = [r for r in kept["results"]  # rows of the old rule have no "held_out"
                   if (r["sampler"], r["steps"], r["spacing"]) in runs and "held_out" in r]
        print(f"resume: keeping {len(results)} runs from {out / 'samplers.json'}")
    for sampler, steps, spacing in runs:
        if any((r["sampler"], r["steps"], r["spacing"]) == (sampler, steps, spacing)
               for r in results):
            continue
        n = args.n
        t0 = time.perf_counter()
        samples, spi = evaluation.generate_samples(
            pipe, n, sampler=sampler, steps=steps, spacing=spacing,
            seed=args.seed, batch_size=args.batch_size, progress=True)
        report = evaluation.evaluate_samples(
            samples, data_root=args.data, segmenter=segmenter, device=device, seed=args.seed,
            meta={"sampler": sampler, "steps": steps, "spacing": spacing}, progress=False,
            train_splits=pipe.config.train_splits)
        every_step = get_sampler(sampler).needs_every_step  # ddpm: all T steps, no spacing
        nfe = pipe.schedule.T if every_step else steps
        label = (f"{LABELS[sampler]} {nfe}"
                 + (f" {spacing}" if spacing != "trailing" and not every_step else ""))
        results.append({"sampler": sampler, "steps": steps, "spacing": spacing, "nfe": nfe,
                        "n": n, "label": label, "seconds_per_image": spi,
                        "held_out": report["meta"]["held_out"],
                        "metrics": report["metrics"], "total_seconds": time.perf_counter() - t0})
        print(f"{label}  n={n}  {spi:.3f} s/img  "
              f"frechet {report['metrics']['frechet_segmenter']['value']:.2f}  "
              f"kid {report['metrics']['kid_segmenter']['value'] * 1e3:.2f}e-3", flush=True)
        results.sort(key=lambda r: runs.index((r["sampler"], r["steps"], r["spacing"])))
        write(out, results, args, machine, load)
    results.sort(key=lambda r: runs.index((r["sampler"], r["steps"], r["spacing"])))
    write(out, results, args, machine, load)


def write(out: Path, results: list[dict], args, machine: str, load: float) -> None:
    """Rewrite ``samplers.md`` and ``samplers.json`` from the runs measured so far."""
    header = ("| sampler (n) | NFE | s/img | Fréchet | KID x1e3 | tissue W1 | intensity W1 | "
              "SSIM | near-copy |\n|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in results:
        lines.append(row(f"{r['label']} ({r['n']})", r["nfe"], r["seconds_per_image"],
                         r["metrics"]))
    compared = results[0]["metrics"]["frechet_segmenter"].get("n_compared", args.n)
    held = results[0].get("held_out", "held-out")
    lines.append(row(f"floor: real train vs {held} ({compared})", "", None,
                     results[0]["metrics"], key="floor"))
    goal = goal_lines(results)
    table = f"{machine}\n\n" + "\n".join(lines) + "\n\n" + "\n".join(goal)
    print(table)
    (out / "samplers.md").write_text(table + "\n")
    (out / "samplers.json").write_text(json.dumps(
        {"argv": vars(args), "machine": machine, "torch": torch.__version__,
         "threads": torch.get_num_threads(), "load_average_at_start": load, "goal": goal,
         "results": results}, indent=1, default=str))
    print(f"wrote {out / 'samplers.md'} and {out / 'samplers.json'}")


if __name__ == "__main__":
    main()
