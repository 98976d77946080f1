"""Reconstruction metrics: PSNR against its closed form, SSIM inside the brain."""

from __future__ import annotations

import math

import pytest
import torch

from oasis_lib.evaluation.metrics import ssim
from oasis_lib.evaluation.reconstruction import reconstruction_metrics


def _pair(sigma: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 32, 32, generator=g, dtype=torch.float64) - 0.5  # no clamping
    signs = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).double()
    return x, x + sigma * signs  # every error is exactly +-sigma


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.3])
def test_psnr_of_a_known_noise_level(sigma):
    x, y = _pair(sigma)
    out = reconstruction_metrics(x, y)
    assert out["psnr"] == pytest.approx(10 * math.log10(4 / sigma**2), rel=1e-9)
    assert out["n"] == 3
    # the same errors inside half of the image only: PSNR inside the brain is unchanged
    mask = torch.zeros(3, 32, 32, dtype=torch.long)
    mask[:, 8:24, 8:24] = 2
    y_half = torch.where(mask[:, None] > 0, y, x)
    inside = reconstruction_metrics(x, y_half, brain_mask=mask)
    assert inside["psnr"] == pytest.approx(10 * math.log10(4 / sigma**2), rel=1e-9)
    whole = reconstruction_metrics(x, y_half)
    assert whole["psnr"] == pytest.approx(10 * math.log10(4 / (sigma**2 / 4)), rel=1e-9)


def test_ssim_whole_image_equals_metrics_ssim_and_perfect_is_one():
    x, y = _pair(0.2)
    out = reconstruction_metrics(x, y)
    assert out["ssim_per_image"] == pytest.approx(ssim(x, y).tolist(), rel=1e-12)
    perfect = reconstruction_metrics(x, x)
    assert perfect["psnr"] == math.inf
    assert perfect["ssim"] == pytest.approx(1.0)


def test_ssim_inside_the_brain_ignores_the_background():
    x, y = _pair(0.2)
    mask = torch.zeros(3, 32, 32, dtype=torch.bool)
    mask[:, :, :16] = True
    y_left_exact = torch.where(mask[:, None], x, y)
    assert reconstruction_metrics(x, y_left_exact, brain_mask=mask[:, None])["ssim"] < 1
    left = torch.zeros_like(mask)
    left[:, :, :8] = True  # windows centred here see only exact pixels
    assert reconstruction_metrics(x, y_left_exact, brain_mask=left)["ssim"] == pytest.approx(1.0)


def test_bad_masks_raise():
    x, y = _pair(0.1)
    with pytest.raises(ValueError, match="brain_mask must be"):
        reconstruction_metrics(x, y, brain_mask=torch.ones(3, 16, 16))
    mask = torch.ones(3, 32, 32)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"empty for image\(s\) \[1\]"):
        reconstruction_metrics(x, y, brain_mask=mask)


def test_ssim_map_mean_is_ssim_and_differentiable():
    from oasis_lib.evaluation.metrics import ssim_map

    x, y = _pair(0.2)
    y = y.clone().requires_grad_(True)
    m = ssim_map(x, y)
    assert m.shape == (3, 1, 22, 22)
    assert m.dtype == torch.float64  # the inputs' dtype
    torch.testing.assert_close(m.double().flatten(1).mean(1), ssim(x, y.detach()),
                               rtol=1e-5, atol=1e-6)
    (1 - m.mean()).backward()
    assert y.grad.abs().sum() > 0
