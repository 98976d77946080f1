"""How much fine texture do generated or reconstructed slices keep? Two high-frequency metrics.

PSNR and SSIM reward a decoder that blurs: the mean of the plausible textures is closer, pixel by
pixel, than any one of them. Two numbers see the blur instead, both computed inside the brain:

* **|Laplacian| energy** (:func:`laplacian_energy`): the mean absolute discrete Laplacian
  (the 5-point stencil ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``, a second derivative, i.e. edges
  and fine texture) over the brain's pixels. A constant or linear image scores 0, a +-1
  checkerboard 8.
* **High-frequency share** (:func:`high_frequency_share`): the share of the (mean-removed,
  Hann- and brain-windowed) image's spectral energy at radii above :data:`HF_CUTOFF` = 0.25
  cycles/pixel, half the Nyquist frequency. The radially averaged power spectrum behind it
  (:func:`radial_power_spectrum`) is the one of Durall et al. 2020, "Watch your
  up-convolution: CNN based generative deep neural networks are failing to reproduce spectral
  distributions", and Dzanic et al. 2020, "Fourier spectrum discrepancies in deep network
  generated images": generators and decoders lose or distort the top of that curve.

:func:`texture_ratios` compares generated images with real ones, in one of two modes:

* **paired** (reconstructions: ``fake[i]`` is the autoencoder's reconstruction of
  ``real[i]``): each image's ratio is fake value / its own real value, so slice-to-slice
  differences in texture cancel out;
* **unpaired** (samples of a generative model, which match no real slice): each image's ratio
  is fake value / the *median* value of the real set.

A ratio of 1 keeps the real texture; 0.5 keeps half of it. Images are ``[B, 1, H, W]`` in
[-1, 1]; computed in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .reconstruction import brain_region

__all__ = ["BACKGROUND_THRESHOLD", "HF_CUTOFF", "LAPLACIAN_KERNEL", "brain_window",
           "high_frequency_share", "laplacian", "laplacian_energy", "radial_power_spectrum",
           "ratios_from_values", "texture_ratios", "texture_values", "threshold_mask"]

LAPLACIAN_KERNEL = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
HF_CUTOFF = 0.25  # cycles/pixel: half the Nyquist frequency (0.5)
BACKGROUND_THRESHOLD = -0.9  # in [-1, 1]: the slices' background is exactly -1


def _images(images: Tensor, name: str = "images") -> Tensor:
    """``images`` as float64 ``[B, 1, H, W]`` on the CPU (H, W >= 3), else ValueError."""
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 1 or min(images.shape[-2:]) < 3 or not len(images):
        raise ValueError(f"{name} must be [B >= 1, 1, H >= 3, W >= 3], got {tuple(images.shape)}")
    return images.detach().cpu().double()


def threshold_mask(images: Tensor, threshold: float = BACKGROUND_THRESHOLD) -> Tensor:
    """A bool brain mask ``[B, H, W]``: the pixels brighter than ``threshold``.

    For images without tissue masks (generated samples). On the OASIS slices, whose
    background is exactly -1, the default -0.9 gives the ground-truth brain mask (mask > 0)
    pixel for pixel."""
    return _images(images)[:, 0] > threshold


def laplacian(images: Tensor) -> Tensor:
    """The discrete Laplacian (:data:`LAPLACIAN_KERNEL`) of ``images`` ``[B, 1, H, W]``, at
    the valid positions only: float64 ``[B, H - 2, W - 2]`` (pixel (1, 1) first)."""
    x = _images(images)
    kernel = torch.tensor(LAPLACIAN_KERNEL, dtype=torch.float64)[None, None]
    return F.conv2d(x, kernel)[:, 0]


def _eroded(brain_mask, shape: torch.Size) -> Tensor:
    """The region ``[B, H - 2, W - 2]`` of the pixels whose whole 5-point stencil lies in the
    brain: the mask eroded by the kernel's reach (one pixel, 4-neighbourhood), so that the step
    between the brain and the background is not counted as texture."""
    r = brain_region(brain_mask, shape)
    return (r[:, 1:-1, 1:-1] & r[:, :-2, 1:-1] & r[:, 2:, 1:-1]
            & r[:, 1:-1, :-2] & r[:, 1:-1, 2:])


def laplacian_energy(images: Tensor, brain_mask: Tensor | None = None) -> Tensor:
    """Mean |Laplacian| inside the brain, per image: float64 ``[B]``.

    ``brain_mask``: tissue class masks ``[B, H, W]`` (> 0 = brain), a bool mask, or None (the
    whole image). The mean runs over the pixels whose 5-point stencil lies in the brain (the
    mask eroded by one pixel) and not on the image's border; an image with no such pixel
    gets NaN (e.g. a blank sample), which :func:`texture_ratios` leaves out."""
    x = _images(images)
    region = _eroded(brain_mask, x.shape)
    lap = laplacian(x).abs()
    count = region.flatten(1).sum(1)
    total = (lap * region).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def brain_window(brain_mask, shape: torch.Size, taper: int = 3) -> Tensor:
    """A soft brain window float64 ``[B, H, W]`` in [0, 1] for the spectra: the mask eroded by
    ``taper`` pixels (a square of 2 ``taper`` + 1), then averaged over that square, so the
    window falls smoothly from 1 to 0 across the outline's last ``taper`` pixels (all ones
    without a mask). A hard 0/1 mask would make the brain's outline a step, whose broadband
    energy swamps the tissue's own high frequencies (on the shipped autoencoder's validate
    reconstructions it doubled the real slices' HF share and pulled the ratio from ~0.2 to
    ~0.8); from ``taper`` = 2 on the measured share no longer changes."""
    region = brain_region(brain_mask, shape).float()[:, None]
    if taper < 0:
        raise ValueError(f"taper must be >= 0, got {taper}")
    for k, pad in (((1, 2 * taper + 1), (0, taper)), ((2 * taper + 1, 1), (taper, 0))):
        region = -F.max_pool2d(-region, k, stride=1, padding=pad)  # erosion, one axis at a time
    for k, pad in (((1, 2 * taper + 1), (0, taper)), ((2 * taper + 1, 1), (taper, 0))):
        region = F.avg_pool2d(region, k, stride=1, padding=pad)  # zeros beyond the image
    return region[:, 0].double()


def _power_2d(images: Tensor, brain_mask, taper: int) -> Tensor:
    """The 2-D power spectrum ``|FFT|^2`` ``[B, H, W]`` (DC at [0, 0]) of each image: the
    (window-weighted) mean removed, times the soft brain window (:func:`brain_window`) and a
    2-D Hann window against the leakage of the image's border."""
    x = _images(images)
    window = brain_window(brain_mask, x.shape, taper)
    x = x[:, 0]
    mean = (x * window).flatten(1).sum(1) / window.flatten(1).sum(1).clamp(min=1e-12)
    h, w = x.shape[-2:]
    hann = (torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None]
            * torch.hann_window(w, periodic=False, dtype=torch.float64)[None, :])
    return torch.fft.fft2((x - mean[:, None, None]) * window * hann).abs().pow(2)


