"""Quality against network calls: rectified flow (Euler, Heun) against VP diffusion
(DPM-Solver++(2M), Karras spacing), two 64x64 models trained alike (a benchmark).

The two models share everything but the objective: the ``cpu`` U-Net preset, batch 16, AdamW
3e-4 with 200 warm-up steps, clipping at 1.0, EMA 0.999, the same steps, seed and train split.
VP: cosine schedule, v-prediction, MSE with min-SNR-5 (the demo recipe). Rectified flow:
x_t = (1 - t) x0 + t eps, velocity target, plain MSE, logit-normal t (Esser et al. 2024
sec. 3.1, m = 0, s = 1). Each model draws ``--n`` samples per budget of network calls (NFE)
from the same seed; Heun calls the network 2 k - 1 times for k intervals, so its row uses the
largest k within the budget and prints the calls it made. Samples are scored by
``oasis_lib.evaluation.report.evaluate_samples`` against the held-out test slices (Fréchet
distance and KID of the 64x64 segmenter's features, as ``bench_recipes.py`` and ``evaluate``).

    python benchmarks/bench_flow_nfe.py --vp runs/vp64_eq/best.pt --rf runs/rf64_eq/best.pt

The commands that trained the two models and the table are in ``benchmarks/results/flow_nfe.md``
(``--out`` writes ``flow_nfe_table.md`` and ``flow_nfe.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_info import machine_line  # noqa: E402

from oasis_lib.evaluation import report as evaluation  # noqa: E402
from oasis_lib.evaluation.segmenter import load_segmenter  # noqa: E402
from oasis_lib.pretrained import load_model  # noqa: E402

#: (row label, which model, sampler, spacing, calls for k steps)
ROWS = (("VP, DPM-Solver++(2M) Karras", "vp", "dpm++2m", "karras", lambda k: k),
        ("rectified flow, Euler", "rf", "flow-euler", "linspace", lambda k: k),
        ("rectified flow, Heun", "rf", "flow-heun", "linspace", lambda k: 2 * k - 1))


def steps_within(calls, budget: int) -> int:
    """The largest k >= 1 whose network calls ``calls(k)`` fit in ``budget``."""
    k = 1
    while calls(k + 1) <= budget:
        k += 1
    return k


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vp", required=True, help="the VP model (a run's .pt or an export)")
    ap.add_argument("--rf", required=True, help="the rectified-flow model")
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 10, 20])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="data root (default: $OASIS_DATA or demo)")
    ap.add_argument("--out", default="benchmarks/results", help="flow_nfe.md and .json")
    args = ap.parse_args(argv)
    machine = machine_line()
    print(machine)
    pipes = {"vp": load_model(args.vp), "rf": load_model(args.rf)}
    segmenter = load_segmenter()
    results = []
    for label, which, sampler, spacing, calls in ROWS:
        pipe = pipes[which]
        for budget in args.nfe:
            k = steps_within(calls, budget)
            t0 = time.perf_counter()
            samples, spi = evaluation.generate_samples(
                pipe, args.n, sampler=sampler, steps=k, spacing=spacing, seed=args.seed,
                progress=False)
            report = evaluation.evaluate_samples(
                samples, data_root=args.data, segmenter=segmenter, seed=args.seed,
                progress=False, train_splits=pipe.config.train_splits).to_dict()
            m = report["metrics"]
            row = {"label": label, "sampler": sampler, "budget": budget, "steps": k,
                   "calls": calls(k), "frechet": m["frechet_segmenter"]["value"],
                   "kid": m["kid_segmenter"]["value"],
                   "frechet_floor": m["frechet_segmenter"]["floor"],
                   "kid_floor": m["kid_segmenter"]["floor"], "seconds_per_image": spi,
                   "wall_s": time.perf_counter() - t0}
            results.append(row)
            print(f"{label:32s} NFE {calls(k):3d}: Fréchet {row['frechet']:.3f}, "
                  f"KID {1e3 * row['kid']:.2f}e-3", flush=True)
    write(Path(args.out), results, args, machine)


def write(out: Path, results: list[dict], args, machine: str) -> None:
    budgets = args.nfe
    lines = [f"{machine}; n = {args.n} per cell, seed {args.seed}", "",
             "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for label in dict.fromkeys(r["label"] for r in results):
        cells = []
        for b in budgets:
            r = next(r for r in results if r["label"] == label and r["budget"] == b)
            cells.append(f"{r['frechet']:.3f} / {1e3 * r['kid']:.2f} ({r['calls']} calls)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    floor = results[0]
    lines += ["", f"Cells: Fréchet distance / KID x 1e3 (segmenter features, 64x64); real-vs-real "
              f"floor {floor['frechet_floor']:.3f} / {1e3 * floor['kid_floor']:.2f}."]
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow_nfe.json").write_text(json.dumps(
        {"argv": vars(args), "machine": machine, "torch": torch.__version__,
         "results": results}, indent=1))
    (out / "flow_nfe_table.md").write_text(table + "\n")
    print(f"wrote {out / 'flow_nfe_table.md'} and {out / 'flow_nfe.json'}")


if __name__ == "__main__":
    main()
