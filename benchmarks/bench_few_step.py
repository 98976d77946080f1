"""Quality and time of few-step latent models at each step count, against the 20-step teacher.

Item 4 of issue 26 and its goal: "16 native 256x256 slices in <= 2 s on two idle cores,
decoding included, with Fréchet within 10% of the 20-step teacher". Every (model, steps,
spacing) cell of ``--models`` x ``--steps`` x ``--spacings`` is one row, and one more row is the
reference: ``--reference`` (default: the first model) with ``--sampler`` at
``--reference-steps`` (20). Every row draws its ``--n`` samples with
``oasis_lib.evaluation.report.generate_samples(pipe, n, sampler=, steps=, spacing=, seed=)``,
so every row starts from the same noises: the rows are paired. Per row:

* a model of ``--models`` named in ``--decoder NAME=FILE`` decodes with that light decoder
  (``load_model(FILE, decoder=...)``) instead of its autoencoder's: the same model under two
  names gives paired rows of the two decoders;
* **Fréchet and KID** on the features of a 128x128 segmenter (``--segmenter128``; the samples
  area-downsampled to 128x128, as in ``bench_latent_vs_pixel.py``), each with its floor (the
  same metric for as many real train + test slices against validate);
* **texture** at the samples' native size (256x256): the median |Laplacian| and
  high-frequency share ratios of ``oasis_lib.evaluation.texture``, with their floors;
* the **paired pixel RMS to the reference's samples** (same noises, on [-1, 1]; 0 for the
  reference row) and the **Fréchet ratio** to the reference row;
* **time**: ``pipe.sample(16, sampler, steps, spacing)`` end to end (decoding included), wall
  clock, median of ``--repeats`` after one warm-up, in fp32 and in bf16
  (``torch.autocast("cpu", torch.bfloat16)``, only where the CPU has native bf16:
  ``oasis_lib.training.precision.cpu_bf16_flags``);
* the **goal** per row: 16 slices in <= 2 s (bf16 where native, else fp32) and Fréchet <= 1.10x
  the reference's: ``met`` or ``not met`` (``not timed`` with ``--skip-timing``).

One PNG per model in ``--grids``: a row per step count (and spacing), and the reference row,
8 samples each from the same 8 noises. Writes ``--out`` (Markdown, the command and the CPU flags
in its header, the load average before and after timing) and a JSON copy beside it. The times
are of the process's torch threads (the header says how many); the goal's are two idle cores.
The run of ``benchmarks/results/few_step.md``::

    python benchmarks/bench_few_step.py --n 128 \\
        --models teacher=checkpoints/demo_ldm256_rf_ema.safetensors \\
                 student=runs/x/student.safetensors \\
        --steps 1 2 4 8 --segmenter128 checkpoints/segmenter_demo128.safetensors

Cost: besides the sampling, the real references are built once (every train + test slice
segmented at 128x128 and at 256x256); at n = 8, teacher twice, steps 1 and 2, ``--repeats 1``,
a run took 6.7 minutes on one thread at a load average of 4, with a peak of 7.5 GB of memory.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from bench_latent_sampling import median_s  # noqa: E402 (the script's folder)
from bench_latent_vs_pixel import area, scores  # noqa: E402
from cpu_info import machine_line  # noqa: E402

from oasis_lib.diffusion.samplers import make_sampler  # noqa: E402
from oasis_lib.evaluation.report import generate_samples  # noqa: E402
from oasis_lib.evaluation.segmenter import load_segmenter  # noqa: E402
from oasis_lib.pretrained import load_model  # noqa: E402
from oasis_lib.seeding import cpu_generator  # noqa: E402
from oasis_lib.training.precision import cpu_bf16_flags  # noqa: E402

HERE = Path(__file__).resolve().parent
SCORE_SIZE = 128  # Fréchet and KID on the 128x128 segmenter's features
TIMED_N = 16  # slices per timed pipe.sample call (the goal's 16)
GOAL_SECONDS, GOAL_RATIO = 2.0, 1.10  # issue 26's goal
GRID_SAMPLES, GRID_MAX_BYTES = 8, 400_000
GOAL_TEXT = (f"{TIMED_N} slices <= {GOAL_SECONDS:g} s (bf16 where native, else fp32) and "
             f"Fréchet <= {GOAL_RATIO:.2f}x the reference")
NO_BF16 = "no native bf16"  # the bf16 cell of a CPU without avx512_bf16/amx_bf16


def parse_models(items: list[str]) -> dict[str, str]:
    """``["NAME=FILE", ...]`` as ``{NAME: FILE}`` in order; a malformed or repeated NAME
    raises ValueError."""
    models: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--models takes NAME=FILE, got {item!r}")
        if name in models:
            raise ValueError(f"model name {name!r} given twice in --models")
        models[name] = path
    return models


def network_calls(pipe, sampler: str, steps: int, spacing: str) -> int:
    """Network calls of one ``pipe.sample(sampler=, steps=, spacing=)``: the sampler's
    ``set_timesteps`` grid (one call per time; Heun's 2 steps - 1)."""
    solver = make_sampler(sampler, pipe.process, prediction_type=pipe.prediction_type)
    return len(solver.set_timesteps(steps, spacing=spacing))


def paired_rms(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Root mean square pixel difference of samples drawn from the same noises ([-1, 1])."""
    if samples.shape != reference.shape:
        raise ValueError(f"paired samples must have one shape, got {tuple(samples.shape)} and "
                         f"{tuple(reference.shape)}")
    return math.sqrt(float((samples.double() - reference.double()).pow(2).mean()))


def quality(samples: torch.Tensor, segmenter, seed: int) -> dict:
    """Fréchet and KID at :data:`SCORE_SIZE` and the texture ratios at the native size, each
    with its floor (``bench_latent_vs_pixel.scores``: held-out validate)."""
    small = area(samples, SCORE_SIZE)
    at128 = scores(small, segmenter, seed, texture=samples.shape[-1] == SCORE_SIZE)
    tex = at128 if samples.shape[-1] == SCORE_SIZE else scores(samples, segmenter, seed,
                                                               texture=True)
    return {"frechet": at128["frechet_segmenter"]["value"],
            "frechet_floor": at128["frechet_segmenter"]["floor"],
            "kid": at128["kid_segmenter"]["value"], "kid_floor": at128["kid_segmenter"]["floor"],
            "segmenter_dice": at128["segmenter_dice"]["value"],
            "laplacian": tex["texture_laplacian"]["value"],
            "laplacian_floor": tex["texture_laplacian"]["floor"],
            "hf_share": tex["texture_hf_share"]["value"],
            "hf_share_floor": tex["texture_hf_share"]["floor"], "texture_size": samples.shape[-1]}


def time_sample(pipe, sampler: str, steps: int, spacing: str, repeats: int, *,
                bf16: bool) -> float:
    """Wall-clock seconds of ``pipe.sample(16, ...)`` (decode included), median of ``repeats``
    after one warm-up, under bf16 autocast when ``bf16``."""
    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pipe.sample(TIMED_N, sampler=sampler, steps=steps, spacing=spacing,
                        generator=cpu_generator(0), progress=False)
    return median_s(call, repeats)


def goal(row: dict, native_bf16: bool) -> str:
    """``met`` / ``not met`` for :data:`GOAL_TEXT` (``not timed`` without a time)."""
    seconds = row.get("seconds_bf16") if native_bf16 else row.get("seconds_fp32")
    if seconds is None:
        return "not timed"
    return "met" if seconds <= GOAL_SECONDS and row["frechet_ratio"] <= GOAL_RATIO else "not met"


def label(row: dict, several_spacings: bool) -> str:
    """A grid row's label, e.g. ``student, 2 steps`` (the spacing too when several)."""
    text = f"{row['model']}, {row['steps']} step{'s' if row['steps'] != 1 else ''}"
    if several_spacings:
        text += f", {row['spacing']}"
    return text + (" (reference)" if row["reference"] else "")


def build_table(rows: list[dict], meta: dict) -> str:
    """The Markdown of the benchmark: header (command, machine, load), one line per row, the
    goal per row. ``rows``: dicts as :func:`run` makes them (``goal`` filled in)."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    def secs(v, why=None):
        return why if v is None and why else num(v, ".2f")

    lines = [f"# Few-step sampling: quality and time at each step count (n = {meta['n']})", "",
             f"`{meta['command']}`", "",
             f"{meta['machine']}; native bf16: {', '.join(meta['bf16_flags']) or 'none'}; "
             f"reference: {meta['reference']}", "",
             f"Load average before timing {num(meta.get('load_before'), '.2f')}, after "
             f"{num(meta.get('load_after'), '.2f')}" if meta.get("timed") else
             "Not timed (--skip-timing).", "",
             "| model | steps | spacing | network calls | Fréchet (floor) | KID (floor) | "
             "ratio to reference | \\|Lap\\| ratio (floor) | HF ratio (floor) | "
             "RMS to reference | s per 16, fp32 | s per 16, bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    bf16_why = None if meta["bf16_flags"] else NO_BF16
    for r in rows:
        name = f"{r['model']} (reference)" if r["reference"] else r["model"]
        lines.append(
            f"| {name} | {r['steps']} | {r['spacing']} | {r['calls']} | "
            f"{r['frechet']:.3f} ({r['frechet_floor']:.3f}) | {r['kid']:.4f} "
            f"({r['kid_floor']:.4f}) | {r['frechet_ratio']:.2f}x | {r['laplacian']:.2f} "
            f"({r['laplacian_floor']:.2f}) | {r['hf_share']:.2f} ({r['hf_share_floor']:.2f}) | "
            f"{r['rms_to_reference']:.3f} | {secs(r.get('seconds_fp32'))} | "
            f"{secs(r.get('seconds_bf16'), bf16_why if meta.get('timed') else None)} |")
    lines += ["", f"Goal: {GOAL_TEXT}."]
    lines += [f"- {label(r, True)}: {r['goal']}" for r in rows]
    lines += ["", f"Fréchet and KID on {SCORE_SIZE}x{SCORE_SIZE} segmenter features (samples "
              f"area-downsampled); texture ratios at {rows[0]['texture_size']}x"
              f"{rows[0]['texture_size']} (medians; 1 = real texture); floors: real train + test "
              "slices against validate. RMS: pixels on [-1, 1], same noises as the reference."]
    if meta.get("timed") and not meta["bf16_flags"]:
        lines.append("bf16 not timed: this CPU has no native bf16 (avx512_bf16/amx_bf16), where "
                     "bf16 is emulated and slower.")
    return "\n".join(lines)


def save_grid(images: list[torch.Tensor], labels: list[str], path: Path) -> int:
    """One row of :data:`GRID_SAMPLES` images per label, the label on the left; the DPI is
    lowered until the PNG is under :data:`GRID_MAX_BYTES`. Returns its size in bytes."""
    import matplotlib.pyplot as plt

    from oasis_lib.viz.style import GREY, to_display

    cols = len(images[0])
    fig, axes = plt.subplots(len(images), cols, figsize=(1.6 * cols + 1.4, 1.6 * len(images)),
                             squeeze=False)
    for i, (row, text) in enumerate(zip(images, labels, strict=True)):
        for j in range(cols):
            axes[i, j].imshow(to_display(row[j]), vmin=0, vmax=1, **GREY)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(text, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout(pad=0.3)
    dpi, data = 160, b""
    while dpi >= 20:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        data = buf.getvalue()
        if len(data) <= GRID_MAX_BYTES:
            break
        dpi = int(dpi * 0.8)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def command_line(argv: list[str]) -> str:
    """The command that made the result (``OMP_NUM_THREADS`` too when set)."""
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get(
        "OMP_NUM_THREADS") else ""
    return env + shlex.join(["python", "benchmarks/bench_few_step.py", *argv])


def run(args, models: dict[str, str]) -> tuple[list[dict], dict[str, list], dict]:
    """Sample and score every row (the reference first); then time them. Returns the rows,
    the grid samples per row key, and the timing facts."""
    segmenter = load_segmenter(args.segmenter128, device="cpu")
    decoders = args.decoders
    pipes = {name: load_model(path, device="cpu", decoder=decoders.get(name))
             for name, path in models.items()}
    ref_cell = (args.reference, args.reference_steps, args.reference_spacing)
    cells = [ref_cell] + [(m, k, s) for m in models for s in args.spacings for k in args.steps
                          if (m, k, s) != ref_cell]
    rows, grid, ref_samples = [], {}, None
    for model, steps, spacing in cells:
        pipe = pipes[model]
        samples, _ = generate_samples(pipe, args.n, sampler=args.sampler, steps=steps,
                                      spacing=spacing, seed=args.seed, batch_size=args.batch_size,
                                      progress=False)
        if ref_samples is None:
            ref_samples = samples
        row = {"model": model, "file": models[model], "decoder": decoders.get(model),
               "sampler": args.sampler, "steps": steps,
               "spacing": spacing, "reference": (model, steps, spacing) == ref_cell,
               "calls": network_calls(pipe, args.sampler, steps, spacing),
               **quality(samples, segmenter, args.seed),
               "rms_to_reference": paired_rms(samples, ref_samples)}
        row["frechet_ratio"] = row["frechet"] / rows[0]["frechet"] if rows else 1.0
        rows.append(row)
        grid[(model, steps, spacing)] = samples[:GRID_SAMPLES].clone()
        print(f"{label(row, True)}: Fréchet {row['frechet']:.3f}, RMS to reference "
              f"{row['rms_to_reference']:.3f}", flush=True)
    timing = {"timed": not args.skip_timing, "bf16_flags": list(cpu_bf16_flags())}
    if not args.skip_timing:
        timing["load_before"] = os.getloadavg()[0]
        for row in rows:
            pipe = pipes[row["model"]]
            for mode in ("fp32", "bf16"):
                if mode == "bf16" and not timing["bf16_flags"]:
                    continue
                row[f"seconds_{mode}"] = time_sample(pipe, args.sampler, row["steps"],
                                                     row["spacing"], args.repeats,
                                                     bf16=mode == "bf16")
        timing["load_after"] = os.getloadavg()[0]
    for row in rows:
        row["goal"] = goal(row, bool(timing["bf16_flags"]))
    return rows, grid, timing


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, metavar="NAME=FILE",
                    help="latent rectified-flow exports, e.g. teacher=FILE student=FILE")
    ap.add_argument("--decoder", nargs="+", default=[], metavar="NAME=FILE",
                    help="decode model NAME's samples with a light decoder (train-decoder's "
                         "export) instead of its autoencoder's, e.g. student_light=FILE with "
                         "--models ... student_light=STUDENT")
    ap.add_argument("--reference", default=None, help="the reference model (default: first)")
    ap.add_argument("--reference-steps", type=int, default=20)
    ap.add_argument("--reference-spacing", default="linspace",
                    help="the reference row's time grid (default linspace: the flow's default, "
                         "diffusers' grid)")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--spacings", nargs="+", default=["linspace", "trailing"],
                    help="time grids of the rows: linspace (diffusers' default; its last call "
                         "at t = 0.001) and trailing (evenly spaced, FLUX's)")
    ap.add_argument("--sampler", default="flow-euler")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segmenter128", default=str(HERE.parent / "checkpoints" /
                                                  "segmenter_demo128.safetensors"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "few_step.md"))
    ap.add_argument("--grids", default=str(HERE / "results" / "few_step"))
    args = ap.parse_args(argv)
    try:
        models = parse_models(args.models)
        args.decoders = parse_models(args.decoder) if args.decoder else {}
    except ValueError as e:
        ap.error(str(e))
    unknown = sorted(set(args.decoders) - set(models))
    if unknown:
        ap.error(f"--decoder names {unknown} are not in --models {tuple(models)}")
    args.reference = args.reference or next(iter(models))
    if args.reference not in models:
        ap.error(f"unknown reference {args.reference!r}; choose one of {tuple(models)}")

    rows, grid, timing = run(args, models)
    meta = {"command": command_line(argv), "machine": machine_line(), "n": args.n,
            "seed": args.seed, "sampler": args.sampler,
            "reference": (f"{args.reference} with {args.sampler}, {args.reference_steps} steps, "
                          f"{args.reference_spacing} spacing"),
            "goal": GOAL_TEXT, **timing}
    text = build_table(rows, meta)
    print(text)
    out = Path(args.out).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1,
                                                  default=float))
    several = len(args.spacings) > 1
    for model in models:
        keep = [r for r in rows if r["reference"]] + [r for r in rows if r["model"] == model
                                                      and not r["reference"]]
        path = Path(args.grids) / f"{model}.png"
        size = save_grid([grid[(r["model"], r["steps"], r["spacing"])] for r in keep],
                         [label(r, several) for r in keep], path)
        print(f"wrote {path} ({size / 1e3:.0f} KB)")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
