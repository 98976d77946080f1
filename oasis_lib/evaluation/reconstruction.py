"""How faithful is an autoencoder? PSNR and SSIM of reconstructions, inside the brain.

Most of an OASIS slice is black background that any decoder reproduces, which inflates whole-image
scores; the numbers that matter are those of the brain pixels (tissue masks > 0). Images are
``[B, 1, H, W]`` in [-1, 1], so the data range is L = 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .ssim import ssim_map

__all__ = ["brain_region", "reconstruction_metrics"]


def brain_region(mask: Tensor | None, shape: torch.Size) -> Tensor:
    """A bool ``[B, H, W]`` region from class masks (``> 0`` = brain), a bool mask (``[B, H, W]``
    or ``[B, 1, H, W]``), or None (every pixel) for images of ``shape`` ``[B, 1, H, W]``."""
    b, _, h, w = shape
    if mask is None:
        return torch.ones(b, h, w, dtype=torch.bool)
    mask = torch.as_tensor(mask).detach().cpu()
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != (b, h, w):
        raise ValueError(f"brain_mask must be [B, H, W] = [{b}, {h}, {w}] (or [B, 1, H, W]), "
                         f"got {tuple(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask > 0


def reconstruction_metrics(original: Tensor, recon: Tensor, *, brain_mask: Tensor | None = None,
                           data_range: float = 2.0, win_size: int = 11) -> dict:
    """PSNR and SSIM of ``recon`` against ``original`` inside ``brain_mask``, per image.

    * PSNR = 10 log10(L^2 / MSE), the MSE over the region's pixels (L = ``data_range``, 2 for
      [-1, 1]); +inf for an exact reconstruction.
    * SSIM (Wang et al. 2004, eq. 13): the mean of the SSIM map (:func:`oasis_lib.evaluation.ssim.
      ssim_map`, 11x11 Gaussian windows) over the windows whose centre lies in the
      region.

    ``recon`` is clamped to [-L/2, L/2] first (what a sampler shows). ``brain_mask``: tissue
    class masks ``long [B, H, W]`` (0 = background), a bool mask, or None (whole image).
    Returns ``{"psnr", "ssim"}`` (means over images, float), ``"psnr_per_image"`` and
    ``"ssim_per_image"`` (lists) and ``"n"``. Computed in float64.
    """
    if original.shape != recon.shape or original.ndim != 4 or original.shape[1] != 1:
        raise ValueError(f"expected original and recon of one shape [B, 1, H, W], got "
                         f"{tuple(original.shape)} and {tuple(recon.shape)}")
    a = original.detach().cpu().double()
    b = recon.detach().cpu().double().clamp(-data_range / 2, data_range / 2)
    region = brain_region(brain_mask, a.shape)
    pixels = region.flatten(1).sum(1)
    if (pixels == 0).any():
        empty = (pixels == 0).nonzero()[:, 0].tolist()
        raise ValueError(f"brain_mask is empty for image(s) {empty}")
    mse = ((a - b)[:, 0].pow(2) * region).flatten(1).sum(1) / pixels
    psnr = [10 * math.log10(data_range**2 / m) if m > 0 else math.inf for m in mse.tolist()]
    r = (win_size - 1) // 2  # the SSIM map covers the 'valid' window centres only
    centres = region[:, r:region.shape[1] - r, r:region.shape[2] - r]
    ssim_values = ssim_map(a, b, data_range=data_range, win_size=win_size)[:, 0]
    counts = centres.flatten(1).sum(1)
    if (counts == 0).any():
        raise ValueError(f"brain_mask leaves no {win_size}x{win_size} window centre for image(s) "
                         f"{(counts == 0).nonzero()[:, 0].tolist()}")
    ssim = ((ssim_values * centres).flatten(1).sum(1) / counts).tolist()
    return {"psnr": sum(psnr) / len(psnr), "ssim": sum(ssim) / len(ssim),
            "psnr_per_image": psnr, "ssim_per_image": ssim, "n": len(psnr)}
