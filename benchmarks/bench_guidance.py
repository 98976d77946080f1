"""Classifier-free guidance sweep on a conditional checkpoint (issue 12, a benchmark).

For each guidance scale s (diffusers' convention s = 1 + w: 0 = the unconditional prediction
of the same network, 1 = the conditional one, > 1 = guided) it draws ``--n`` samples with
DPM-Solver++(2M), 20 steps, from one seed, conditioned on the masks and slice indices of
``--n`` validate slices spread evenly over the split
(:func:`oasis_lib.evaluation.conditions.validate_conditions`; every scale gets the same
conditions and the same starting noise), and scores them, each metric next to its floor:

* ``Dice`` per tissue and mean: the tissue segmenter's segmentation of each sample against the
  mask it was conditioned on; floor: the same Dice for the real validate slices the masks came
  from, against their own masks (:func:`~oasis_lib.evaluation.faithfulness.mask_faithfulness`);
* ``slice MAE``: mean |predicted - requested| slice index of the slice regressor
  (:mod:`oasis_lib.evaluation.slice_level`); floor: the same real slices against their index;
* ``Fréchet``, ``KID x1e3`` (segmenter features, vs train) and ``SSIM`` (mean pairwise SSIM,
  diversity: near the floor is right, higher = less diverse) from
  :func:`oasis_lib.evaluate_samples`, with their real-vs-real floors;
* ``s/img``: wall-clock sampling seconds per image (guided scales make two network passes).

One more row samples the shipped **unconditional** model (``--unconditional``) with the same n,
sampler and seed, scored against the same masks and slices (what chance agreement looks like),
so the issue's criterion can be read off: *at the best scale, mean Dice within 0.05 of its floor
while the Fréchet distance stays within 1.5x of the unconditional model's*. The best scale is
the one with the highest mean Dice among the scales within the Fréchet limit.

    python benchmarks/bench_guidance.py                      # the full sweep, n = 128
    python benchmarks/bench_guidance.py --n 8 --checkpoint outputs/cond_interim.safetensors \\
        --out outputs/guidance_smoke                         # a smoke test (~1-2 CPU-minutes)

Results go to ``--out`` (``benchmarks/results``): ``guidance.md`` and ``guidance.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from oasis_lib.data.layout import SEED_TRAIN_SPLITS
from oasis_lib.evaluation import report as evaluation
from oasis_lib.evaluation.conditions import condition_metrics, validate_conditions
from oasis_lib.evaluation.segmenter import load_segmenter
from oasis_lib.evaluation.slice_level import load_slice_regressor
from oasis_lib.paths import CHECKPOINTS_DIR, DEMO_CHECKPOINT
from oasis_lib.pretrained import load_model

SCALES = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
CONDITIONAL_CHECKPOINT = CHECKPOINTS_DIR / "demo_cond64_ema.safetensors"
DICE_GAP, FRECHET_RATIO = 0.05, 1.5
TISSUES = ("csf", "grey_matter", "white_matter")
SIMD = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
        "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    """The SIMD flags of this CPU (``/proc/cpuinfo``) and torch's CPU capability."""
    found: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                found = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    have = [f for f in SIMD if f in found] or ["(unknown: no /proc/cpuinfo)"]
    cpu = platform.processor() or platform.machine()
    return (f"CPU flags: {' '.join(have)}; torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {cpu}")


def score(samples, cond, chosen, *, segmenter, slice_model, args, meta) -> dict:
    """The realism metrics of ``evaluate_samples`` and the condition metrics, as one dict."""
    report = evaluation.evaluate_samples(samples, data_root=args.data, segmenter=segmenter,
                                         device="cpu", seed=args.seed,
                                         n_subsets=args.n_subsets, meta=meta, progress=False,
                                         train_splits=args.train_splits)
    metrics = report["metrics"]
    metrics |= evaluation._clean(condition_metrics(
        samples, cond, segmenter=segmenter, slice_model=slice_model, real=chosen,
        reference=report.reference, data_root=args.data))
    return metrics


