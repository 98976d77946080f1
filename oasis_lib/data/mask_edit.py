"""Editing a tissue mask as atrophy would: grow or shrink the CSF by k pixels (issue 12).

With age and neurodegeneration the brain loses tissue and the CSF spaces take its place: the
ventricles widen and the sulci open (e.g. Fotenos et al. 2005 on OASIS). :func:`edit_csf`
mimics that on a mask, so a mask-conditioned model can be asked for the same brain "older" or
"younger" (notebook 10):

- ``k > 0`` (dilation): ``k`` times, every grey- or white-matter pixel that touches an edited
  CSF pixel (4-neighbourhood) becomes CSF: the CSF grows by k pixels in city-block distance,
  into the tissue only (the background, outside the head, is never touched);
- ``k < 0`` (erosion): ``|k|`` times, every edited CSF pixel that touches grey or white matter
  takes the tissue class most of its 4 neighbours have (a tie goes to grey matter): the CSF
  shrinks by |k| pixels and the tissue closes over it;
- ``k = 0``: the mask unchanged.

``scope`` (``EDIT_SCOPES``) chooses which CSF is edited: ``"csf"`` all of it (the ventricles
and the rim of sulcal CSF around the cortex), ``"ventricles"`` only the CSF not connected
(4-neighbourhood, through CSF) to the background, i.e. the inner spaces; the rest stays as is.
Classes: 0 background, 1 CSF, 2 grey matter, 3 white matter (:data:`~oasis_lib.data.layout.
CLASS_NAMES`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BACKGROUND, CSF, GREY, WHITE = 0, 1, 2, 3
EDIT_SCOPES = ("csf", "ventricles")
_CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def _check(mask: Tensor) -> Tensor:
    """The mask as long [B, H, W] (a [H, W] mask gets a batch of 1); ValueError otherwise."""
    if not isinstance(mask, Tensor) or mask.dtype.is_floating_point or mask.dtype == torch.bool:
        raise ValueError("mask must be an integer tensor of classes 0..3 (background, CSF, grey, "
                         f"white matter), got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.ndim not in (2, 3):
        raise ValueError(f"expected a mask of shape [H, W] or [B, H, W], got {tuple(mask.shape)}")
    bad = mask[(mask < 0) | (mask > WHITE)]
    if bad.numel():
        found = torch.unique(bad)[:8].tolist()
        raise ValueError(f"mask values must be classes 0..3; found {found}")
    return (mask[None] if mask.ndim == 2 else mask).long()


def _neighbours(x: Tensor) -> Tensor:
    """How many of the 4 neighbours of each pixel are set, for a float [B, H, W] of 0/1."""
    kernel = _CROSS.to(x.device, x.dtype)[None, None]
    return F.conv2d(x[:, None], kernel, padding=1)[:, 0]


def ventricles(mask: Tensor) -> Tensor:
    """Bool ``[B, H, W]`` (or ``[H, W]``): the CSF pixels that no 4-connected path through CSF
    joins to a background pixel (the inner CSF spaces; flood fill from the background)."""
    m = _check(mask)
    csf = m == CSF
    reached = (m == BACKGROUND).float()
    while True:  # grow the background's reach through CSF until it stops changing
        grown = ((reached + _neighbours(reached) > 0) & (csf | (m == BACKGROUND))).float()
        if torch.equal(grown, reached):
            break
        reached = grown
    out = csf & (reached == 0)
    return out[0] if mask.ndim == 2 else out


def edit_csf(mask: Tensor, k: int, *, scope: str = "csf") -> Tensor:
    """The mask with its CSF dilated (``k > 0``) or eroded (``k < 0``) by ``|k|`` pixels into or
    out of the brain tissue (module docstring); long, the shape of ``mask``.

    Args:
        mask (integer Tensor [H, W] or [B, H, W]): classes 0..3.
        k (int): pixels of growth (> 0) or shrinkage (< 0) of the CSF; 0 returns a copy.
        scope (str, default ``"csf"``): one of ``EDIT_SCOPES``: all CSF, or the ventricles only.

    Raises:
        ValueError: for a mask that is not classes 0..3, a non-integer k or an unknown scope.
    """
    if scope not in EDIT_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {EDIT_SCOPES}")
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"k must be an integer number of pixels, got {k!r}")
    m = _check(mask).clone()
    edited = (m == CSF) if scope == "csf" else ventricles(m)
    tissue = (m == GREY) | (m == WHITE)
    for _ in range(abs(int(k))):
        if k > 0:  # tissue next to the edited CSF turns into CSF
            grow = tissue & (_neighbours(edited.float()) > 0)
            m[grow] = CSF
            edited, tissue = edited | grow, tissue & ~grow
        else:  # edited CSF next to tissue takes the majority tissue of its neighbours
            n_grey, n_white = _neighbours((m == GREY).float()), _neighbours((m == WHITE).float())
            shrink = edited & (n_grey + n_white > 0)
            m[shrink & (n_grey >= n_white)] = GREY
            m[shrink & (n_grey < n_white)] = WHITE
            edited, tissue = edited & ~shrink, tissue | shrink
    return m[0] if mask.ndim == 2 else m
