"""Sliders of conditional generation (notebooks 09 and 10), in the three layers of
:mod:`oasis_lib.viz.widgets`: a pure *frame* function (it samples through the pipeline, from a
fixed noise ``x_T``, so only the slider value changes between redraws), a fixed-size *figure*
whose title names the value, and a one-line *slider* (``continuous_update=False``).

* :func:`guidance_slider`: the guidance scale s (s = 1 + w, 0 = unconditional, 1 = conditional);
* :func:`slice_level_slider`: the slice index 0..31 (with a case's mask at that level, or alone);
* :func:`mask_edit_slider`: the CSF of a mask grown or shrunk by k pixels
  (:func:`~oasis_lib.data.mask_edit.edit_csf`), as atrophy does;
* :func:`inpaint_slider`: RePaint's resample count on a block of a real slice;

and two static views: :func:`threshold_figure` (one row per x0 rule at a high guidance scale:
the static clip, dynamic thresholding, guidance rescale) and :func:`sweep_table` (the guidance
benchmark's table without its machine-dependent timing column).

With a ``segmenter`` the frames also hold the segmenter's masks of the generated slices and
each slice's Dice against the conditioning mask (mean over CSF, grey and white matter).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..data.layout import SLICES_PER_CASE
from ..data.mask_edit import EDIT_SCOPES, edit_csf
from ..diffusion.inpainting import border_step
from ..evaluation.reference import segment
from ..evaluation.tissue import dice_per_class, tissue_fractions
from ..models.conditioning import Condition
from .style import DPI, GREY, LABEL_CMAP, tissue_legend, to_display
from .widgets import _int_slider, _show

__all__ = ["condition_frame", "conditional_figure", "guidance_frame", "guidance_slider",
           "inpaint_figure", "inpaint_frame", "inpaint_slider", "mask_edit_frame",
           "mask_edit_slider", "slice_level_frame", "slice_level_slider", "sweep_table",
           "threshold_figure"]

PANEL = 1.9  # inches per image panel


@torch.no_grad()
def condition_frame(pipe, x_T: Tensor, condition: Condition, *, scale: float = 1.0,
                    steps: int = 20, sampler: str = "ddim", segmenter=None,
                    **sample_kw) -> dict:
    """Samples of ``pipe`` from the fixed noise ``x_T`` [n, C, h, w] under ``condition`` (a
    batch of 1, used for all n) at guidance scale ``scale``; ``sample_kw`` go to
    ``pipe.sample`` (e.g. ``clip_x0=DynamicThreshold(0.995)``, ``guidance_rescale=0.7``).

    Returns a dict: ``images`` (CPU [n, 1, H, W]), ``mask`` ([H, W] long or None), ``slice``
    (int or None), ``scale``; with a segmenter also ``segmentations`` ([n, H, W]) and ``dice``
    (float [n]; None without a mask), else those two are None.
    """
    images = pipe.sample(len(x_T), sampler=sampler, steps=steps, x_T=x_T, condition=condition,
                         guidance_scale=scale, progress=False, **sample_kw).cpu()
    mask = None if condition.mask is None else condition.mask[0].cpu()
    slice_ = None if condition.slice_index is None else int(condition.slice_index[0])
    frame = {"images": images, "mask": mask, "slice": slice_, "scale": float(scale),
             "segmentations": None, "dice": None}
    if segmenter is not None:
        seg = segment(segmenter, images)["masks"]
        frame["segmentations"] = seg
        if mask is not None:
            frame["dice"] = torch.stack([dice_per_class(s, mask)[1:].mean() for s in seg])
    return frame


def conditional_figure(frame: dict, *, title: str, masks: dict | None = None):
    """Conditioning mask(s) (left columns; ``masks`` = ``{label: [H, W]}``, default the frame's
    mask) next to the generated slices, with a second row of their segmentations (titled with
    their Dice) when the frame has them. Fixed size for a given number of images."""
    masks = {"conditioning mask": frame["mask"]} if masks is None else masks
    masks = {k: v for k, v in masks.items() if v is not None}
    images, seg = frame["images"], frame["segmentations"]
    rows, cols = (2 if seg is not None else 1), len(masks) + len(images)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL * cols, (PANEL + 0.35) * rows + 0.9),
                             dpi=DPI, squeeze=False)
    for j, (label, m) in enumerate(masks.items()):
        axes[0, j].imshow(m.numpy(), cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
        axes[0, j].set_title(label, fontsize=9)
    for i, img in enumerate(images):
        ax = axes[0, len(masks) + i]
        ax.imshow(to_display(img), vmin=0, vmax=1, **GREY)
        ax.set_title(f"sample {i + 1}", fontsize=9)
        if seg is not None:
            ax = axes[1, len(masks) + i]
            ax.imshow(seg[i].numpy(), cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
            dice = "" if frame["dice"] is None else f": Dice {float(frame['dice'][i]):.2f}"
            ax.set_title(f"segmented{dice}", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    tissue_legend(fig)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1), h_pad=1.2)
    return fig


def _float_slider(description: str, value: float, lo: float, hi: float, step: float):
    from ipywidgets import FloatSlider, Layout

    return FloatSlider(value=float(value), min=lo, max=hi, step=step, description=description,
                       continuous_update=False, readout_format=".1f", layout=Layout(width="60%"),
                       style={"description_width": "initial"})


def _mean_dice(frame: dict) -> str:
    return "" if frame["dice"] is None else f", mean Dice {float(frame['dice'].mean()):.2f}"


# ------------------------------------------------------------------ guidance scale
def guidance_frame(pipe, x_T: Tensor, condition: Condition, scale: float, **kw) -> dict:
    """:func:`condition_frame` at guidance scale ``scale`` (s = 1 + w; >= 0)."""
    if scale < 0:
        raise ValueError(f"the guidance scale must be >= 0 (s = 1 + w), got {scale!r}")
    return condition_frame(pipe, x_T, condition, scale=scale, **kw)


def guidance_figure(frame: dict):
    s = frame["scale"]
    kind = {0.0: "unconditional", 1.0: "conditional"}.get(s, "guided")
    return conditional_figure(frame, title=f"guidance scale s = {s:.1f} (w = {s - 1:.1f}, "
                                           f"{kind}){_mean_dice(frame)}")


def guidance_slider(pipe, x_T: Tensor, condition: Condition, *, scale: float = 1.0,
                    max_scale: float = 5.0, **kw):
    """A slider over s in 0..``max_scale`` (step 0.5), redrawing :func:`guidance_figure`."""
    from ipywidgets import interactive

    def draw(s: float):
        return _show(guidance_figure(guidance_frame(pipe, x_T, condition, s, **kw)))

    return interactive(draw, s=_float_slider("guidance scale s", scale, 0.0, max_scale, 0.5))


def threshold_figure(frames: dict[str, dict]):
    """One row per frame (``{row label: condition_frame}``, all from the same noise; the label
    names the rule and the scale): the conditioning mask, then the samples titled with their
    Dice against it."""
    rows, first = len(frames), next(iter(frames.values()))
    cols = 1 + len(first["images"])
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL * cols, (PANEL + 0.35) * rows + 0.6),
                             dpi=DPI, squeeze=False)
    for r, (label, frame) in enumerate(frames.items()):
        axes[r, 0].imshow(frame["mask"].numpy(), cmap=LABEL_CMAP, vmin=0, vmax=3,
                          interpolation="nearest")
        axes[r, 0].set_title("conditioning mask", fontsize=9)
        axes[r, 1].text(-0.08, 0.5, label, transform=axes[r, 1].transAxes, rotation=90,
                        ha="right", va="center", fontsize=9)
        for i, img in enumerate(frame["images"]):
            axes[r, 1 + i].imshow(to_display(img), vmin=0, vmax=1, **GREY)
            dice = "" if frame["dice"] is None else f", Dice {float(frame['dice'][i]):.2f}"
            axes[r, 1 + i].set_title(f"sample {i + 1}{dice}", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle("rules for the predicted x0 (rows), from the same noise", fontsize=11)
    fig.tight_layout()
    return fig


def sweep_table(markdown: str, *, drop: tuple[str, ...] = ("s/img",)) -> str:
    """The table of a benchmark's markdown result (its lines that start with ``|``) without the
    columns named in ``drop`` (by default the seconds per image, which depend on the machine's
    load when it ran, not on the method)."""
    rows = [ln.strip() for ln in markdown.splitlines() if ln.strip().startswith("|")]
    if not rows:
        raise ValueError("no markdown table in the text")
    cells = [ln.strip("|").split("|") for ln in rows]
    keep = [j for j, head in enumerate(cells[0]) if head.strip() not in drop]
    return "\n".join("|" + "|".join(row[j] for j in keep) + "|" for row in cells)


# ------------------------------------------------------------------ slice level
def slice_level_frame(pipe, x_T: Tensor, slice_index: int, *, masks: Tensor | None = None,
                      **kw) -> dict:
    """Samples conditioned on slice ``slice_index`` (0..31) and, when ``masks`` (long
    [32, H, W], one case's masks by slice) is given, on that slice's mask too."""
    if not 0 <= int(slice_index) < SLICES_PER_CASE:
        raise ValueError(f"slice_index must be in 0..{SLICES_PER_CASE - 1}, got {slice_index!r}")
    if masks is not None and len(masks) != SLICES_PER_CASE:
        raise ValueError(f"masks must hold the {SLICES_PER_CASE} slices of a case, "
                         f"got {len(masks)}")
    i = int(slice_index)
    mask = None if masks is None else masks[i:i + 1].long()
    return condition_frame(pipe, x_T, Condition(mask=mask, slice_index=torch.tensor([i])), **kw)


def slice_level_figure(frame: dict):
    what = "mask and slice" if frame["mask"] is not None else "slice only (null mask)"
    return conditional_figure(frame, title=f"slice {frame['slice']} of 0..{SLICES_PER_CASE - 1} "
                                           f"({what}){_mean_dice(frame)}")


def slice_level_slider(pipe, x_T: Tensor, *, masks: Tensor | None = None, slice_index: int = 16,
                       **kw):
    """A slider over the slice index 0..31, redrawing :func:`slice_level_figure`."""
    from ipywidgets import interactive

    def draw(slice_level: int):
        return _show(slice_level_figure(slice_level_frame(pipe, x_T, slice_level, masks=masks,
                                                          **kw)))

    return interactive(draw, slice_level=_int_slider("slice", slice_index, 0, SLICES_PER_CASE - 1))


# ------------------------------------------------------------------ mask edit
def mask_edit_frame(pipe, x_T: Tensor, mask: Tensor, slice_index: int | None, k: int, *,
                    scope: str = "ventricles", **kw) -> dict:
    """Samples conditioned on ``mask`` ([H, W]) with its CSF grown (k > 0) or shrunk (k < 0) by
    |k| pixels (:func:`~oasis_lib.data.mask_edit.edit_csf`), plus ``slice_index`` (or None).

    Adds ``k``, ``scope``, ``original`` (the unedited mask), ``csf_mask`` (the CSF fraction of
    the brain in the edited mask) and ``csf_generated`` (the mean of the segmentations' CSF
    fractions; None without a segmenter) to the :func:`condition_frame` dict."""
    if scope not in EDIT_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {EDIT_SCOPES}")
    edited = edit_csf(mask, k, scope=scope)
    slices = None if slice_index is None else torch.tensor([int(slice_index)])
    frame = condition_frame(pipe, x_T, Condition(mask=edited[None], slice_index=slices), **kw)
    frame.update(k=int(k), scope=scope, original=mask.long().cpu(),
                 csf_mask=float(tissue_fractions(edited[None].cpu())[0, 0]),
                 csf_generated=None if frame["segmentations"] is None else
                 float(tissue_fractions(frame["segmentations"])[:, 0].mean()))
    return frame


def mask_edit_figure(frame: dict):
    k, what = frame["k"], "ventricles" if frame["scope"] == "ventricles" else "CSF"
    change = f"dilated by {k} px" if k > 0 else f"eroded by {-k} px" if k < 0 else "as drawn"
    seen = "" if frame["csf_generated"] is None else \
        f", {frame['csf_generated']:.0%} in the samples' segmentations"
    return conditional_figure(
        frame, masks={"validate mask": frame["original"], f"edited (k = {k})": frame["mask"]},
        title=f"{what} {change}: CSF {frame['csf_mask']:.0%} of the brain in the mask{seen}")


def mask_edit_slider(pipe, x_T: Tensor, mask: Tensor, slice_index: int | None = None, *,
                     k: int = 0, lo: int = -2, hi: int = 4, scope: str = "ventricles", **kw):
    """A slider over k in ``lo..hi`` pixels, redrawing :func:`mask_edit_figure`."""
    from ipywidgets import interactive

    def draw(k: int):
        return _show(mask_edit_figure(mask_edit_frame(pipe, x_T, mask, slice_index, k,
                                                      scope=scope, **kw)))

    return interactive(draw, k=_int_slider("CSF edit k (pixels)", k, lo, hi))


# ------------------------------------------------------------------ inpainting
def block_region(size: int, top: int, left: int, height: int, width: int) -> Tensor:
    """A [size, size] region of 0 (keep) with a block of 1 (regenerate)."""
    if not (0 <= top < top + height <= size and 0 <= left < left + width <= size):
        raise ValueError(f"the block {height}x{width} at ({top}, {left}) is not inside the "
                         f"{size}x{size} image")
    region = torch.zeros(size, size)
    region[top:top + height, left:left + width] = 1
    return region


@torch.no_grad()
def inpaint_frame(pipe, image: Tensor, region: Tensor, resample: int, *, n: int = 3,
                  steps: int = 20, jump_length: int = 5, seed: int = 0,
                  condition: Condition | None = None, scale: float | None = None) -> dict:
    """RePaint (``pipe.inpaint`` on ``steps`` respaced DDPM steps) of ``region`` ([H, W], 1 =
    regenerate) of one ``image`` ([1, H, W]), ``n`` times, with ``resample`` passes.

    Returns a dict: ``resample``, ``jump_length``, ``steps``, ``image``, ``region``,
    ``inpainted`` (CPU [n, 1, H, W]), and the border step (mean |difference| of the
    4-neighbour pixel pairs across the region's border; :func:`~oasis_lib.diffusion.
    inpainting.border_step`): ``border`` (float [n]) and ``border_real`` (of the image itself).
    """
    if int(resample) != resample or resample < 1:
        raise ValueError(f"resample must be a positive integer, got {resample!r}")
    x = image.reshape(1, *image.shape[-3:]).expand(n, -1, -1, -1).clone()
    out = pipe.inpaint(x, region, steps=steps, jump_length=jump_length, resample=int(resample),
                       generator=torch.Generator().manual_seed(seed), progress=False,
                       condition=condition, guidance_scale=scale).cpu()
    return {"resample": int(resample), "jump_length": jump_length, "steps": steps,
            "image": x[0].cpu(), "region": region.cpu(), "inpainted": out,
            "border": border_step(out, region), "border_real": float(border_step(x[:1], region))}


def inpaint_figure(frame: dict):
    """The slice with the region outlined, then the inpainted slices."""
    n = len(frame["inpainted"])
    fig, axes = plt.subplots(1, n + 1, figsize=(PANEL * (n + 1), PANEL + 0.8), dpi=DPI)
    axes[0].imshow(to_display(frame["image"]), vmin=0, vmax=1, **GREY)
    axes[0].contour(frame["region"].numpy(), levels=[0.5], colors="C3", linewidths=1.2)
    axes[0].set_title(f"real slice, border step {frame['border_real']:.2f}", fontsize=9)
    for i, img in enumerate(frame["inpainted"]):
        axes[i + 1].imshow(to_display(img), vmin=0, vmax=1, **GREY)
        axes[i + 1].contour(frame["region"].numpy(), levels=[0.5], colors="C3", linewidths=0.6,
                            alpha=0.5)
        axes[i + 1].set_title(f"inpainted {i + 1}: {float(frame['border'][i]):.2f}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"RePaint, resample = {frame['resample']} (jump {frame['jump_length']}, "
                 f"{frame['steps']} steps)", fontsize=11)
    fig.tight_layout()
    return fig


def inpaint_slider(pipe, image: Tensor, region: Tensor, *, resample: int = 1, hi: int = 8, **kw):
    """A slider over the resample count 1..``hi``, redrawing :func:`inpaint_figure`."""
    from ipywidgets import interactive

    def draw(resample: int):
        return _show(inpaint_figure(inpaint_frame(pipe, image, region, resample, **kw)))

    return interactive(draw, resample=_int_slider("resample", resample, 1, hi))
