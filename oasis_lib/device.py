"""The one place where oasis_lib chooses a device.

Every other module asks :func:`get_device` instead of testing ``torch.cuda.is_available()``
itself, so the same code runs unchanged on CUDA, Apple MPS and the CPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Args:
        prefer: ``"auto"`` (default; also ``None``) picks CUDA, then MPS, then the CPU. The
            ``OASIS_DEVICE`` environment variable overrides ``"auto"``. An explicit ``"cuda"``,
            ``"cuda:1"``, ``"mps"`` or ``"cpu"`` is honoured, and raises ``ValueError`` when that
            device is not available here.
    """
    if isinstance(prefer, torch.device):
        prefer = str(prefer)
    choice = (prefer or "auto").lower()
    if choice == "auto":  # the environment overrides "auto" (and only "auto")
        choice = (os.environ.get("OASIS_DEVICE") or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = choice.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {prefer!r}; choose one of {DEVICE_CHOICES} (or 'cuda:N')")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' was asked for but "
                         "torch.backends.mps.is_available() is False")
    return torch.device(choice)
