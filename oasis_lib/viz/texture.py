"""Spectra of real slices and of their reconstructions (notebook 08): where the texture goes.

:func:`plot_radial_spectra` draws the radially averaged power spectrum
(:func:`~oasis_lib.evaluation.texture.radial_power_spectrum`, Durall et al. 2020) of several
image sets on one log scale, with a line at half the Nyquist frequency (0.25 cycles/pixel,
above which :func:`~oasis_lib.evaluation.texture.high_frequency_share` counts), and beside it
each set's spectrum over the first set's: a decoder that blurs falls below 1 at the right.
"""

from __future__ import annotations

import os

import numpy as np
from torch import Tensor

from ..evaluation.texture import HF_CUTOFF, high_frequency_share, radial_power_spectrum
from .style import figure, save_figure

__all__ = ["plot_radial_spectra"]


def plot_radial_spectra(images: dict[str, Tensor], brain_mask: Tensor | None = None, *,
                        bins: int | None = None, title: str | None = None,
                        save_to: str | os.PathLike | None = None):
    """Mean radial power spectra of each set in ``images`` (name -> ``[B, 1, H, W]`` in
    [-1, 1]), and their ratio to the first set (the real slices).

    ``brain_mask``: one mask ``[B, H, W]`` for every set (reconstructions share their slices'
    masks), or None (whole images). The legend gives each set's median high-frequency share
    (energy above 0.25 cycles/pixel). Returns the figure (closed and written to ``save_to`` if
    given)."""
    if not images:
        raise ValueError("images must name at least one set, e.g. {'real': x, 'recon': y}")
    fig, axes = figure(1, 2, figsize=(11.0, 4.0))
    ax, ax_ratio = axes[0]
    spectra = {}
    for name, x in images.items():
        freqs, power = radial_power_spectrum(x, brain_mask, bins=bins, average=True)
        hf = float(high_frequency_share(x, brain_mask).nanmedian())
        spectra[name] = power.numpy()
        ax.semilogy(freqs.numpy(), spectra[name], label=f"{name} (HF share {hf:.4f})", lw=1.4)
    first = next(iter(spectra))
    for name, power in spectra.items():
        ax_ratio.plot(freqs.numpy(), power / spectra[first], label=name, lw=1.4)
    for a in (ax, ax_ratio):
        a.axvline(HF_CUTOFF, color="0.4", ls="--", lw=1)
        a.set_xlabel("radial frequency (cycles/pixel)")
        a.set_xlim(0, 0.5)
        a.grid(alpha=0.3)
    ax.set_ylabel("mean power |FFT|² per ring")
    ax.set_title("radially averaged power spectrum", fontsize=10)
    ax.legend(fontsize=8)
    ax_ratio.axhline(1.0, color="0.6", lw=0.8)
    ax_ratio.set_ylabel(f"power / power of {first}")
    ax_ratio.set_title(f"ratio to {first} (< 1: energy lost)", fontsize=10)
    ax_ratio.set_ylim(0, max(1.5, float(np.nanmax([np.nanmax(p / spectra[first])
                                                   for p in spectra.values()])) * 1.05))
    ax_ratio.legend(fontsize=8)
    ax.text(HF_CUTOFF, ax.get_ylim()[0], " 0.25 = Nyquist / 2", fontsize=8, va="bottom",
            color="0.3")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, save_to)
