"""Figures and sliders of latent diffusion (notebook 08), in the three layers of
:mod:`oasis_lib.viz.widgets`: a pure *frame* function, a fixed-size *figure*, a one-line *slider*.

* :func:`reconstruction_slider`: a validate slice, its autoencoder reconstruction and their
  difference, with PSNR and SSIM inside the brain, over the slices;
* :func:`latent_channels_figure`: what the ``c`` channels of a latent look like next to the slice;
* :func:`latent_reverse_slider`: a latent sampling chain, with the noisy latent (one channel) and
  the network's x0 prediction *decoded to 256x256* at each record of the chain;
* :func:`decoder_figure` and :func:`decoder_table` (notebook 11): the same latents through the
  autoencoder's decoder and a light decoder distilled from it, and
  ``benchmarks/bench_decoder.py``'s numbers.

Images are ``[1, H, W]`` tensors in [-1, 1]; latents are in model space (``scale_factor * z``:
one factor for all channels, so the latent as a whole has unit spread, each channel its own),
shown on [-3, 3] so that their spread is visible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..diffusion.sampling import SampleResult
from ..evaluation.reconstruction import reconstruction_metrics
from .style import DPI, GREY, to_display
from .widgets import _int_slider, _show

__all__ = ["decode_chain", "decoder_figure", "decoder_table", "latent_channels_figure",
           "latent_reverse_figure", "latent_reverse_frame", "latent_reverse_slider", "reconstruct",
           "reconstruction_figure", "reconstruction_frame", "reconstruction_slider"]

LATENT_RANGE = 3.0  # unit-variance latents are drawn on [-3, 3]


@torch.no_grad()
def reconstruct(autoencoder, images: Tensor, *, batch_size: int = 16) -> Tensor:
    """``D(mean of E(x))`` for ``images`` [B, 1, H, W] in [-1, 1], clamped to [-1, 1], on CPU.

    The posterior mean, not a sample: the deterministic reconstruction that latent caching and
    the pipeline's :meth:`~oasis_lib.diffusion.pipeline.DiffusionPipeline.encode` use."""
    device = next(autoencoder.parameters()).device
    out = [autoencoder.decode(autoencoder.encode(x.to(device)).mode()).clamp(-1, 1).cpu()
           for x in images.split(batch_size)]
    return torch.cat(out)


# ------------------------------------------------------------------ reconstruction
def reconstruction_frame(originals: Tensor, recons: Tensor, masks: Tensor, i: int) -> dict:
    """Slice ``i``: ``original``, ``recon``, ``difference`` (recon - original, [1, H, W]) and
    the ``psnr``/``ssim`` of this reconstruction inside the brain (``masks`` > 0)."""
    n = len(originals)
    if not 0 <= int(i) < n:
        raise ValueError(f"i must be in 0..{n - 1}, got {i}")
    i = int(i)
    m = reconstruction_metrics(originals[i:i + 1], recons[i:i + 1], brain_mask=masks[i:i + 1])
    return {"i": i, "n": n, "original": originals[i], "recon": recons[i],
            "difference": recons[i] - originals[i], "psnr": m["psnr"], "ssim": m["ssim"]}


def reconstruction_figure(frame: dict, *, diff_range: float = 0.25):
    """Original | reconstruction | difference (red brighter, blue darker, on +-``diff_range`` of
    the [-1, 1] intensity scale); the title numbers the slice from 1."""
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 4.0), dpi=DPI)
    axes[0].imshow(to_display(frame["original"]), vmin=0, vmax=1, **GREY)
    axes[1].imshow(to_display(frame["recon"]), vmin=0, vmax=1, **GREY)
    im = axes[2].imshow(frame["difference"][0].numpy(), cmap="RdBu_r", vmin=-diff_range,
                        vmax=diff_range, interpolation="nearest")
    titles = ("original", "reconstruction D(μ(x))",
              f"difference (±{diff_range:g} on the [-1, 1] scale)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    fig.suptitle(f"validate slice {frame['i'] + 1} of {frame['n']}: PSNR {frame['psnr']:.1f} dB, "
                 f"SSIM {frame['ssim']:.3f} inside the brain", fontsize=12)
    return fig


def reconstruction_slider(originals: Tensor, recons: Tensor, masks: Tensor, *, i: int = 0):
    """A slider over the slices, redrawing :func:`reconstruction_figure`."""

    def draw(slice_index: int):
        return _show(reconstruction_figure(reconstruction_frame(originals, recons, masks,
                                                                slice_index)))

    from ipywidgets import interactive

    return interactive(draw, slice_index=_int_slider("slice", i, 0, len(originals) - 1))