def _radius(h: int, w: int) -> Tensor:
    """The radial frequency ``sqrt(fy^2 + fx^2)`` in cycles/pixel of each FFT bin ``[H, W]``."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    return (fy.pow(2) + fx.pow(2)).sqrt()


def radial_power_spectrum(images: Tensor, brain_mask: Tensor | None = None, *,
                          bins: int | None = None, average: bool = False, taper: int = 3
                          ) -> tuple[Tensor, Tensor]:
    """The radially averaged power spectrum (Durall et al. 2020, eq. 4; Dzanic et al. 2020).

    Each image's mean is removed (inside ``brain_mask`` if given), it is multiplied by a soft
    brain window (:func:`brain_window`: the mask eroded and smoothed over ``taper`` pixels, so
    the outline adds no step) and by a 2-D Hann window against the leakage of the image's
    border, and its power ``|FFT|^2`` is averaged over rings of equal radial frequency:
    ``bins`` rings of equal width over (0, 0.5] cycles/pixel (default: min(H, W) // 2, one
    frequency step per ring). The DC term and the corners beyond the Nyquist radius 0.5 are
    left out.

    Returns ``(frequencies, power)``: the rings' centres float64 ``[bins]`` in cycles/pixel and
    the mean power per ring, float64 ``[B, bins]`` (``average=True``: ``[bins]``, the mean over
    images)."""
    x = _images(images)
    h, w = x.shape[-2:]
    bins = min(h, w) // 2 if bins is None else int(bins)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    power = _power_2d(x, brain_mask, taper).flatten(1)
    r = _radius(h, w).flatten()
    ring = torch.ceil(r / 0.5 * bins).long() - 1  # (0, 0.5/bins] -> ring 0, ...
    keep = (r > 0) & (ring < bins)
    ring = ring[keep]
    counts = torch.bincount(ring, minlength=bins).double()
    sums = torch.zeros(len(x), bins, dtype=torch.float64).index_add_(1, ring, power[:, keep])
    mean = sums / counts.clamp(min=1)
    mean[:, counts == 0] = math.nan  # a ring with no FFT bin (many bins on a small image)
    freqs = (torch.arange(bins, dtype=torch.float64) + 0.5) * 0.5 / bins
    return freqs, (mean.mean(0) if average else mean)


def high_frequency_share(images: Tensor, brain_mask: Tensor | None = None, *,
                         cutoff: float = HF_CUTOFF, taper: int = 3) -> Tensor:
    """The share of spectral energy above ``cutoff`` cycles/pixel, per image: float64 ``[B]``
    in [0, 1].

    Over the whole 2-D power spectrum of :func:`radial_power_spectrum` (mean removed, soft
    brain window, Hann window, corners included): sum of |FFT|^2 at radii > ``cutoff`` / sum
    at radii > 0. The default 0.25 is half the Nyquist frequency. A +-1 checkerboard scores
    ~1, a slow sinusoid ~0; a constant image (no energy) or a brain narrower than the taper
    (an empty window) gets NaN."""
    x = _images(images)
    power = _power_2d(x, brain_mask, taper).flatten(1)
    r = _radius(*x.shape[-2:]).flatten()
    high = power[:, r > cutoff].sum(1)
    total = power[:, r > 0].sum(1)
    return torch.where(total > 0, high / total.clamp(min=1e-300),
                       torch.full_like(total, math.nan))


def _nan_stats(values: Tensor) -> tuple[float, float]:
    """(median, min) of the finite values (NaN, NaN if none)."""
    v = values[torch.isfinite(values)]
    if not len(v):
        return math.nan, math.nan
    return float(v.median()), float(v.min())


def texture_values(images: Tensor, brain_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Both metrics per image: ``{"laplacian": [B], "hf_share": [B]}`` (float64), what
    :func:`texture_ratios` compares; compute a real set's once to compare several sets with it
    (:func:`ratios_from_values`)."""
    return {"laplacian": laplacian_energy(images, brain_mask),
            "hf_share": high_frequency_share(images, brain_mask)}


