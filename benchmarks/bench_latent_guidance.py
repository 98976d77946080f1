"""Mask faithfulness of the latent 256x256 conditional model at guidance s = 1 and s = 2.

The model (``checkpoints/demo_ldm256_cond_ema.safetensors``) draws ``--n`` samples per scale
with DPM-Solver++(2M), 20 steps, one seed, conditioned on the masks and slice indices of ``--n``
validate slices spread evenly over the split
(:func:`oasis_lib.evaluation.conditions.validate_conditions`; every scale gets the same
conditions and the same starting noise; s = 1 + w, diffusers' convention). Scores, each with its
floor (the real validate slices the conditions came from):

* ``Dice``: the 128x128 tissue segmenter (``segmenter_demo128``) on the samples resized to
  128x128 (antialiased bilinear, as the data layer resizes slices) against the conditioning
  masks at 128x128 (the data layer's nearest-neighbour masks of the same slices); floor: the
  same Dice for the real slices at 128x128 against their masks
  (:func:`~oasis_lib.evaluation.faithfulness.mask_faithfulness`);
* ``slice MAE``: the shipped 64x64 slice regressor on the samples resized to 64x64 against the
  requested index; floor: the same real slices against their true index;
* ``s/img``: wall-clock sampling seconds per image (s = 1 makes one network pass per step,
  s = 2 two).

    python benchmarks/bench_latent_guidance.py            # n = 32, s = 1 and 2 (~10 CPU-min)

Writes ``latent_guidance.md`` and a figure ``latent_guidance.png`` (mask | s = 1 | s = 2 for
the first ``--show`` conditions) to ``--out`` (``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_info import cpu_flags  # noqa: E402

from oasis_lib.evaluation import report as evaluation  # noqa: E402
from oasis_lib.evaluation.conditions import validate_conditions  # noqa: E402
from oasis_lib.evaluation.faithfulness import mask_faithfulness  # noqa: E402
from oasis_lib.evaluation.segmenter import load_segmenter  # noqa: E402
from oasis_lib.evaluation.slice_level import load_slice_regressor, slice_faithfulness  # noqa: E402
from oasis_lib.paths import CHECKPOINTS_DIR  # noqa: E402
from oasis_lib.pretrained import load_model  # noqa: E402

CHECKPOINT = CHECKPOINTS_DIR / "demo_ldm256_cond_ema.safetensors"
SEGMENTER = CHECKPOINTS_DIR / "segmenter_demo128.safetensors"
TISSUES = ("csf", "grey_matter", "white_matter", "mean")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images.float().clamp(-1, 1), size=(size, size), mode="bilinear",
                         antialias=True)


def figure(masks, rows: dict[str, torch.Tensor], dice: dict[str, list[float]], path: Path,
           show: int) -> Path:
    """One row per condition: its mask, then the sample at each scale (with its mean Dice)."""
    from oasis_lib.viz.style import GREY, LABEL_CMAP, figure, save_figure, tissue_legend, to_display

    fig, axes = figure(show, 1 + len(rows), figsize=(2.0 * (1 + len(rows)), 2.0 * show + 0.4))
    for i in range(show):
        axes[i, 0].imshow(masks[i].numpy(), cmap=LABEL_CMAP, vmin=0, vmax=3,
                          interpolation="nearest")
        for j, (name, images) in enumerate(rows.items(), start=1):
            axes[i, j].imshow(to_display(images[i]), vmin=0, vmax=1, **GREY)
            axes[i, j].set_title(f"{name}: Dice {dice[name][i]:.2f}", fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    axes[0, 0].set_title("conditioning mask", fontsize=8)
    tissue_legend(fig)
    save_figure(fig, path)
    return path


def per_sample_dice(images128, masks128, segmenter) -> list[float]:
    return [mask_faithfulness(images128[k:k + 1], masks128[k:k + 1], segmenter)["generated"]
            ["mean"] for k in range(len(images128))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--segmenter", default=str(SEGMENTER), help="the 128x128 segmenter")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=6, help="conditions in the figure")
    parser.add_argument("--data", default=None, help="data root (default: $OASIS_DATA or demo)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    t_start, cpu_start = time.perf_counter(), time.process_time()
    pipe = load_model(args.checkpoint, device="cpu")
    size = pipe.image_shape[-1]
    segmenter = load_segmenter(args.segmenter, device="cpu")
    seg_size = segmenter.config.image_size
    regressor = load_slice_regressor(device="cpu")
    reg_size = regressor.config.image_size
    # One choice of validate slices (spread_indices depends on n, the split and the seed only),
    # read at each size by the data layer: the model's, the segmenter's, the regressor's.
    chosen = validate_conditions(args.n, image_size=size, data_root=args.data, seed=args.seed)
    at_seg = validate_conditions(args.n, image_size=seg_size, data_root=args.data, seed=args.seed)
    at_reg = validate_conditions(args.n, image_size=reg_size, data_root=args.data, seed=args.seed)
    assert torch.equal(chosen.indices, at_seg.indices)
    cond = chosen.condition(pipe.condition)
    load = os.getloadavg()[0]
    head = (f"{cpu_flags()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"load average at start {load:.2f}")
    print(head, flush=True)

    floor = mask_faithfulness(at_seg.images, at_seg.masks, segmenter)["generated"]
    floor_mae = slice_faithfulness(at_reg.images, at_reg.slice_index, regressor,
                                   real_images=at_reg.images,
                                   real_slice_index=at_reg.slice_index)["generated"]
    rows, samples, dice = [], {}, {}
    for s in args.scales:
        x, spi = evaluation.generate_samples(pipe, args.n, sampler=args.sampler,
                                             steps=args.steps, seed=args.seed,
                                             batch_size=args.batch_size, progress=False,
                                             condition=cond, guidance_scale=s)
        x128 = resize(x, seg_size)
        d = mask_faithfulness(x128, at_seg.masks, segmenter)["generated"]
        mae = slice_faithfulness(resize(x, reg_size), chosen.slice_index, regressor,
                                 real_images=at_reg.images,
                                 real_slice_index=at_reg.slice_index)["generated"]
        name = f"s = {s:g}"
        samples[name], dice[name] = x, per_sample_dice(x128[:args.show], at_seg.masks, segmenter)
        rows.append((name, d, mae, spi))
        print(f"{name}: mean Dice {d['mean']:.3f} (floor {floor['mean']:.3f}), slice MAE "
              f"{mae:.2f} (floor {floor_mae:.2f}), {spi:.2f} s/img", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig_path = figure(at_seg.masks, samples, dice, out / "latent_guidance.png", args.show)
    ckpt = Path(args.checkpoint)
    ckpt = ckpt.relative_to(CHECKPOINTS_DIR.parent) if ckpt.is_relative_to(
        CHECKPOINTS_DIR.parent) else ckpt.name
    lines = [
        "# Latent 256x256 conditional model: mask faithfulness at guidance s = 1 and 2", "",
        f"`python benchmarks/bench_latent_guidance.py` ({args.sampler}, {args.steps} steps, "
        f"n = {args.n} validate conditions, seed {args.seed}; checkpoint `{ckpt}`; Dice of "
        f"the {seg_size}x{seg_size} segmenter on samples resized to {seg_size}, slice MAE of "
        f"the {reg_size}x{reg_size} regressor).", "", head, "",
        "| row | CSF | grey | white | mean Dice | slice MAE | s/img |",
        "|---|---|---|---|---|---|---|",
        "| real validate slices (floor) | " + " | ".join(f"{floor[t]:.3f}" for t in TISSUES)
        + f" | {floor_mae:.2f} | |"]
    for name, d, mae, spi in rows:
        lines.append(f"| {name} | " + " | ".join(f"{d[t]:.3f}" for t in TISSUES)
                     + f" | {mae:.2f} | {spi:.2f} |")
    lines += ["", f"Figure: `{fig_path.name}` (mask | s = 1 | s = 2, the first {args.show} "
              "conditions, per-sample mean Dice in the titles).", "",
              f"Total: {time.perf_counter() - t_start:.0f} s wall, "
              f"{time.process_time() - cpu_start:.0f} s CPU."]
    (out / "latent_guidance.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'latent_guidance.md'} and {fig_path}")


if __name__ == "__main__":
    main()
