"""Figures of an evaluation report: the memorization gallery, tissue fractions, intensity
histograms, and the segmenter's masks beside the true ones."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from ..evaluation.tissue import dice_per_class
from .style import DPI, LABEL_CMAP, save_figure, tissue_legend, to_display


def plot_memorization(samples: Tensor, train: Tensor, dist, index, val_min: float, *,
                      k: int = 8, held_out: str = "held-out", save_to=None):
    """The ``k`` samples closest to a training slice (top) above that slice (bottom);
    ``train[index]`` is each sample's nearest training slice (possibly mirrored). ``val_min``:
    the distance of the closest real ``held_out`` slice (a split name, e.g. ``"test"``)."""
    order = np.argsort(np.asarray(dist))[:k]
    fig, axes = plt.subplots(2, len(order), figsize=(1.5 * len(order), 3.6), squeeze=False, dpi=DPI)
    for j, s in enumerate(order):
        axes[0, j].imshow(to_display(samples[s]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"d={float(dist[s]):.3f}", fontsize=8)
        axes[1, j].imshow(to_display(train[int(index[s])]), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"closest samples (top) and their nearest train slice (RMS pixel distance); "
                 f"closest {held_out} slice: {val_min:.3f}", fontsize=9)
    return save_figure(fig, save_to)


def plot_fractions(fractions: dict, *, save_to=None):
    """Per-slice CSF / grey / white fractions of the brain, one panel per tissue."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=DPI)
    for k, (ax, name) in enumerate(zip(axes, ("CSF", "grey matter", "white matter"),
                                       strict=True)):
        plot_histograms({g: f[:, k] for g, f in fractions.items()}, f"{name} fraction",
                        ax=ax, bins=30)
    return save_figure(fig, save_to)


def plot_histograms(groups: dict, xlabel: str, *, ax=None, bins: int = 50, save_to=None):
    """Overlaid density histograms of 1-D values, one per named group."""
    fig, ax = (plt.subplots(figsize=(6, 3.5), dpi=DPI) if ax is None else (ax.figure, ax))
    groups = {name: np.asarray(v) for name, v in groups.items() if len(v)}
    if not groups:
        return save_figure(fig, save_to) if save_to is not None else fig
    lo = min(float(np.min(v)) for v in groups.values())
    hi = max(float(np.max(v)) for v in groups.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, values in groups.items():
        ax.hist(values, bins=edges, density=True, histtype="step", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return save_figure(fig, save_to) if save_to is not None else fig


def plot_segmentation(images: Tensor, true_masks: Tensor, pred_masks: Tensor, *,
                      figsize: tuple[float, float] = (10.0, 5.6), save_to=None):
    """Slices (top row), their true tissue masks (middle) and the segmenter's masks (bottom),
    one column per slice, titled with the slice's Dice (mean of CSF, grey, white)."""
    colours = LABEL_CMAP
    fig, axes = plt.subplots(3, len(images), figsize=figsize, squeeze=False, dpi=DPI)
    for j in range(len(images)):
        dice = float(dice_per_class(pred_masks[j].cpu(), true_masks[j].cpu())[1:].mean())
        axes[0, j].imshow(to_display(images[j]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"Dice {dice:.2f}", fontsize=9)
        for r, masks in ((1, true_masks), (2, pred_masks)):
            axes[r, j].imshow(masks[j].cpu().numpy(), cmap=colours, vmin=0, vmax=3,
                              interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, label in enumerate(("slice", "true mask", "segmenter")):
        axes[r, 0].set_ylabel(label)
    tissue_legend(fig, cmap=colours)
    return save_figure(fig, save_to)