def verdict(rows: list[dict], uncond: dict | None) -> tuple[dict | None, bool, str]:
    """(best row, criterion met, one line): the highest mean Dice among the scales whose
    Fréchet is within FRECHET_RATIO x the unconditional model's."""
    if "mask_dice" not in rows[0]["metrics"]:
        return None, False, "criterion not checked: the model is not mask-conditioned"
    if uncond is None:
        limit = float("inf")
        why = "no unconditional row: the Fréchet limit is not checked"
    else:
        limit = FRECHET_RATIO * uncond["metrics"]["frechet_segmenter"]["value"]
        why = f"Fréchet limit {FRECHET_RATIO}x unconditional = {limit:.3f}"
    allowed = [r for r in rows if r["metrics"]["frechet_segmenter"]["value"] <= limit]
    if not allowed:
        top = max(rows, key=lambda r: r["metrics"]["mask_dice"]["value"])
        return None, False, (f"best scale: none within the Fréchet limit ({why}; the highest "
                             f"Dice, {top['metrics']['mask_dice']['value']:.3f}, is at s = "
                             f"{top['scale']:g}); criterion NOT met")
    best = max(allowed, key=lambda r: (r["metrics"]["mask_dice"]["value"],
                                       -r["metrics"]["frechet_segmenter"]["value"]))
    dice = best["metrics"]["mask_dice"]
    met = dice["value"] >= dice["floor"] - DICE_GAP
    return best, met, (
        f"best scale s = {best['scale']:g}: mean Dice {dice['value']:.3f} vs floor "
        f"{dice['floor']:.3f} (gap {dice['floor'] - dice['value']:.3f}, needs <= {DICE_GAP}), "
        f"Fréchet {best['metrics']['frechet_segmenter']['value']:.3f} ({why}); criterion "
        + ("met" if met else "NOT met"))


REUSE_KEYS = ("checkpoint", "scales", "sampler", "steps", "rescale", "n", "seed", "data")


def reused_rows(args) -> list[dict]:
    """The scale rows of ``args.rows_from``, refused unless it was run with the same settings."""
    path = Path(args.rows_from)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read --rows-from {path}: {err}") from None
    root = f"{Path(__file__).resolve().parent.parent}/"
    mine = {k: str(getattr(args, k)).replace(root, "") for k in REUSE_KEYS}
    theirs = {k: str(old.get("argv", {}).get(k)).replace(root, "") for k in REUSE_KEYS}
    differ = {k: (theirs[k], mine[k]) for k in REUSE_KEYS if theirs[k] != mine[k]}
    if differ:
        raise SystemExit(f"error: --rows-from {path} was run with other settings "
                         f"(name: (then, now)): {differ}")
    print(f"reusing the {len(old['rows'])} scale rows of {path}", flush=True)
    return old["rows"]


