"""Figures of the notebook series that ``oasis_lib.plotting`` does not draw.

Every function returns a ``matplotlib.figure.Figure`` of a fixed size and dpi (nbval compares
figures through their text, ``<Figure size 1100x340 with 8 Axes>``); in a notebook, end the line
with ``;`` and the inline backend shows the figure once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..diffusion.schedule import NoiseSchedule
from ..models.embeddings import sinusoidal_embedding
from .style import CLASS_LABELS, GREY, TISSUE_COLOURS, figure, to_display

#: Small images are drawn pixel by pixel: crisp, and their PNGs are ~3x smaller than smoothed.


# ---------------------------------------------------------------------------- 01: data
def intensity_histogram(images: Tensor, masks: Tensor, *, figsize=(11.0, 3.6)):
    """Left: histogram of brain-pixel grey values (0..255) per tissue class. Right: the fraction
    of all pixels in each class. ``images`` uint8 [N, H, W] (e.g. ``dataset.images``),
    ``masks`` classes [N, H, W]."""
    images = torch.as_tensor(images).reshape(-1).long()
    masks = torch.as_tensor(masks).reshape(-1).long()
    fig, axes = figure(1, 2, figsize, gridspec_kw={"width_ratios": [2.2, 1]})
    ax, bx = axes[0]
    bins = np.arange(0, 257, 4)
    for c in (1, 2, 3):
        values = images[masks == c].numpy()
        ax.hist(values, bins=bins, color=TISSUE_COLOURS[c], alpha=0.65, label=CLASS_LABELS[c])
    ax.set(xlabel="grey value (PNG, 0..255)", ylabel="pixels", xlim=(0, 256),
           title="Intensity of brain pixels by tissue class")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    counts = torch.bincount(masks, minlength=4).double()
    fractions = (counts / counts.sum()).numpy()
    bars = bx.bar(range(4), fractions, color=TISSUE_COLOURS)
    bx.bar_label(bars, labels=[f"{f:.1%}" for f in fractions], fontsize=9)
    bx.set_xticks(range(4), ["backgr.", "CSF", "grey", "white"])
    bx.set(ylim=(0, 1.1), title="Fraction of all pixels")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- 02: forward
def forward_strip(x0: Tensor, noise: Tensor, schedule: NoiseSchedule, ts: Sequence[int], *,
                  figsize=(12.0, 2.9)):
    """x_t = q_sample(x0, t, noise) for each t of ``ts`` (one image [1, H, W], fixed noise)."""
    fig, axes = figure(1, len(ts), figsize)
    for ax, t in zip(axes[0], ts, strict=True):
        x_t = schedule.q_sample(x0[None], torch.tensor([int(t)]), noise[None])[0, 0]
        ax.imshow(x_t.numpy(), vmin=-1, vmax=1, **GREY)  # x_0's grey scale, clipped
        ax.set_title(f"t = {t}\nalpha_bar = {schedule.alpha_bar_at(int(t)):.3f}", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"Forward process q(x_t | x_0), {schedule.kind} schedule, T = {schedule.T}",
                 fontsize=11)
    fig.tight_layout()
    return fig


def schedule_curves(schedules: Mapping[str, NoiseSchedule], *, figsize=(11.0, 3.8)):
    """alpha_bar_t (left) and log-SNR = log(alpha_bar / (1 - alpha_bar)) (right) against t / T,
    one line per named schedule; the value at t = T is printed in the legend."""
    fig, axes = figure(1, 2, figsize)
    ax, bx = axes[0]
    for i, (name, s) in enumerate(schedules.items()):
        u = (np.arange(s.T) + 1) / s.T
        ab = s.alpha_bar.double().numpy()
        ax.plot(u, ab, color=f"C{i}", label=f"{name} (alpha_bar_T = {s.alpha_bar_T:.3g})")
        log_snr = s.log_snr.double().numpy()
        finite = np.isfinite(log_snr)
        bx.plot(u[finite], log_snr[finite], color=f"C{i}", label=name)
    ax.set(xlabel="t / T", ylabel="alpha_bar_t", title="alpha_bar_t, the squared factor on x_0")
    bx.set(xlabel="t / T", ylabel="log SNR", ylim=(-22, 12),
           title="log SNR_t = log(alpha_bar_t / (1 - alpha_bar_t))")
    for a in (ax, bx):
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Blur images [B, C, H, W] with a Gaussian of std ``sigma`` pixels (reflect padding)."""
    radius = max(1, int(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def terminal_comparison(x0: Tensor, noise: Tensor, schedule: NoiseSchedule, *,
                        sigma: float = 6.0, figsize=(11.0, 3.6)):
    """What the network sees at the last training step, x_T = q_sample(x0, T-1, noise), next to
    pure noise (where sampling starts), then both blurred with a Gaussian of ``sigma`` pixels
    (a low-pass filter: the noise averages out, low-frequency signal stays)."""
    x_T = schedule.q_sample(x0[None], torch.tensor([schedule.T - 1]), noise[None])
    pure = torch.randn(x0[None].shape, generator=torch.Generator().manual_seed(1))
    panels = [(f"x_T at the last training step\n({schedule.kind}, T = {schedule.T})", x_T, 2.5),
              ("pure noise N(0, I),\nwhere sampling starts", pure, 2.5),
              (f"x_T, blurred\n(Gaussian, sigma = {sigma:g} px)", gaussian_blur(x_T, sigma), 0.25),
              (f"pure noise, blurred\n(Gaussian, sigma = {sigma:g} px)",
               gaussian_blur(pure, sigma), 0.25)]
    outline = (x0[0] > -0.9).float().numpy()  # the brain (the background is -1)
    fig, axes = figure(1, 4, figsize)
    for i, (ax, (title, img, scale)) in enumerate(zip(axes[0], panels, strict=True)):
        ax.imshow(img[0, 0].numpy(), vmin=-scale, vmax=scale, **GREY)
        if i >= 2:
            ax.contour(outline, levels=[0.5], colors="C1", linewidths=1.0)
        ax.set_title(f"{title}\ngrey scale -{scale:g} to {scale:g}", fontsize=9)
        ax.set_axis_off()
    fig.text(0.75, 0.02, "orange: the outline of the brain in x_0", ha="center", fontsize=9,
             color="C1")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


# ---------------------------------------------------------------------------- 03: the network
def embedding_heatmap(timesteps: int = 1000, dim: int = 32, *, figsize=(11.0, 3.8)):
    """Left: the sinusoidal embedding E(t) of every t (rows: the ``dim`` components). Right: the
    cosine similarity of E(t) and E(t') - nearby timesteps get similar vectors."""
    t = torch.arange(timesteps)
    emb = sinusoidal_embedding(t, dim).double()
    unit = emb / emb.norm(dim=1, keepdim=True)
    sim = (unit @ unit.T).numpy()
    fig, axes = figure(1, 2, figsize, gridspec_kw={"width_ratios": [1.9, 1]})
    ax, bx = axes[0]
    im = ax.imshow(emb.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1,
                   interpolation="nearest", extent=(-0.5, timesteps - 0.5, dim - 0.5, -0.5))
    ax.axhline(dim // 2 - 0.5, color="k", lw=0.8)
    ax.set(xlabel="timestep t", ylabel="component (sin | cos)",
           title=f"Sinusoidal embedding E(t), {dim} components")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    im = bx.imshow(sim, cmap="viridis", vmin=float(sim.min()), vmax=1, origin="upper",
                   extent=(-0.5, timesteps - 0.5, timesteps - 0.5, -0.5))
    bx.set(xlabel="t", ylabel="t'", title="cosine similarity of E(t), E(t')")
    fig.colorbar(im, ax=bx, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def parameter_bars(counts: Mapping[str, int], *, figsize=(8.0, 3.0)):
    """Horizontal bars of parameter counts (log scale), each labelled with its number."""
    names, values = list(counts), [int(v) for v in counts.values()]
    fig, axes = figure(1, 1, figsize)
    ax = axes[0, 0]
    bars = ax.barh(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
    ax.bar_label(bars, labels=[f" {v:,}" for v in values], fontsize=9)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(values) / 3, max(values) * 8)
    ax.set(xlabel="parameters (log scale)", title="Model size")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- 04: training
def show_pngs(paths: Sequence[str | os.PathLike], titles: Sequence[str] | None = None, *,
              ncols: int = 4, figsize=(12.0, 3.6)):
    """PNG files (e.g. the trainer's sample grids) side by side, at most ``ncols`` shown
    (evenly spread over ``paths`` when there are more)."""
    from PIL import Image

    paths = list(paths)
    if not paths:
        raise ValueError("no PNG files to show")
    pick = np.unique(np.linspace(0, len(paths) - 1, min(ncols, len(paths))).round().astype(int))
    fig, axes = figure(1, ncols, figsize)
    for ax in axes[0]:
        ax.set_axis_off()
    for ax, i in zip(axes[0], pick, strict=False):
        with Image.open(paths[i]) as im:
            ax.imshow(np.asarray(im.convert("L")), vmin=0, vmax=255, **GREY)
        ax.set_title(titles[i] if titles else os.path.basename(paths[i]), fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- 05: sampling
def sampler_rows(rows: Mapping[str, Tensor], *, ncols: int = 8,
                 figsize: tuple[float, float] | None = None):
    """One row of images per sampler (``{label: images [B, 1, H, W]}``), at most ``ncols``
    images each; rows with fewer images leave the remaining cells blank. The default size,
    (1.6 ncols + 1.6, 1.7 rows) inches, depends only on the grid."""
    if figsize is None:
        figsize = (1.6 * ncols + 1.6, 1.7 * len(rows))
    fig, axes = figure(len(rows), ncols, figsize)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(images):
                ax.imshow(to_display(images[c]), vmin=0, vmax=1, **GREY)
        axes[r, 0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for ``n`` images."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols
