"""Sliders for the notebooks: pure frame functions, fixed-size renderers, one-line sliders.

Every slider of the series is three layers, so that what a slider shows is tested without a
browser (``tests/test_widgets.py``):

1. a *frame* function, pure: slider value in, a dict of what to draw out, computed by the very
   library call a reader would make (:meth:`NoiseSchedule.q_sample` at that t with the fixed
   noise; the record of a :class:`~oasis_lib.sampling.SampleResult`; the dataset's item);
2. a *figure* function drawing one frame in a figure of fixed size, whose title names the slider
   value (``t = 250``, ``reverse step 12 of 50``, ``case 402, slice 16``);
3. a *slider* function, one line in a notebook, that wires ``ipywidgets.IntSlider``\\ s
   (``continuous_update=False``: one redraw when the handle is released, friendly to a CPU) to
   1 -> 2 and returns the ``ipywidgets.interactive`` widget (what ``ipywidgets.interact`` builds
   and displays), so the notebook cell's value is the widget. After each change
   ``widget.result`` holds the figure just drawn.

Images are ``[1, H, W]`` (or ``[H, W]``) tensors in [-1, 1], as everywhere in ``oasis_lib``.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from ..diffusion.sampling import SampleResult
from ..diffusion.schedule import NoiseSchedule
from .style import DPI, GREY, TISSUE_CMAP, tissue_legend, to_display

__all__ = [
    "forward_figure",
    "forward_frame",
    "forward_slider",
    "reverse_figure",
    "reverse_frame",
    "reverse_slider",
    "slice_figure",
    "slice_frame",
    "slice_slider",
]

FORWARD_FIGSIZE = (11.0, 3.4)
REVERSE_FIGSIZE = (7.0, 4.0)
SLICE_FIGSIZE = (8.0, 4.4)


def _image(x: Tensor) -> Tensor:
    """A single image as [1, H, W] float (accepts [H, W], [1, H, W] or [1, 1, H, W])."""
    x = torch.as_tensor(x)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected one image [1, H, W] (or [H, W]), got shape {tuple(x.shape)}")
    return x.float()


def _show(fig) -> Any:
    """Display ``fig`` (inside an interact callback this lands in the widget's output) and close
    it, so redraws do not pile up open figures. Returns the figure."""
    from IPython.display import display

    display(fig)
    plt.close(fig)
    return fig


def _int_slider(description: str, value: int, lo: int, hi: int, step: int = 1):
    from ipywidgets import IntSlider, Layout

    return IntSlider(value=int(value), min=int(lo), max=int(hi), step=int(step),
                     description=description, continuous_update=False,
                     layout=Layout(width="60%"), style={"description_width": "initial"})


# ---------------------------------------------------------------------------- forward process
def forward_frame(x0: Tensor, noise: Tensor, schedule: NoiseSchedule, t: int) -> dict:
    """One frame of the forward process: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    (Ho et al. 2020 eq. 4), computed with :meth:`NoiseSchedule.q_sample` at step ``t`` with the
    fixed ``noise``.

    Args:
        x0: one clean image [1, H, W] in [-1, 1].
        noise: the fixed eps, same shape as ``x0``.
        schedule: the noise schedule.
        t: 0-based timestep in ``0..T-1``.

    Returns a dict: ``t``, ``x0``, ``noise``, ``x_t`` ([1, H, W] tensors), ``alpha_bar``
    (float), ``signal`` = sqrt(alpha_bar), ``noise_scale`` = sqrt(1 - alpha_bar), and
    ``alpha_bar_curve`` (the schedule's alpha_bar, [T]) for the inset plot.
    """
    x0, noise = _image(x0), _image(noise)
    if x0.shape != noise.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, x0 {tuple(x0.shape)}")
    t = int(t)
    if not 0 <= t < schedule.T:
        raise ValueError(f"t must be in 0..{schedule.T - 1}, got {t}")
    x_t = schedule.q_sample(x0[None], torch.tensor([t]), noise[None])[0]
    ab = schedule.alpha_bar_at(t)
    return {"t": t, "x0": x0, "noise": noise, "x_t": x_t, "alpha_bar": ab,
            "signal": ab**0.5, "noise_scale": (1.0 - ab) ** 0.5,
            "alpha_bar_curve": schedule.alpha_bar}


def forward_figure(frame: dict):
    """x_0, eps and x_t side by side, and alpha_bar over t with the current t marked.
    The figure title names t and the mixing weights."""
    fig, axes = plt.subplots(1, 4, figsize=FORWARD_FIGSIZE, dpi=DPI,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.35]})
    panels = (("clean x_0", frame["x0"], (-1, 1)), ("noise eps", frame["noise"], (-3, 3)),
              (f"x_t at t = {frame['t']}", frame["x_t"], (-1, 1)))  # x_0's grey scale
    for ax, (title, img, (lo, hi)) in zip(axes, panels, strict=False):
        ax.imshow(_image(img)[0].numpy(), vmin=lo, vmax=hi, **GREY)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    curve = np.asarray(frame["alpha_bar_curve"], dtype=np.float64)
    ax = axes[3]
    ax.plot(np.arange(len(curve)), curve, color="C0", lw=1.5)
    ax.plot([frame["t"]], [frame["alpha_bar"]], "o", color="C3", ms=7, clip_on=False)
    ax.axvline(frame["t"], color="C3", lw=0.8, ls="--")
    ax.set(xlim=(0, len(curve) - 1), ylim=(-0.03, 1.03), xlabel="t",
           title=f"alpha_bar_t = {frame['alpha_bar']:.4f}")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    fig.suptitle(f"t = {frame['t']}:  x_t = {frame['signal']:.3f} x_0 + "
                 f"{frame['noise_scale']:.3f} eps", fontsize=12)
    fig.tight_layout()
    return fig


def forward_slider(x0: Tensor, noise: Tensor, schedule: NoiseSchedule, *,
                   t: int | None = None, step: int = 1):
    """A t slider (0..T-1) redrawing :func:`forward_figure` of :func:`forward_frame`."""
    start = schedule.T // 4 if t is None else t

    def draw(t: int):
        return _show(forward_figure(forward_frame(x0, noise, schedule, t)))

    from ipywidgets import interactive

    return interactive(draw, t=_int_slider("t", start, 0, schedule.T - 1, step))


# ---------------------------------------------------------------------------- reverse process
def reverse_frame(result: SampleResult, k: int, *, index: int = 0) -> dict:
    """Record ``k`` of a sampling chain (``sample(..., return_intermediates=True)``): the x_t fed
    to the network at ``result.timesteps[k]`` and its predicted x0, for image ``index``.

    Returns a dict: ``k``, ``num_records`` (K), ``t`` (int; -1 for the final image),
    ``x_t`` and ``x0_pred`` ([1, H, W] CPU tensors, views of the stored chain).
    """
    num = len(result.timesteps)
    k = int(k)
    if not 0 <= k < num:
        raise ValueError(f"k must be in 0..{num - 1} (the chain has {num} records), got {k}")
    if not 0 <= index < result.xs.shape[1]:
        raise ValueError(f"index must be in 0..{result.xs.shape[1] - 1}, got {index}")
    return {"k": k, "num_records": num, "t": int(result.timesteps[k]),
            "x_t": result.xs[k, index], "x0_pred": result.x0s[k, index]}


def reverse_figure(frame: dict):
    """x_t (left) and the network's predicted x0 (right); the title names the step and t."""
    fig, axes = plt.subplots(1, 2, figsize=REVERSE_FIGSIZE, dpi=DPI)
    final = frame["t"] < 0
    left = "final image x_0" if final else f"x_t (t = {frame['t']})"
    right = "final image x_0" if final else "predicted x_0"
    axes[0].imshow(to_display(frame["x_t"]), vmin=0, vmax=1, **GREY)  # [-1, 1], clipped
    axes[1].imshow(to_display(frame["x0_pred"]), vmin=0, vmax=1, **GREY)
    for ax, title in zip(axes, (left, right), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    when = "final image (t = -1, clean)" if final else f"t = {frame['t']}"
    fig.suptitle(f"reverse step {frame['k']} of {frame['num_records'] - 1}: {when}", fontsize=12)
    fig.tight_layout()
    return fig


def reverse_slider(result: SampleResult, *, index: int = 0, k: int = 0):
    """A slider over the records of a sampling chain, redrawing :func:`reverse_figure`."""

    def draw(step: int):
        return _show(reverse_figure(reverse_frame(result, step, index=index)))

    from ipywidgets import interactive

    return interactive(draw, step=_int_slider("reverse step", k, 0, len(result.timesteps) - 1))


# ---------------------------------------------------------------------------- data
def _find(dataset, case: int, slice_: int) -> int:
    for i, (c, s, *_rest) in enumerate(dataset.items):
        if c == case and s == slice_:
            return i
    cases = dataset.case_ids
    shown = ", ".join(str(c) for c in cases[:10]) + (" ..." if len(cases) > 10 else "")
    raise ValueError(f"case {case} slice {slice_} is not in this dataset (cases: {shown})")


def slice_frame(dataset, case: int, slice_: int) -> dict:
    """Slice ``slice_`` of case ``case`` of an :class:`~oasis_lib.data.OASISDataset`, untouched
    by its transform (no random flip): ``dataset.raw`` mapped to [-1, 1] as the dataset does.

    Returns a dict: ``case``, ``slice``, ``index`` (position in the dataset), ``image``
    ([1, H, W] float in [-1, 1]), ``mask`` ([H, W] long classes 0..3, or None).
    """
    index = _find(dataset, int(case), int(slice_))
    image, mask = dataset.raw(index)
    image = image.float() / 127.5 - 1.0
    return {"case": int(case), "slice": int(slice_), "index": index, "image": image,
            "mask": None if mask is None else mask.long()}


def slice_figure(frame: dict):
    """The slice (left) and the slice with its tissue mask overlaid (right)."""
    fig, axes = plt.subplots(1, 2, figsize=SLICE_FIGSIZE, dpi=DPI)
    img = to_display(frame["image"])
    for ax in axes:
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    axes[0].set_title("image", fontsize=10)
    if frame["mask"] is not None:
        axes[1].imshow(frame["mask"].numpy(), cmap=TISSUE_CMAP, vmin=0, vmax=3,
                       interpolation="nearest")
        axes[1].set_title("with tissue mask", fontsize=10)
        tissue_legend(fig)
    fig.suptitle(f"case {frame['case']:03d}, slice {frame['slice']}", fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def slice_slider(dataset, *, case: int | None = None, slice_: int | None = None):
    """Two sliders, case (over ``dataset.case_ids``) and slice (0..31), redrawing
    :func:`slice_figure`."""
    from ipywidgets import Layout, SelectionSlider, interactive

    cases = list(dataset.case_ids)
    slices = sorted({s for _, s, *_rest in dataset.items})
    case_w = SelectionSlider(options=cases, value=cases[0] if case is None else case,
                             description="case", continuous_update=False,
                             layout=Layout(width="60%"), style={"description_width": "initial"})
    mid = slices[len(slices) // 2] if slice_ is None else slice_

    def draw(case: int, slice_index: int):
        return _show(slice_figure(slice_frame(dataset, case, slice_index)))

    return interactive(draw, case=case_w,
                       slice_index=_int_slider("slice", mid, slices[0], slices[-1]))