# ------------------------------------------------------------------ latent channels
def latent_channels_figure(image: Tensor, latent: Tensor, *, title: str | None = None):
    """The slice ``image`` [1, H, W] next to each channel of its ``latent`` [c, h, w] (model
    space), each titled with its mean and standard deviation."""
    c = latent.shape[0]
    fig, axes = plt.subplots(1, c + 1, figsize=(2.6 * (c + 1), 3.0), dpi=DPI)
    axes[0].imshow(to_display(image), vmin=0, vmax=1, **GREY)
    axes[0].set_title(f"slice {tuple(image.shape[-2:])}", fontsize=9)
    for k in range(c):
        ch = latent[k].detach().float().cpu()
        axes[k + 1].imshow(ch.numpy(), cmap="coolwarm", vmin=-LATENT_RANGE, vmax=LATENT_RANGE,
                           interpolation="nearest")
        axes[k + 1].set_title(f"z[{k}] {tuple(ch.shape)}\nmean {ch.mean():.2f}, "
                              f"std {ch.std():.2f}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.93))  # keep the two-line panel titles under it
    else:
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------ reverse chain
@torch.no_grad()
def decode_chain(pipeline, result: SampleResult, *, index: int = 0) -> Tensor:
    """The x0 predictions of image ``index`` of a latent chain, decoded: [K, 1, H, W] on CPU.

    ``result`` comes from ``pipeline.sample(..., return_intermediates=True)``; its ``x0s`` are
    latents in model space, which :meth:`DiffusionPipeline.decode` brings back to pixels."""
    if pipeline.autoencoder is None:
        raise ValueError("decode_chain needs a latent pipeline (pipeline.autoencoder is None)")
    z = result.x0s[:, index].to(pipeline.device)
    return torch.cat([pipeline.decode(b).clamp(-1, 1).cpu() for b in z.split(8)])


def latent_reverse_frame(result: SampleResult, decoded: Tensor, k: int, *, index: int = 0,
                         channel: int = 0) -> dict:
    """Record ``k``: the latent x_t (one ``channel``), the decoded x0 prediction, and t."""
    num = len(result.timesteps)
    if not 0 <= int(k) < num:
        raise ValueError(f"k must be in 0..{num - 1} (the chain has {num} records), got {k}")
    k = int(k)
    return {"k": k, "num_records": num, "t": int(result.timesteps[k]), "channel": channel,
            "z_t": result.xs[k, index, channel], "x0_decoded": decoded[k]}


def latent_reverse_figure(frame: dict):
    """Latent x_t (left, one channel, 64x64) and the decoded x0 prediction (right, 256x256)."""
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.2), dpi=DPI)
    final = frame["t"] < 0
    axes[0].imshow(frame["z_t"].numpy(), cmap="coolwarm", vmin=-LATENT_RANGE,
                   vmax=LATENT_RANGE, interpolation="nearest")
    axes[1].imshow(to_display(frame["x0_decoded"]), vmin=0, vmax=1, **GREY)
    size = tuple(frame["z_t"].shape)
    axes[0].set_title(f"latent {'z_0' if final else 'z_t'}, channel {frame['channel']} {size}",
                      fontsize=10)
    axes[1].set_title("decoded final slice" if final else "decoded prediction D(ẑ_0)",
                      fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    when = "clean (t = -1)" if final else f"t = {frame['t']}"
    last = frame["num_records"] - 1
    fig.suptitle(f"record {frame['k']} of 0-{last} ({last} = final sample): {when}", fontsize=12)
    fig.tight_layout()
    return fig


def latent_reverse_slider(result: SampleResult, decoded: Tensor, *, index: int = 0,
                          k: int = 0, channel: int = 0) -> Any:
    """A slider over the records of a latent chain, redrawing :func:`latent_reverse_figure`
    with latent ``channel`` on the left."""

    def draw(step: int):
        return _show(latent_reverse_figure(latent_reverse_frame(result, decoded, step,
                                                                index=index, channel=channel)))

    from ipywidgets import interactive

    return interactive(draw, step=_int_slider("record", k, 0, len(result.timesteps) - 1))


def decoder_figure(full: Tensor, light: Tensor, *, gain: float = 4.0):
    """Three rows over the same latents: the autoencoder's decoder, the light decoder, and
    ``gain`` x their absolute difference (black = equal); one column per latent. Images
    ``[N, 1, H, W]`` in [-1, 1]."""
    n = len(full)
    rows = (("full decoder", [to_display(x) for x in full]),
            ("light decoder", [to_display(x) for x in light]),
            (f"|difference| x {gain:g}",
             [(gain * (a - b).abs()[0] / 2).clamp(0, 1).numpy() for a, b in zip(full, light,
                                                                                 strict=True)]))
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n, 1.9 * 3 + 0.3), dpi=DPI, squeeze=False)
    for r, (name, images) in enumerate(rows):
        for j, image in enumerate(images):
            axes[r, j].imshow(image, vmin=0, vmax=1, **GREY)
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=10)
    fig.tight_layout()
    return fig


def decoder_table(path: str | Path) -> str:
    """``benchmarks/bench_decoder.py``'s JSON as text: per decoder its parameters, GFLOP per
    slice and seconds to decode 16 slices (fp32, bf16 where measured); the seconds of whole
    samples of 16 (each decoder, NCHW and channels_last) when measured; then PSNR and SSIM
    inside the brain of each comparison."""
    data = json.loads(Path(path).read_text())
    lines = ["decoder | parameters | GFLOP / slice | s / 16 fp32 | s / 16 bf16"]
    for name, e in data["cost"].items():
        bf16 = f"{e['seconds_bf16']:.2f}" if "seconds_bf16" in e else "-"
        lines.append(f"{name:<7} | {e['params']:>10,} | {e['gflop_per_slice']:13.2f} | "
                     f"{e['seconds_fp32']:11.2f} | {bf16:>11}")
    if data.get("whole_samples"):
        lines += ["", "whole sample of 16  | layout        | s fp32 | s bf16"]
        for r in data["whole_samples"]:
            bf16 = f"{r['seconds_bf16']:.2f}" if "seconds_bf16" in r else "-"
            lines.append(f"{r['decoder'] + ' decoder':<19} | {r['layout']:<13} | "
                         f"{r['seconds_fp32']:6.2f} | {bf16:>6}")
    lines += ["", "images vs reference     | PSNR brain (dB) | SSIM brain"]
    for name, r in data["fidelity"].items():
        lines.append(f"{name:<23} | {r['psnr_brain']:15.2f} | {r['ssim_brain']:.4f}")
    return "\n".join(lines)
