"""Figures and sliders of flow matching (notebook 11), in the three layers of
:mod:`oasis_lib.viz.widgets`: a pure *frame* function, a fixed-size *figure*, a one-line *slider*.

* :func:`coefficients_figure`: the two paths' signal and noise coefficients and log-SNR over t;
* :func:`paths_figure`: one slice on the straight path and on the VP path at the same fractions;
* :func:`time_sampling_figure`: training times drawn by the process (uniform, logit-normal,
  shifted) against their densities, and the shift's map t -> t';
* :func:`toy_flow_figure`: the exact velocity field of a two-point data set, integrated with many
  and with few Euler steps (why few steps blur);
* :func:`few_step_slider`: the samples of one noise draw with 1..N Euler steps, of one model or
  of several side by side (a teacher and its reflow student);
* :func:`straightness_curves`, :func:`straightness_figure`: how much each Euler step's velocity
  departs from the path's chord, before and after reflow;
* :func:`nfe_table`, :func:`few_step_table`: the benchmarks' tables as text.

Images are ``[1, H, W]`` tensors in [-1, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from ..diffusion.flow_matching import (
    flow_forward,
    integrate_flow,
    logit_normal_density,
    point_mixture_velocity,
    shift_time,
    straightness,
)
from ..diffusion.schedule import NoiseSchedule
from .style import DPI, GREY, to_display
from .widgets import _int_slider, _show

__all__ = ["coefficients_figure", "few_step_figure", "few_step_frame", "few_step_slider",
           "few_step_table", "logit_normal", "nfe_table", "paths_figure", "straightness_curves",
           "straightness_figure", "time_sampling_figure", "toy_flow_figure", "toy_trajectories"]

PANEL = 2.2  # inches per image panel
RF_COLOUR, VP_COLOUR = "tab:orange", "tab:blue"


# ------------------------------------------------------------------ the two paths
def coefficients_figure(schedule: NoiseSchedule):
    """Left: x_t = a(t) x0 + b(t) eps, a and b over the fraction t of the way to noise, for the
    straight path (a = 1 - t, b = t) and the VP ``schedule`` (a = sqrt(alpha_bar), b =
    sqrt(1 - alpha_bar) at timestep t (T - 1)). Right: log SNR = log(a^2 / b^2) of both."""
    T = schedule.T
    frac = np.arange(T) / (T - 1)
    ab = schedule.f64("alpha_bar").numpy()
    t = np.linspace(0.0, 1.0, 401)[1:-1]
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6), dpi=DPI)
    axes[0].plot(t, 1 - t, color=RF_COLOUR, label="straight: a = 1 - t")
    axes[0].plot(t, t, color=RF_COLOUR, ls="--", label="straight: b = t")
    axes[0].plot(frac, np.sqrt(ab), color=VP_COLOUR, label="VP: a = √ᾱ")
    axes[0].plot(frac, np.sqrt(1 - ab), color=VP_COLOUR, ls="--", label="VP: b = √(1 - ᾱ)")
    axes[0].set_ylabel("coefficient")
    axes[0].legend(fontsize=8, loc="center left")
    axes[1].plot(t, 2 * np.log((1 - t) / t), color=RF_COLOUR, label="straight")
    axes[1].plot(frac, np.log(ab / (1 - ab)), color=VP_COLOUR, label=f"VP ({schedule.kind})")
    axes[1].set_ylabel("log SNR = log(a² / b²)")
    axes[1].set_ylim(-12, 12)
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("t (VP: timestep / (T - 1))")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def paths_figure(x0: Tensor, noise: Tensor, schedule: NoiseSchedule, fractions):
    """Two rows of one slice ``x0`` [1, H, W] with one ``noise`` draw: on the straight path at t
    in ``fractions`` (top), and on the VP path at timestep round(t (T - 1)) (bottom)."""
    fractions = [float(f) for f in fractions]
    T = schedule.T
    fig, axes = plt.subplots(2, len(fractions), figsize=(PANEL * len(fractions), 2 * PANEL + 0.5),
                             dpi=DPI, squeeze=False)
    for j, f in enumerate(fractions):
        rf = flow_forward(x0[None], torch.tensor([f]), noise[None])[0]
        step = round(f * (T - 1))
        vp = schedule.q_sample(x0[None], torch.tensor([step]), noise[None])[0]
        for row, (img, title) in enumerate(((rf, f"straight, t = {f:g}"),
                                            (vp, f"VP, timestep {step}"))):
            ax = axes[row, j]
            ax.imshow(to_display(img), vmin=0, vmax=1, **GREY)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ training times
def time_sampling_figure(draws: dict[str, Tensor], densities: dict[str, Any],
                         shifts=(1.0, 2.0, 3.0, 6.0)):
    """Left: a histogram of each set of training times in ``draws`` (label -> t in [0, 1]) with
    the density of the same label in ``densities`` (label -> callable of t) drawn over it.
    Right: the shift t' = α t / (1 + (α - 1) t) for each α in ``shifts``."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6), dpi=DPI)
    grid = np.linspace(0.0, 1.0, 401)[1:-1]
    bins = np.linspace(0.0, 1.0, 41)
    for (label, t), colour in zip(draws.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"],
                                  strict=False):
        axes[0].hist(np.asarray(t, dtype=np.float64), bins=bins, density=True, alpha=0.35,
                     color=colour, label=f"{label} ({len(t):,} draws)")
        if label in densities:
            axes[0].plot(grid, densities[label](grid), color=colour, lw=1.5)
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8)
    for s in shifts:
        axes[1].plot(grid, shift_time(grid, s), label=f"α = {s:g}")
    axes[1].plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("shifted t'")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def logit_normal(loc: float = 0.0, scale: float = 1.0):
    """The logit-normal density as a callable of t (for :func:`time_sampling_figure`)."""
    return lambda t: logit_normal_density(t, loc=loc, scale=scale)


