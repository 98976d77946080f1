"""Figures and a slider for editing real slices (notebook 10), in the layers of
:mod:`oasis_lib.viz.widgets`: a pure *frame* function, a fixed-size *figure*, a one-line
*slider*.

* :func:`sdedit_frame` / :func:`sdedit_figure` / :func:`sdedit_slider`: SDEdit
  (:func:`~oasis_lib.diffusion.editing.sdedit`) of one slice from the starting level t0, always
  from the same noise, optionally towards a condition (e.g. an edited mask);
* :func:`inversion_frame` / :func:`inversion_figure`: DDIM inversion of a slice to x_T and its
  decoding back (:func:`~oasis_lib.diffusion.editing.ddim_invert`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..diffusion.editing import ddim_invert, sdedit, sdedit_noise
from ..evaluation.reference import segment
from ..evaluation.tissue import dice_per_class
from ..models.conditioning import Condition
from .style import DPI, GREY, to_display
from .widgets import _show

__all__ = ["inversion_figure", "inversion_frame", "sdedit_figure", "sdedit_frame",
           "sdedit_slider"]

PANEL = 1.9  # inches per image panel


def _rms(a: Tensor, b: Tensor) -> Tensor:
    """Root-mean-square difference of each image pair, float [n] (images in [-1, 1])."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1).sqrt()


@torch.no_grad()
def sdedit_frame(pipe, image: Tensor, t0: float, *, n: int = 2, steps: int = 20,
                 seed: int = 0, condition: Condition | None = None, scale: float | None = None,
                 segmenter=None, unchanged: Tensor | None = None) -> dict:
    """SDEdit of one slice ``image`` [1, H, W] (pixel model) from ``t0``, ``n`` times, through
    ``pipe.denoiser`` (null condition unless ``condition`` and ``scale`` are given), with
    :func:`~oasis_lib.diffusion.editing.sdedit`'s defaults: eta = 1 and static clipping.

    ``unchanged`` (bool [H, W] or None): pixels where the RMS is also measured on its own, e.g.
    where an edited mask equals the slice's own, so that the intended edit does not count.

    Returns a dict: ``t0``, ``steps``, ``image``, ``start`` (x_{t0} of the first edit, CPU
    [1, H, W]), ``edited`` (CPU [n, 1, H, W]), ``rms`` (float [n]: RMS difference to the
    input), ``rms_unchanged`` (float [n], the same over the ``unchanged`` pixels; None without
    them), ``mask`` (the condition's mask or None) and ``dice`` (float [n] of the edits'
    segmentations against that mask, with a segmenter and a mask; else None).
    """
    if pipe.autoencoder is not None:
        raise ValueError("sdedit_frame shows pixel-space models; this pipeline is latent")
    net = pipe.denoiser(condition=condition, guidance_scale=scale, batch_size=n, null_ok=True)
    x = image.reshape(1, *image.shape[-3:]).expand(n, -1, -1, -1).to(pipe.device)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(tuple(x.shape), generator=g)
    edited = sdedit(net, pipe.schedule, x, t0, steps=steps, generator=g, noise=noise,
                    prediction_type=pipe.prediction_type).cpu()
    start = sdedit_noise(pipe.schedule, x[:1].cpu(), t0, noise[:1])
    mask = None if condition is None or condition.mask is None else condition.mask[0].cpu()
    dice = None
    if segmenter is not None and mask is not None:
        seg = segment(segmenter, edited)["masks"]
        dice = torch.stack([dice_per_class(s, mask)[1:].mean() for s in seg])
    rms_unchanged = None
    if unchanged is not None:
        keep = unchanged.bool().cpu().expand_as(edited[0, 0])
        rms_unchanged = _rms(edited[:, :, keep], x.cpu()[:, :, keep])
    return {"t0": float(t0), "steps": steps, "image": x[0].cpu(), "start": start[0],
            "edited": edited, "rms": _rms(edited, x.cpu()), "rms_unchanged": rms_unchanged,
            "mask": mask, "dice": dice}