def texture_ratios(real: Tensor, fake: Tensor, real_masks: Tensor | None = None,
                   fake_masks: Tensor | None = None, *, paired: bool = False) -> dict:
    """|Laplacian| and high-frequency share of ``fake`` images relative to ``real`` ones.

    Modes (see the module docstring):

    * ``paired=True`` (reconstructions): ``fake[i]`` belongs to ``real[i]``; ratio_i =
      value(fake_i) / value(real_i). Both sets need the same length; pass the real slice's
      tissue mask as both ``real_masks`` and ``fake_masks`` (one region for the pair);
    * ``paired=False`` (samples): ratio_i = value(fake_i) / median over the real images. The sets
      may differ in size; generated samples have no tissue masks, so pass
      :func:`threshold_mask` of them (and of the real images, for a like-for-like region).

    Masks: ``[B, H, W]`` class masks (> 0 = brain), bool masks, or None (whole image). Images
    whose region or spectrum is empty (NaN) are left out of the statistics.

    Returns a dict of floats: ``laplacian_ratio_median``, ``laplacian_ratio_worst`` (the
    smallest ratio), ``laplacian_below_half`` (the fraction of images under 0.5x),
    ``hf_share_ratio_median``, ``hf_share_ratio_worst``; the raw medians ``laplacian_real``,
    ``laplacian_fake``, ``hf_share_real``, ``hf_share_fake``; ``paired``, ``n_real``,
    ``n_fake``; and the per-image ratios (lists) ``laplacian_ratios``, ``hf_share_ratios``.
    """
    real, fake = _images(real, "real"), _images(fake, "fake")
    if paired and real.shape != fake.shape:
        raise ValueError(f"paired real and fake must have one shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}; pass paired=False for unpaired samples")
    return ratios_from_values(texture_values(real, real_masks), texture_values(fake, fake_masks),
                              paired=paired)


def ratios_from_values(real: dict[str, Tensor], fake: dict[str, Tensor], *,
                       paired: bool = False) -> dict:
    """:func:`texture_ratios` from the :func:`texture_values` of both sets."""
    n_real, n_fake = len(real["laplacian"]), len(fake["laplacian"])
    if paired and n_real != n_fake:
        raise ValueError(f"paired sets must have one length, got {n_real} and {n_fake}")
    out: dict = {"paired": bool(paired), "n_real": n_real, "n_fake": n_fake}
    for name in ("laplacian", "hf_share"):
        v_real, v_fake = real[name], fake[name]
        med_real, _ = _nan_stats(v_real)
        ratios = v_fake / v_real if paired else v_fake / med_real
        out[f"{name}_real"], out[f"{name}_fake"] = med_real, _nan_stats(v_fake)[0]
        out[f"{name}_ratio_median"], out[f"{name}_ratio_worst"] = _nan_stats(ratios)
        out[f"{name}_ratios"] = ratios.tolist()
        finite = ratios[torch.isfinite(ratios)]
        if name == "laplacian":
            out["laplacian_below_half"] = (float((finite < 0.5).double().mean()) if len(finite)
                                           else math.nan)
    return out
