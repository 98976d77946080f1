"""One look for every figure: the DPI, the grey and tissue colour maps, and the save helper.

Figures are drawn at a fixed DPI so that the ``<Figure size WxH with N Axes>`` text that nbval
compares never depends on a reader's matplotlib rc; grey images use nearest-neighbour pixels
(crisp, small PNGs). :func:`save_figure` is the one way a figure reaches a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap

from ..data.layout import CLASS_LABELS

DPI = 100
GREY = {"cmap": "gray", "interpolation": "nearest"}  # crisp pixels, small PNGs
#: Solid colours of background, CSF, grey and white matter (bars, histograms, label maps).
TISSUE_COLOURS = ("0.4", "#3b8cff", "#ff5a33", "#e6c619")
#: Translucent overlay of a class mask on its slice (background transparent).
TISSUE_CMAP = ListedColormap([(0, 0, 0, 0), (0.20, 0.55, 1.0, 0.55), (1.0, 0.35, 0.2, 0.55),
                              (1.0, 0.9, 0.2, 0.55)])
#: Opaque label map (background black), for predicted and true masks side by side.
LABEL_CMAP = ListedColormap(["black", *(TISSUE_CMAP(k)[:3] for k in (1, 2, 3))])

__all__ = ["CLASS_LABELS", "DPI", "GREY", "LABEL_CMAP", "TISSUE_CMAP", "TISSUE_COLOURS",
           "figure", "save_figure", "tissue_legend", "to_display"]


def figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.0, 4.0), **kw):
    """``plt.subplots`` at the project's DPI, always returning a 2-D array of axes."""
    return plt.subplots(nrows, ncols, figsize=figsize, dpi=DPI, squeeze=False, **kw)


def save_figure(fig, save_to: str | os.PathLike | None):
    """Write ``fig`` to ``save_to`` (PNG, tight box, folders created) and close it; with
    ``save_to=None`` return it open for a notebook to show."""
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
    return fig


def to_display(x: torch.Tensor) -> np.ndarray:
    """A [1, H, W] or [H, W] image in [-1, 1] as an [H, W] float array in [0, 1]."""
    x = x.detach().float().cpu()
    if x.ndim == 3:
        x = x[0]
    return ((x.clamp(-1, 1) + 1) / 2).numpy()


def tissue_legend(fig, *, cmap=TISSUE_CMAP) -> None:
    """A legend of the three tissues below the figure."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in (1, 2, 3)]
    fig.legend(handles, CLASS_LABELS[1:], loc="lower center", ncol=3, frameon=False)