def sdedit_figure(frames: list[dict] | dict):
    """One row per frame: the input slice, x_{t0}, then the edits titled with their RMS
    difference to the input (in brackets: over the unchanged pixels, if measured) and their
    Dice against the condition's mask (if measured)."""
    frames = [frames] if isinstance(frames, dict) else list(frames)
    rows, cols = len(frames), 2 + len(frames[0]["edited"])
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL * cols, (PANEL + 0.45) * rows + 0.4),
                             dpi=DPI, squeeze=False)
    for r, f in enumerate(frames):
        axes[r, 0].imshow(to_display(f["image"]), vmin=0, vmax=1, **GREY)
        axes[r, 0].set_title("input slice", fontsize=9)
        axes[r, 1].imshow(to_display(f["start"]), vmin=0, vmax=1, **GREY)
        axes[r, 1].set_title(f"noised to t0 = {f['t0']:.2f}", fontsize=9)
        for i, img in enumerate(f["edited"]):
            dice = "" if f["dice"] is None else f"\nDice {float(f['dice'][i]):.2f}"
            kept = f.get("rms_unchanged")
            kept = "" if kept is None else f" ({float(kept[i]):.2f})"
            axes[r, 2 + i].imshow(to_display(img), vmin=0, vmax=1, **GREY)
            axes[r, 2 + i].set_title(f"edit {i + 1}: RMS {float(f['rms'][i]):.2f}{kept}{dice}",
                                     fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    title = f"SDEdit, t0 = {frames[0]['t0']:.2f}" if rows == 1 else \
        "SDEdit from " + ", ".join(f"t0 = {f['t0']:.2f}" for f in frames)
    fig.suptitle(f"{title} ({frames[0]['steps']} DDIM steps at most)", fontsize=11)
    fig.tight_layout()
    return fig


def sdedit_slider(pipe, image: Tensor, *, t0: float = 0.5, **kw):
    """A slider over t0 in 0..1 (step 0.1), redrawing :func:`sdedit_figure`."""
    from ipywidgets import FloatSlider, Layout, interactive

    def draw(t0: float):
        return _show(sdedit_figure(sdedit_frame(pipe, image, t0, **kw)))

    slider = FloatSlider(value=float(t0), min=0.0, max=1.0, step=0.1, description="t0",
                         continuous_update=False, readout_format=".1f",
                         layout=Layout(width="60%"), style={"description_width": "initial"})
    return interactive(draw, t0=slider)


@torch.no_grad()
def inversion_frame(pipe, image: Tensor, steps: int, *, condition: Condition | None = None,
                    decode_condition: Condition | None = None) -> dict:
    """DDIM inversion of ``image`` [1, H, W] with ``steps`` steps under ``condition`` (one
    pass, s = 1; null condition when None), then DDIM decoding of that x_T with the same steps
    and no clipping, under ``decode_condition`` (default: the same condition).

    Returns a dict: ``steps``, ``image``, ``x_T``, ``decoded`` (CPU [1, H, W]) and ``rms``
    (float: RMS difference between ``decoded``, clamped to [-1, 1], and the image).
    """
    if pipe.autoencoder is not None:
        raise ValueError("inversion_frame shows pixel-space models; this pipeline is latent")
    x = image.reshape(1, *image.shape[-3:]).to(pipe.device)
    net = pipe.denoiser(condition=condition, batch_size=1, null_ok=True)
    x_T = ddim_invert(net, pipe.schedule, x, steps=steps, prediction_type=pipe.prediction_type)
    back = condition if decode_condition is None else decode_condition
    if back is None and pipe.conditional:
        back = Condition()
    decoded = pipe.sample(1, sampler="ddim", steps=steps, x_T=x_T, clip_x0=False,
                          condition=back, progress=False).clamp(-1, 1).cpu()
    return {"steps": int(steps), "image": x[0].cpu(), "x_T": x_T[0].cpu(),
            "decoded": decoded[0], "rms": float(_rms(decoded, x.cpu())[0])}


def inversion_figure(frames: list[dict] | dict, *, labels: list[str] | None = None):
    """One row per frame: the input slice, its x_T (grey scale of +-3), the decoded slice and
    the absolute difference |decoded - input| (0 to 0.5 of the [-1, 1] range, black to white).
    ``labels`` name the rows (default: the step counts)."""
    frames = [frames] if isinstance(frames, dict) else list(frames)
    labels = labels or [f"{f['steps']} steps" for f in frames]
    fig, axes = plt.subplots(len(frames), 4, figsize=(PANEL * 4, (PANEL + 0.45) * len(frames)
                                                      + 0.4), dpi=DPI, squeeze=False)
    for r, (f, label) in enumerate(zip(frames, labels, strict=True)):
        axes[r, 0].imshow(to_display(f["image"]), vmin=0, vmax=1, **GREY)
        axes[r, 0].set_title(f"input ({label})", fontsize=9)
        axes[r, 1].imshow(f["x_T"][0].numpy(), vmin=-3, vmax=3, **GREY)
        axes[r, 1].set_title(f"x_T, std {float(f['x_T'].std()):.2f}", fontsize=9)
        axes[r, 2].imshow(to_display(f["decoded"]), vmin=0, vmax=1, **GREY)
        axes[r, 2].set_title(f"decoded, RMS {f['rms']:.3f}", fontsize=9)
        axes[r, 3].imshow((f["decoded"] - f["image"]).abs()[0].numpy(), vmin=0, vmax=0.5,
                          **GREY)
        axes[r, 3].set_title("|decoded - input|", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle("DDIM inversion: slice -> x_T -> slice", fontsize=11)
    fig.tight_layout()
    return fig
