"""Matplotlib figures used by the CLI, the trainer and the notebooks.

Each function returns a ``matplotlib.figure.Figure`` of a fixed size (nbval checks figures
through their text, ``<Figure size ...>``) and, with ``save_to``, also writes a PNG and closes
the figure so that scripts do not accumulate open figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid

from .style import DPI, TISSUE_CMAP, save_figure, tissue_legend, to_display


def image_grid(images: torch.Tensor, *, nrow: int = 8, title: str | None = None,
               figsize: tuple[float, float] = (6, 6), save_to=None):
    """A grid of [B, 1, H, W] images in [-1, 1] (torchvision ``make_grid``)."""
    grid = make_grid((images.detach().float().cpu().clamp(-1, 1) + 1) / 2, nrow=nrow,
                     padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=figsize, dpi=DPI)
    ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return save_figure(fig, save_to)


def slices_with_masks(images: torch.Tensor, masks: torch.Tensor | None = None, *,
                      titles: Sequence[str] | None = None, ncols: int = 4,
                      figsize: tuple[float, float] = (10, 5.5), save_to=None):
    """Slices in grey, each shown plain (top row) and with its tissue mask overlaid (below)."""
    n = len(images)
    rows = 2 if masks is not None else 1
    ncols = min(ncols, n)
    fig, axes = plt.subplots(rows, ncols, figsize=figsize, squeeze=False)
    for j in range(ncols):
        axes[0, j].imshow(to_display(images[j]), cmap="gray", vmin=0, vmax=1)
        if titles:
            axes[0, j].set_title(titles[j], fontsize=9)
        if masks is not None:
            axes[1, j].imshow(to_display(images[j]), cmap="gray", vmin=0, vmax=1)
            axes[1, j].imshow(masks[j].cpu().numpy(), cmap=TISSUE_CMAP, vmin=0, vmax=3,
                              interpolation="nearest")
    for ax in axes.flat:
        ax.set_axis_off()
    if masks is not None:
        tissue_legend(fig)
    return save_figure(fig, save_to)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a trainer's ``metrics.jsonl``."""
    with open(path) as f:
        return [r for r in map(_record, f) if r is not None]


def _record(line: str) -> dict | None:
    """One JSON line, or None for a blank or torn one (the last line of a killed run)."""
    try:
        record = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def centred_mean(values: Sequence[float], width: int) -> np.ndarray:
    """The mean of each complete window of ``2 * (width // 2) + 1`` consecutive values: one
    per value that has ``width // 2`` neighbours on each side, ``len(values) - 2 * (width //
    2)`` in all (none if there are fewer values than a window).

    Drawn at each window's middle step, it runs through a falling loss; the same mean drawn at
    the window's last step (a trailing mean) lags behind it, above the late raw points, while
    its window still holds the first, highest losses. A window never mixes values more than
    ``width // 2`` places apart, a straight line comes back unchanged, and each mean lies
    within the range of its window.
    """
    v = np.asarray(values, dtype=float)
    w = 2 * (width // 2) + 1
    if len(v) < w:
        return np.empty(0)
    return np.lib.stride_tricks.sliding_window_view(v, w).mean(axis=1)


def plot_loss_curve(metrics: str | os.PathLike | list[dict], *, smooth: int = 20,
                    figsize: tuple[float, float] = (7, 3.5), save_to=None):
    """Training loss (raw, and its :func:`centred_mean` over windows of ``smooth // 2``
    logged values on each side, drawn at each window's middle step) and validation losses
    against the step. The smoothed line is an arithmetic mean, as the validation loss is, so
    the two can be compared; it starts and ends ``smooth // 2`` logged values in."""
    records = read_metrics(metrics) if not isinstance(metrics, list) else metrics
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"], r["val_loss_ema"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=figsize, dpi=DPI)
    if train:
        s, l = map(np.asarray, zip(*train, strict=True))
        every = int(np.median(np.diff(s))) if len(s) > 1 else 1
        ax.plot(s, l, color="0.75", lw=0.8,
                label="train loss" + (f", logged every {every} steps" if every > 1 else ""))
        half, mean = smooth // 2, centred_mean(l, smooth)
        if half >= 1 and len(mean):
            ax.plot(s[half:len(s) - half], mean, color="C0",
                    label=f"train, centred mean of {2 * half + 1} points (±{half * every} steps)")
    if val:
        s, v, ve = map(np.asarray, zip(*val, strict=True))
        ax.plot(s, v, "o-", color="C1", label="validation (live)")
        ax.plot(s, ve, "s-", color="C2", label="validation (EMA)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, save_to)


def denoising_strip(xs: torch.Tensor, x0s: torch.Tensor, timesteps: Sequence[int], *,
                    index: int = 0, max_cols: int = 8, figsize: tuple[float, float] = (12, 3.4),
                    save_to=None):
    """x_t (top) and the predicted x0 (bottom) at several t of one reverse trajectory."""
    k = len(timesteps)
    cols = np.unique(np.linspace(0, k - 1, min(max_cols, k)).round().astype(int))
    fig, axes = plt.subplots(2, len(cols), figsize=figsize, squeeze=False)
    for j, c in enumerate(cols):
        axes[0, j].imshow(to_display(xs[c, index]), cmap="gray", vmin=0, vmax=1)
        t = int(timesteps[c])  # -1 marks the state after the last step: the sample itself
        axes[0, j].set_title(f"t={t}" if t >= 0 else "final x_0", fontsize=9)
        axes[1, j].imshow(to_display(x0s[c, index]), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("x_t")
    axes[1, 0].set_ylabel("predicted x0")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, save_to)
