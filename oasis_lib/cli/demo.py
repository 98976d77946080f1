"""``make demo``: the whole pipeline in a few minutes on a laptop CPU.

1. find the data (``$OASIS_DATA``, else the demo dataset, built on first use) and summarise it;
2. draw slices with their tissue masks;
3. train the ``tiny`` preset briefly (to show the loop, its checkpoints and loss curve);
4. sample a grid with the shipped demo checkpoint and draw a denoising strip
   (x_t and the predicted x0 at several t), with :data:`DEMO_SAMPLER`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data import load_split, load_splits, resolve_data_root, summarize
from ..paths import DEMO_CHECKPOINT
from ..pretrained import load_model
from ..training.trainer import train
from ..viz.plotting import denoising_strip, image_grid, plot_loss_curve, slices_with_masks

# DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) on Karras et al. (2022, eq. 5) time steps, 20
# network calls: one of the 20-call samplers that match 1000-step DDPM on the shipped checkpoint
# in benchmarks/results/samplers.md.
DEMO_SAMPLER = {"sampler": "dpm++2m", "steps": 20, "spacing": "karras"}
DEMO_SAMPLER_NAME = "DPM-Solver++(2M), 20 Karras steps"


def draw_validate_overlays(root: Path, path: Path, n: int = 4) -> Path:
    """Draw ``n`` validate slices spread over the split, with their tissue masks, to ``path``."""
    val = load_split("validate", root, image_size=256, with_masks=True, augment=False)
    picks = [(len(val) * k // n + 16) % len(val) for k in range(n)]  # mid-case slices
    imgs, masks = zip(*(val[i] for i in picks), strict=True)
    titles = [f"case {val.items[i][0]:03d} slice {val.items[i][1]}" for i in picks]
    slices_with_masks(imgs, masks, titles=titles, save_to=path)
    return path


def run_demo(out: str | Path = "outputs", *, train_steps: int = 300,
             checkpoint: str | Path | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    t0 = time.perf_counter()

    root = resolve_data_root()
    print(summarize(root))
    written.append(draw_validate_overlays(root, out / "slices_with_masks.png"))

    run = out / "demo_run"
    shutil.rmtree(run, ignore_errors=True)
    # max_steps ends the run (epochs only bounds it); a loss line every 2 steps for the curve
    cfg = TrainConfig.from_preset("tiny", out_dir=str(run), max_steps=train_steps, epochs=1000,
                                  checkpoint_every=100, log_every=2)
    train_set, val_set = load_splits(root, image_size=cfg.image_size, augment=False)
    print(f"training the tiny preset for {train_steps} steps (to show the loop) ...")
    result = train(cfg, train_set=train_set, val_set=val_set)
    print(f"  {result.images_per_second:.0f} images/s; checkpoints in {run}")
    plot_loss_curve(run / "metrics.jsonl", save_to=out / "loss_curve.png")
    written.append(out / "loss_curve.png")

    ckpt = Path(checkpoint) if checkpoint else DEMO_CHECKPOINT
    if ckpt.is_file():
        pipe = load_model(ckpt)
        print(f"sampling 16 slices with {ckpt.name}: {DEMO_SAMPLER_NAME} ...")
        res = pipe.sample(16, **DEMO_SAMPLER, generator=torch.Generator().manual_seed(0),
                          return_intermediates=True, every=2)
        image_grid(res.images, nrow=4, title=f"{DEMO_SAMPLER_NAME}: {ckpt.name}",
                   save_to=out / "sample_grid.png")
        denoising_strip(res.xs, res.x0s, res.timesteps, save_to=out / "denoising_strip.png")
        written += [out / "sample_grid.png", out / "denoising_strip.png"]
    else:
        print(f"no demo checkpoint at {ckpt}: skipped the sample grid")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; wrote:")
    for p in written:
        print(f"  {p}")
    return written

