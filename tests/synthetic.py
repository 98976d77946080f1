"""Small in-memory image sets for trainer tests (no files, no data layer), and a tiny exported
model for the CLI tests."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class BlobSlices(Dataset):
    """``n`` deterministic [1, size, size] images in [-1, 1]: a bright ellipse per image."""

    def __init__(self, n: int = 40, size: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                                indexing="ij")
        centre = (torch.rand(n, 2, generator=g) - 0.5) * 0.6
        radius = 0.3 + 0.4 * torch.rand(n, 2, generator=g)
        d = ((xx - centre[:, 0, None, None]) / radius[:, 0, None, None]) ** 2 + (
            (yy - centre[:, 1, None, None]) / radius[:, 1, None, None]) ** 2
        self.images = (torch.sigmoid(8 * (1 - d)) * 2 - 1)[:, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class CondBlobs(Dataset):
    """BlobSlices with a mask (the blob's brightness in 4 classes) and a slice index: the
    named items ``{"image", "mask", "slice_index"}`` of a conditional run."""

    def __init__(self, n: int, size: int = 16, seed: int = 0):
        self.images = BlobSlices(n, size, seed=seed).images
        self.masks = ((self.images[:, 0] + 1) * 1.99).long().clamp(0, 3)
        self.slices = (torch.arange(n) * 7) % 32

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i) -> dict:
        return {"image": self.images[i], "mask": self.masks[i], "slice_index": self.slices[i]}


def perturbed_export(path, condition: str, size: int = 16):
    """Save a tiny ``condition`` model (T = 20) whose weights are perturbed from their
    initialisation, so that it is not the zero-initialised net that ignores its condition."""
    from oasis_lib.config import TrainConfig
    from oasis_lib.models.factory import build_pipeline

    cfg = TrainConfig.from_preset("tiny", image_size=size, condition=condition,
                                  diffusion={"timesteps": 20})
    pipe = build_pipeline(cfg, warn=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return pipe.save(path)
