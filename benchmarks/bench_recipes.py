"""Our `cpu` recipe, the seed's, diffusers' example and MONAI's tutorial at equal budget (a bench).

Each recipe trains from scratch on the same data for ``--minutes`` of CPU time in optimiser
steps (``TrainConfig.max_minutes`` with ``budget_clock="cpu"``: the process's CPU seconds,
all threads, so that other jobs on the machine do not shorten one recipe's budget; validation
and sample grids are not counted), then draws ``--n``
samples with the same sampler and seed, scored by :func:`oasis_lib.evaluate_samples` against
the real slices, next to the real-vs-real floor.

* ``cpu``: ``DEMO_RECIPE`` on the ``cpu`` preset, what trained the shipped demo checkpoint
  (4.1M-parameter U-Net, cosine T = 1000, v-prediction, MSE with min-SNR-5, AdamW 3e-4 with
  warm-up and clipping, EMA 0.999).
* ``seed``: ``SEED_RECIPE``, the project's seed (62.6M SimpleUNet, quadratic T = 500,
  eps-prediction, L1, Adam 1e-3, no EMA).
* ``diffusers``: :data:`DIFFUSERS_RECIPE`, the recipe of diffusers' unconditional training
  example (``examples/unconditional_image_generation/train_unconditional.py``, its defaults):
  its U-Net layout (``bench_models.diffusers_unet("diffusers-example")``: UNet2DModel with
  Down x4, AttnDown, Down, channels scaled by 3/16 to 4,013,089 parameters, 1 channel),
  trained through our Trainer as an ``arch="external"`` network; eps-prediction, linear betas
  1e-4..0.02 at T = 1000 (DDPMScheduler's defaults), MSE; AdamW lr 1e-4, betas (0.95, 0.999),
  weight decay 1e-6, eps 1e-8, gradient clipping at 1.0; its cosine LR schedule with 500
  warm-up steps, ending where the example's does, after its 100 epochs (``--num_epochs``) of
  our training split (100 x 120 = 12,000 steps on the demo data: a 30-minute budget ends
  well before, while the LR is still near its peak); its EMA (EMAModel with
  ``use_ema_warmup``: inv_gamma 1, power 3/4, max decay 0.9999). What differs from the
  example: one channel, not three; the warm-up is ``(s + 1) / 500``, one step ahead of the
  example's ``s / 500``; our EMA also copies buffers (UNet2DModel has no running statistics,
  so nothing changes); the slices are resized to 64 (no random crop); and it is sampled with
  our DDIM below, not the example's 1000-step DDPM. It needs diffusers (``pip install
  diffusers``, a bench-only dependency); without it the bench stops with that message.
* ``monai``: :data:`MONAI_RECIPE`, the recipe of MONAI's 2D DDPM tutorial (Project-MONAI/
  tutorials ``generation/2d_ddpm/2d_ddpm_tutorial.ipynb``): its ``DiffusionModelUNet`` layout
  (attention at levels 2 and 3, one ResBlock per level) at the width of MONAI's own
  ``2d_ddpm_compare_schedulers.ipynb``, channels (64, 128, 128), heads of 128
  (``external_unets.monai_unet("monai-scaled")``: 4,634,305 parameters, +14.3% on ours; the
  tutorial's (128, 256, 256) has 18.5M), trained through our Trainer as an
  ``arch="external"`` network; ``DDPMScheduler(num_train_timesteps=1000)``'s defaults:
  eps-prediction, linear betas 1e-4..0.02 (our ``"linear"`` schedule at T = 1000 is the same
  ``linspace(1e-4, 0.02, 1000)``, in float64 where MONAI's is float32), MSE between the
  predicted and the true noise; ``torch.optim.Adam`` lr 2.5e-5 (torch's betas and eps), no
  weight decay, no gradient clipping, no LR schedule or warm-up, no EMA (``ema_decay=0``: our
  EMA copy is then the live weights, which are scored); batch 64. What differs from the
  tutorial: fp32 here, not fp16 autocast with a grad scaler (CUDA only there); images in our
  [-1, 1], not its [0, 1]; our random flips, not its ``RandAffine`` (rotation +-5 degrees,
  translation +-1 pixel, scale +-5%, probability 0.5); the network 4x narrower in parameters
  (half the channels); and it is sampled with our DDIM below, not the tutorial's 1000-step
  DDPM. It needs MONAI (``pip install 'monai[einops]'``, a bench-only dependency).
* ``rf``: :data:`RF_RECIPE`, ``DEMO_RECIPE`` with the rectified-flow objective of Stable
  Diffusion 3 (Esser et al. 2024): x_t = (1 - t) x0 + t eps, velocity target, plain MSE (no
  min-SNR weight), logit-normal t (m = 0, s = 1); the same U-Net, optimiser and EMA as ``cpu``.
  Sampled with Euler on the flow ODE (``flow-euler``, ``--steps`` steps), the flow's own
  sampler, where the others use DDIM.

All use 64x64 slices with random flips (the example's ``--random_flip``) and batch 16 except
MONAI's tutorial, batch 64 (one step then costs about 4 of the others' at equal FLOPs); fp32
(pinned: ``precision="auto"`` would pick bf16 on a CPU with native bf16), and DDIM with 50
steps for sampling, ``rf`` Euler with 50 (the seed itself ran all 500 ancestral steps, the
example 1000 DDPM steps; one sampler per objective keeps the comparison about training).

    python benchmarks/bench_recipes.py                    # 15 CPU-minutes per recipe, n = 100
    python benchmarks/bench_recipes.py --minutes 2 --n 32 # a quick look

Run folders (resumable checkpoints, metrics, evaluation figures) go to ``--work``
(``outputs/bench_recipes``); the table to ``--out`` (``benchmarks/results``): ``recipes.md`` and
``recipes.json``, which the README and notebook 07 read. Both are rewritten after every
recipe; ``--resume`` continues an interrupted training from its last checkpoint and keeps the
recipes already scored in ``recipes.json`` at the same ``--minutes``, ``--n`` and seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_info import machine_line  # noqa: E402

from oasis_lib.config import DEMO_RECIPE, EXTERNAL_ARCH, SEED_RECIPE, TrainConfig  # noqa: E402
from oasis_lib.data import load_splits  # noqa: E402
from oasis_lib.evaluation import report as evaluation  # noqa: E402
from oasis_lib.evaluation.segmenter import load_segmenter  # noqa: E402
from oasis_lib.models.unet import count_parameters  # noqa: E402
from oasis_lib.pretrained import load_model  # noqa: E402
from oasis_lib.training import train  # noqa: E402

DIFFUSERS_LAYOUT = "diffusers-example"  # external_unets.DIFFUSERS_LAYOUTS
MONAI_LAYOUT = "monai-scaled"  # external_unets.MONAI_LAYOUTS
DIFFUSERS_EPOCHS = 100  # the example's --num_epochs: where its cosine LR schedule ends
DIFFUSERS_RECIPE = {  # the example's defaults (module docstring), as TrainConfig overrides
    "arch": EXTERNAL_ARCH, "optimizer": "adamw", "lr": 1e-4, "adam_betas": (0.95, 0.999),
    "adam_eps": 1e-8, "weight_decay": 1e-6, "grad_clip": 1.0, "lr_schedule": "cosine",
    "warmup_steps": 500, "ema_decay": 0.9999, "ema_warmup": True, "ema_power": 0.75,
    "ema_inv_gamma": 1.0,
    "diffusion": {"schedule": "linear", "timesteps": 1000, "prediction_type": "eps",
                  "loss_type": "mse", "min_snr_gamma": None, "zero_terminal_snr": False}}
MONAI_RECIPE = {  # the 2D DDPM tutorial's settings (module docstring), as TrainConfig overrides
    "arch": EXTERNAL_ARCH, "optimizer": "adam", "lr": 2.5e-5, "adam_betas": (0.9, 0.999),
    "adam_eps": 1e-8, "weight_decay": 0.0, "grad_clip": 0.0, "lr_schedule": "constant",
    "warmup_steps": 0, "ema_decay": 0.0, "batch_size": 64,
    "diffusion": {"schedule": "linear", "timesteps": 1000, "prediction_type": "eps",
                  "loss_type": "mse", "min_snr_gamma": None, "zero_terminal_snr": False}}
RF_RECIPE = {  # DEMO_RECIPE with the rectified-flow objective (module docstring)
    "lr": 3e-4, "diffusion": {"noise_process": "rectified-flow", "prediction_type": "velocity",
                              "min_snr_gamma": None, "time_sampling": "logit-normal"}}
RECIPES = {"cpu": DEMO_RECIPE, "seed": SEED_RECIPE, "diffusers": DIFFUSERS_RECIPE,
           "monai": MONAI_RECIPE, "rf": RF_RECIPE}
EXTERNAL_LAYOUTS = {"diffusers": DIFFUSERS_LAYOUT, "monai": MONAI_LAYOUT}  # arch="external"
METRICS = (("frechet_segmenter", "Fréchet (segmenter features)", 1.0, 2),
           ("kid_segmenter", "KID x1e3", 1e3, 2),
           ("tissue_fractions", "tissue-fraction W1", 1.0, 4),
           ("intensity_histogram", "in-brain intensity W1", 1.0, 4),
           ("diversity_ssim", "pairwise SSIM (diversity)", 1.0, 3),
           ("memorization_pixel", "near-copy fraction (pixel)", 1.0, 2))


def recipe_config(name: str, out: Path, minutes: float, data_root, seed: int, *,
                  n_train: int) -> TrainConfig:
    recipe = dict(RECIPES[name])
    if name == "diffusers":  # the example's len(train_dataloader) * num_epochs
        recipe["lr_decay_steps"] = DIFFUSERS_EPOCHS * math.ceil(n_train / 16)
    return TrainConfig.from_preset(
        "cpu", **recipe, max_minutes=minutes, budget_clock="cpu", epochs=10_000,
        out_dir=str(out / name), data_root=data_root, seed=seed, validate_every=10_000,
        sample_every=10_000, checkpoint_every=100, progress=True, precision="fp32")


def network(name: str, seed: int):
    """The network a recipe trains when the library cannot build it (diffusers', MONAI's), else
    None."""
    if RECIPES[name].get("arch") != EXTERNAL_ARCH:
        return None
    from external_unets import external_unet

    torch.manual_seed(seed)
    return external_unet(EXTERNAL_LAYOUTS[name], 64)


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
    machine = machine_line()
    print(f"{machine}; {args.minutes} min per recipe; load average at start {load:.2f}")

    for name in EXTERNAL_LAYOUTS:
        if name not in args.recipes:
            continue
        try:
            network(name, args.seed)
        except ImportError as err:
            others = " ".join(k for k in args.recipes if k != name)
            raise SystemExit(f"error: the {name} row needs {name}: {err}; or leave it "
                             f"out (--recipes {others or 'cpu seed'})") from None
    datasets = dict(zip(("train_set", "val_set"),
                        load_splits(args.data, image_size=64, augment=False), strict=True))
    n_train = len(datasets["train_set"])
    results = {}
    if args.resume and (out / "recipes.json").exists():
        kept = json.loads((out / "recipes.json").read_text())
        if all(kept["argv"].get(k) == getattr(args, k) for k in ("minutes", "n", "seed", "steps")):
            results = {k: v for k, v in kept["results"].items() if k in args.recipes}
            print(f"resume: keeping {', '.join(results) or 'no recipe'} from "
                  f"{out / 'recipes.json'}")
        else:
            print(f"resume: {out / 'recipes.json'} was scored with other --minutes, --n, "
                  "--steps or --seed; scoring every recipe again")
    for name in args.recipes:
        if name in results:
            continue
        cfg = recipe_config(name, work, args.minutes, args.data, args.seed, n_train=n_train)
        t0 = time.perf_counter()
        result = train(cfg, resume=args.resume and (work / name / "last.pt").exists(),
                       model=network(name, args.seed), **datasets)
        wall = time.perf_counter() - t0
        pipe = load_model(work / name / "last.pt", model=network(name, args.seed))  # EMA
        device = pipe.device
        sampler = pipe.process.default_sampler  # ddim (VP), flow-euler (rectified flow)
        samples, spi = evaluation.generate_samples(
            pipe, args.n, sampler=sampler, steps=args.steps, seed=args.seed,
            batch_size=args.batch_size)
        report = evaluation.evaluate_samples(
            samples, data_root=args.data, segmenter=load_segmenter(device=device),
            out=work / name / "eval", device=device, seed=args.seed, progress=False,
            meta={"recipe": name, "sampler": sampler, "steps": args.steps},
            train_splits=pipe.config.train_splits)  # the run's own: test held out by default
        results[name] = {"params": count_parameters(pipe.model), "steps": result.step,
                         "sampler": sampler,
                         "config": cfg.to_dict(),
                         "images_per_s": result.images_per_second, "train_wall_seconds": wall,
                         "seconds_per_image": spi, "metrics": report["metrics"]}
        print(f"{name}: {result.step} steps, {result.images_per_second:.2f} img/s, "
              f"{spi:.3f} s/img sampling", flush=True)
        results = {k: results[k] for k in args.recipes if k in results}
        write(out, results, args, machine, load)
    if not results:
        raise SystemExit("error: no recipe was scored")
    write(out, results, args, machine, load)


def write(out: Path, results: dict, args, machine: str, load: float) -> None:
    """Rewrite ``recipes.md`` and ``recipes.json`` from the recipes scored so far."""
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
             line(f"sampling s/img ({args.steps} steps)",
                  [fmt(results[k]["seconds_per_image"]) for k in names] + [""]),
             line("sampler", [results[k].get("sampler", "ddim") for k in names] + [""])]
    for key, label, scale, digits in METRICS:
        cells = [results[k]["metrics"][key]["value"] for k in names]
        cells.append(results[names[0]]["metrics"][key]["floor"])
        lines.append(line(label, [fmt(v, scale, digits) for v in cells]))
    table = f"{machine}\n\n" + "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipes.md").write_text(table + "\n")
    (out / "recipes.json").write_text(json.dumps(
        {"argv": vars(args), "machine": machine, "torch": torch.__version__,
         "load_average_at_start": load, "results": results}, indent=1, default=str))
    print(f"wrote {out / 'recipes.md'} and {out / 'recipes.json'}")


if __name__ == "__main__":
    main()