def table_row(name: str, spi, m: dict, key: str = "value") -> str:
    def cell(metric: str, sub: str | None = None, scale: float = 1.0, digits: int = 3) -> str:
        entry = m.get(metric)
        if entry is None:
            return "n/a"
        if sub is not None:
            per = entry["per_class" if key == "value" else "floor_per_class"]
            value = None if per is None else per[sub]
        else:
            value = entry[key]
        return "n/a" if value is None else f"{value * scale:.{digits}f}"

    dice = " | ".join(cell("mask_dice", t) for t in TISSUES)
    return (f"| {name} | {'' if spi is None else f'{spi:.3f}'} | {dice} | {cell('mask_dice')} | "
            f"{cell('slice_mae', digits=2)} | {cell('frechet_segmenter')} | "
            f"{cell('kid_segmenter', scale=1e3, digits=2)} | {cell('diversity_ssim')} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(CONDITIONAL_CHECKPOINT),
                        help="a conditional checkpoint (default: the shipped demo_cond64)")
    parser.add_argument("--unconditional", default=str(DEMO_CHECKPOINT),
                        help="the unconditional model of the Fréchet criterion ('none': skip)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rescale", type=float, default=0.0, help="guidance rescale phi")
    parser.add_argument("--n", type=int, default=128, help="samples per scale (every row)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-subsets", type=int, default=200,
                        help="half-size subsets behind each subsample range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="data root (default: $OASIS_DATA or demo)")
    parser.add_argument("--slice-regressor", default=None,
                        help="slice regressor weights (default: the shipped one)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--rows-from", default=None, metavar="JSON",
                        help="reuse the scale rows of an earlier guidance.json with the same "
                             "checkpoint, scales, sampler, steps, rescale, n and seed; sample "
                             "only the unconditional row (after the unconditional model changed)")
    args = parser.parse_args(argv)

    pipe = load_model(args.checkpoint, device="cpu")
    if not pipe.conditional:
        raise SystemExit(f"error: {args.checkpoint} is an unconditional model; the sweep needs "
                         "one trained with --condition")
    # every row (the unconditional one too) is scored against one reference: the conditional
    # model's training splits, and the held-out split they leave
    args.train_splits = tuple(getattr(pipe.config, "train_splits", SEED_TRAIN_SPLITS))
    segmenter = load_segmenter(device="cpu")
    slice_model = load_slice_regressor(args.slice_regressor, device="cpu")
    chosen = validate_conditions(args.n, image_size=pipe.image_shape[-1], data_root=args.data,
                                 seed=args.seed)
    cond = chosen.condition(pipe.condition)
    scored = chosen.condition("mask+slice")  # the unconditional row is scored on both
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    flags = cpu_flags()
    print(flags)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; checkpoint "
          f"{args.checkpoint} ({pipe.condition}); {args.sampler} {args.steps} steps, n = "
          f"{args.n}, seed {args.seed}; train splits {'+'.join(args.train_splits)}; load "
          f"average at start {load:.2f}", flush=True)
    sample_kw = dict(sampler=args.sampler, steps=args.steps, seed=args.seed,
                     batch_size=args.batch_size, progress=True)

    rows = reused_rows(args) if args.rows_from else []
    for s in [] if args.rows_from else args.scales:
        t0 = time.perf_counter()
        samples, spi = evaluation.generate_samples(pipe, args.n, condition=cond,
                                                   guidance_scale=s,
                                                   guidance_rescale=args.rescale, **sample_kw)
        metrics = score(samples, cond, chosen, segmenter=segmenter, slice_model=slice_model,
                        args=args, meta={"guidance_scale": s})
        rows.append({"scale": s, "seconds_per_image": spi, "metrics": metrics,
                     "total_seconds": time.perf_counter() - t0})
        print(f"s = {s:g}: {spi:.3f} s/img; " + ", ".join(
            f"{k} {metrics[k]['value']:.3f}" for k in ("mask_dice", "slice_mae",
                                                       "frechet_segmenter") if k in metrics),
            flush=True)
    uncond = None
    if args.unconditional.lower() != "none":
        plain = load_model(args.unconditional, device="cpu")
        samples, spi = evaluation.generate_samples(plain, args.n, **sample_kw)
        uncond = {"checkpoint": args.unconditional, "seconds_per_image": spi,
                  "metrics": score(samples, scored, chosen, segmenter=segmenter,
                                   slice_model=slice_model, args=args, meta={})}

    header = ("| guidance s (n) | s/img | Dice CSF | Dice grey | Dice white | Dice mean | "
              "slice MAE | Fréchet | KID x1e3 | SSIM |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [header] + [table_row(f"{r['scale']:g} ({args.n})", r["seconds_per_image"],
                                  r["metrics"]) for r in rows]
    if uncond is not None:
        lines.append(table_row(f"unconditional {Path(args.unconditional).stem} ({args.n})",
                               uncond["seconds_per_image"], uncond["metrics"]))
    lines.append(table_row(f"floor: real validate slices ({args.n})", None, rows[0]["metrics"],
                           key="floor"))
    best, met, line = verdict(rows, uncond)
    text = "\n".join([*lines, "", line])
    print(text)
    text = f"{flags}\n\n{text}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guidance.md").write_text(text + "\n")
    (out / "guidance.json").write_text(json.dumps(
        {"argv": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "cpu": flags, "load_average_at_start": load, "validate_indices": chosen.indices.tolist(),
         "best_scale": None if best is None else best["scale"], "criterion_met": met,
         "verdict": line, "rows": rows, "unconditional": uncond}, indent=1, default=str)
        .replace(f"{Path(__file__).resolve().parent.parent}/", ""))  # repo-relative paths
    print(f"wrote {out / 'guidance.md'} and {out / 'guidance.json'}")


if __name__ == "__main__":
    main()