# ------------------------------------------------------------------ a two-point toy
def toy_trajectories(points: Tensor, starts: Tensor, steps: int, *, std: float = 0.0) -> Tensor:
    """Euler trajectories of the exact field of the data (``points`` [K, 2], or blobs of
    standard deviation ``std`` around them) from ``starts`` [N, 2] at t = 1: [steps + 1, N, 2]
    (float64)."""
    points, starts = points.double(), starts.double()
    return integrate_flow(lambda x, t: point_mixture_velocity(x, t, points, std=std), starts,
                          steps)


def toy_flow_figure(points: Tensor, starts: Tensor, step_counts=(200, 1, 2, 4), *,
                    std: float = 0.0):
    """One panel per Euler step count: the trajectories from ``starts`` (t = 1, circles) under the
    exact velocity field of the data (stars at ``points``; with ``std`` > 0, blobs of that
    standard deviation, a circle of radius 2 std each), ending at the crosses (t = 0). The first
    panel also draws, dashed, the straight line from each start to where it ends."""
    fig, axes = plt.subplots(1, len(step_counts), figsize=(2.7 * len(step_counts), 2.9), dpi=DPI,
                             squeeze=False)
    pts = points.double().numpy()
    for ax, steps in zip(axes[0], step_counts, strict=True):
        xs = toy_trajectories(points, starts, steps, std=std).numpy()
        for n in range(xs.shape[1]):
            ax.plot(xs[:, n, 0], xs[:, n, 1], color="tab:purple", lw=0.8, alpha=0.7)
            if steps == step_counts[0]:
                ax.plot([xs[0, n, 0], xs[-1, n, 0]], [xs[0, n, 1], xs[-1, n, 1]], color="0.5",
                        lw=0.6, ls="--")
        ax.scatter(xs[0, :, 0], xs[0, :, 1], s=10, facecolors="none", edgecolors="0.3")
        ax.scatter(xs[-1, :, 0], xs[-1, :, 1], s=18, marker="x", color="tab:red", zorder=3)
        ax.scatter(pts[:, 0], pts[:, 1], s=120, marker="*", color="gold", edgecolors="k",
                   zorder=4)
        for centre in pts if std > 0 else ():
            ax.add_patch(plt.Circle(centre, 2 * std, color="gold", alpha=0.3, zorder=1))
        ax.set_title(f"{steps} Euler step{'s' if steps > 1 else ''}", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ few Euler steps
@torch.no_grad()
def few_step_frame(pipe, x_T: Tensor, steps: int, *, label: str | None = None,
                   spacing: str | None = None) -> dict:
    """The samples of the noise ``x_T`` (model space, [N, ...]) with ``steps`` Euler steps
    (the pipeline's default sampler; ``spacing`` None: its default time grid, a model file's
    own if it carries one), decoded: ``images`` CPU [N, 1, H, W]; ``label`` names the model in
    the figure."""
    images = pipe.sample(len(x_T), steps=int(steps), x_T=x_T, spacing=spacing, progress=False)
    return {"steps": int(steps), "images": images.clamp(-1, 1).cpu(), "label": label}


def few_step_figure(frames: list[dict] | dict):
    """One row per frame (a step count), one column per sample of the same noise."""
    frames = [frames] if isinstance(frames, dict) else list(frames)
    n = len(frames[0]["images"])
    fig, axes = plt.subplots(len(frames), n, figsize=(PANEL * n, PANEL * len(frames) + 0.3),
                             dpi=DPI, squeeze=False)
    for row, frame in enumerate(frames):
        for j in range(n):
            ax = axes[row, j]
            ax.imshow(to_display(frame["images"][j]), vmin=0, vmax=1, **GREY)
            ax.set_xticks([])
            ax.set_yticks([])
        label = f"{frame['steps']} step{'s' if frame['steps'] > 1 else ''}"
        if frame.get("label"):
            label = f"{frame['label']}\n{label}"
        axes[row, 0].set_ylabel(label, fontsize=10)
    fig.tight_layout()
    return fig


def few_step_slider(pipe, x_T: Tensor, *, hi: int = 20, steps: int = 1,
                    spacing: str | None = None):
    """A slider over the number of Euler steps, 1..``hi``, redrawing :func:`few_step_figure`;
    ``pipe`` a pipeline, or a dict ``{label: pipeline}`` drawn one row each from the same
    noise; ``spacing``: the time grid of every row (None: each model's default)."""
    pipes = pipe if isinstance(pipe, dict) else {None: pipe}

    def draw(steps: int):
        return _show(few_step_figure([few_step_frame(p, x_T, steps, label=name, spacing=spacing)
                                      for name, p in pipes.items()]))

    from ipywidgets import interactive

    return interactive(draw, steps=_int_slider("Euler steps", steps, 1, hi))


# ------------------------------------------------------------------ straightness
@torch.no_grad()
def straightness_curves(pipes: dict, x_T: Tensor, *, steps: int = 20,
                        spacing: str = "trailing") -> dict[str, dict]:
    """For each ``{label: pipeline}`` (rectified flows), Euler with ``steps`` steps on the
    ``spacing`` grid from the noise ``x_T`` (model space), and the per-step
    :func:`~oasis_lib.diffusion.flow_matching.straightness` of its path: ``{label: {"t": the
    steps' midpoints, "bend": [steps], "total": the sum weighted by the step lengths}}``.
    No decoding: the path is the model-space chain."""
    out = {}
    for name, pipe in pipes.items():
        res = pipe.sample(len(x_T), sampler="flow-euler", steps=steps, spacing=spacing, x_T=x_T,
                          return_intermediates=True, progress=False)
        ts = res.timesteps.double() / pipe.process.T
        bend = straightness(res.xs, ts)
        out[name] = {"t": ((ts[1:] + ts[:-1]) / 2).numpy(), "bend": bend.numpy(),
                     "total": float((bend * (ts[:-1] - ts[1:])).sum())}
    return out


def straightness_figure(curves: dict[str, dict]):
    """One line per model: each Euler step's E||v_i - c||^2 / E||c||^2 at the step's midpoint
    time (0: the step moves along the path's chord)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.4), dpi=DPI)
    for name, c in curves.items():
        ax.plot(c["t"], c["bend"], "o-", ms=3, label=f"{name} (weighted sum {c['total']:.3f})")
    ax.set_xlabel("t (1 = noise, 0 = data)")
    ax.set_ylabel("departure from the chord")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ the benchmark's table
def nfe_table(path: str | Path) -> str:
    """``benchmarks/bench_flow_nfe.py``'s JSON as a text table: one row per sampler, one column
    per budget of network calls, each cell "Fréchet / KID x1e3 (calls)"."""
    data = json.loads(Path(path).read_text())
    rows: dict[str, dict[int, dict]] = {}
    for r in data["results"]:
        rows.setdefault(r["label"], {})[r["budget"]] = r
    budgets = sorted({b for cells in rows.values() for b in cells})
    width = max(len(k) for k in rows)
    lines = [f"{'sampler':<{width}} | " + " | ".join(f"{'NFE ' + str(b):<20}" for b in budgets)]
    for label, cells in rows.items():
        lines.append(f"{label:<{width}} | " + " | ".join(
            f"{c['frechet']:.3f} / {1e3 * c['kid']:5.2f} ({c['calls']:2d})".ljust(20)
            for c in (cells[b] for b in budgets)))
    first = data["results"][0]
    lines.append(f"floor (real vs real): Fréchet {first['frechet_floor']:.3f}, "
                 f"KID x1e3 {1e3 * first['kid_floor']:.2f}; n = {data['argv'].get('n')} per cell")
    return "\n".join(lines)


def few_step_table(path: str | Path) -> str:
    """``benchmarks/bench_few_step.py``'s JSON as a text table: one row per model, step count
    and grid: Fréchet (x the reference's), KID x1e3, RMS to the reference's samples, seconds
    per 16 slices (bf16 where the benchmark's CPU had it, else fp32)."""
    data = json.loads(Path(path).read_text())
    rows = data["rows"]
    width = max(len(r["model"]) for r in rows) + 12
    lines = [f"{'model':<{width}} | steps | grid     | Fréchet (ratio) | KID x1e3 | RMS   | "
             "s / 16"]
    for r in rows:
        name = r["model"] + (" (reference)" if r["reference"] else "")
        secs = r.get("seconds_bf16") or r.get("seconds_fp32")
        frechet = f"{r['frechet']:.3f} ({r['frechet_ratio']:.2f}x)"
        lines.append(f"{name:<{width}} | {r['steps']:5d} | {r['spacing']:<8} | {frechet:<15} | "
                     f"{1e3 * r['kid']:8.2f} | {r['rms_to_reference']:.3f} | "
                     + ("-" if secs is None else f"{secs:.2f}"))
    first = rows[0]
    mode = "bf16" if rows[0].get("seconds_bf16") else "fp32"
    lines.append(f"floor (real vs real): Fréchet {first['frechet_floor']:.3f}, KID x1e3 "
                 f"{1e3 * first['kid_floor']:.2f}; n = {data['n']} per row; times in {mode}")
    return "\n".join(lines)
