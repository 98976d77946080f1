"""Texture metrics: |Laplacian| and the high-frequency share against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oasis_lib.evaluation.texture import (
    brain_window,
    high_frequency_share,
    laplacian,
    laplacian_energy,
    radial_power_spectrum,
    ratios_from_values,
    texture_ratios,
    texture_values,
    threshold_mask,
)

N = 32


def _grid(n: int = N):
    i = torch.arange(n, dtype=torch.float64)
    return i[:, None], i[None, :]


def checkerboard(n: int = N) -> torch.Tensor:
    y, x = _grid(n)
    return ((y + x) % 2 * 2 - 1)[None, None]


def sinusoid(period: float, n: int = N) -> torch.Tensor:
    _, x = _grid(n)
    return torch.sin(2 * math.pi * x / period).expand(n, n)[None, None].clone()


def ramp(n: int = N) -> torch.Tensor:
    y, x = _grid(n)
    return ((0.03 * x - 0.02 * y) - 0.2)[None, None].clone()


def blur(images: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], dtype=images.dtype)
    k = (k[:, None] * k[None, :] / 16)[None, None]
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), k)


def noise(b: int = 3, n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, n, n, generator=g, dtype=torch.float64) * 2 - 1


def test_a_constant_image_has_no_laplacian():
    assert laplacian_energy(torch.full((2, 1, N, N), 0.3)).tolist() == [0.0, 0.0]


def test_a_linear_ramp_has_no_laplacian_inside():
    assert laplacian(ramp()).abs().max() < 1e-12
    assert laplacian_energy(ramp()).item() == pytest.approx(0.0, abs=1e-12)


def test_a_checkerboard_has_laplacian_8_and_all_its_energy_high():
    lap = laplacian(checkerboard())
    assert lap.shape == (1, N - 2, N - 2)
    assert torch.equal(lap.abs(), torch.full_like(lap, 8.0))
    assert laplacian_energy(checkerboard()).item() == 8.0
    assert high_frequency_share(checkerboard()).item() > 0.99


def test_a_slow_sinusoid_has_almost_no_high_frequency_energy():
    assert high_frequency_share(sinusoid(period=16)).item() < 0.01
    # a fast one (0.4 cycles/pixel, above the 0.25 cutoff) has nearly all of it
    assert high_frequency_share(sinusoid(period=2.5)).item() > 0.95


def test_the_spectrum_peaks_at_the_sinusoids_frequency():
    freqs, power = radial_power_spectrum(sinusoid(period=8, n=64), average=True)
    assert freqs.shape == power.shape == (32,)
    assert freqs[0].item() == pytest.approx(0.5 / 64)
    assert freqs[-1] < 0.5
    assert freqs[power.argmax()].item() == pytest.approx(1 / 8, abs=0.5 / 32)


def test_blurring_lowers_both_metrics():
    x = noise()
    assert (laplacian_energy(blur(x)) < 0.5 * laplacian_energy(x)).all()
    assert (high_frequency_share(blur(x)) < 0.5 * high_frequency_share(x)).all()
    r = texture_ratios(x, blur(x), paired=True)
    assert r["laplacian_ratio_worst"] <= r["laplacian_ratio_median"] < 0.5
    assert r["hf_share_ratio_median"] < 0.5
    assert r["laplacian_below_half"] == 1.0
    same = texture_ratios(x, x.clone(), paired=True)
    assert same["laplacian_ratios"] == [1.0] * 3
    assert same["hf_share_ratio_median"] == 1.0


def test_the_mask_restricts_the_region_and_its_outline_is_not_texture():
    # a checkerboard in the left half, a constant right half (the "background")
    x = checkerboard()
    x[..., N // 2:] = -1.0
    mask = torch.zeros(1, N, N, dtype=torch.long)
    mask[:, :, N // 2:] = 3  # the constant half
    assert laplacian_energy(x, mask).item() == 0.0
    # a constant brain on a -1 background: the outline's step is not counted
    brain = torch.full((1, 1, N, N), -1.0, dtype=torch.float64)
    brain[..., 8:24, 8:24] = 0.5
    assert laplacian_energy(brain).item() > 0  # whole image: the step counts
    assert laplacian_energy(brain, threshold_mask(brain)).item() == 0.0
    assert high_frequency_share(brain, brain[:, 0] > -0.9).isnan().all()  # nothing but the mean
    # bool and class masks, [B, H, W] and [B, 1, H, W], give one answer
    bool_mask = mask > 0
    assert laplacian_energy(x, bool_mask[:, None]).item() == laplacian_energy(x, mask).item()


def test_an_empty_region_gives_nan_and_is_left_out_of_the_ratios():
    x = noise(2)
    mask = torch.ones(2, N, N, dtype=torch.bool)
    mask[1] = False
    energy = laplacian_energy(x, mask)
    assert math.isfinite(energy[0].item())
    assert math.isnan(energy[1].item())
    r = texture_ratios(x, x, mask, mask, paired=True)
    assert r["laplacian_ratio_median"] == 1.0
    assert math.isnan(r["laplacian_ratios"][1])


def test_unpaired_ratios_divide_by_the_median_real_value():
    real = torch.cat([checkerboard() * a for a in (0.5, 1.0, 2.0)])  # |Laplacian| 4, 8, 16
    fake = torch.cat([checkerboard() * a for a in (0.25, 1.0)])  # 2, 8
    r = texture_ratios(real, fake)
    assert not r["paired"]
    assert (r["n_real"], r["n_fake"]) == (3, 2)
    assert r["laplacian_real"] == 8.0
    assert r["laplacian_fake"] == 2.0
    assert r["laplacian_ratios"] == [0.25, 1.0]
    assert r["laplacian_ratio_worst"] == 0.25
    assert r["laplacian_below_half"] == 0.5
    assert r["hf_share_ratios"] == pytest.approx([1.0, 1.0])  # scale-free


def test_shapes_and_dtype():
    x = noise(4, n=16).float()
    for fn in (laplacian_energy, high_frequency_share):
        out = fn(x)
        assert out.shape == (4,)
        assert out.dtype == torch.float64
    freqs, power = radial_power_spectrum(x, bins=5)
    assert freqs.shape == (5,)
    assert power.shape == (4, 5)
    assert power.dtype == torch.float64
    assert radial_power_spectrum(x, bins=5, average=True)[1].shape == (5,)
    assert threshold_mask(x).shape == (4, 16, 16)


@pytest.mark.parametrize("shape", [(N, N), (2, N, N), (2, 3, N, N), (2, 1, 2, N), (0, 1, N, N)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match=r"\[B >= 1, 1, H >= 3, W >= 3\]"):
        laplacian_energy(torch.zeros(shape))
    with pytest.raises(ValueError, match="fake must be"):
        texture_ratios(noise(2), torch.zeros(shape))


def test_bad_masks_bins_and_pairs_raise():
    with pytest.raises(ValueError, match="brain_mask must be"):
        laplacian_energy(noise(2), torch.ones(2, N, N - 1))
    with pytest.raises(ValueError, match="bins must be"):
        radial_power_spectrum(noise(2), bins=0)
    with pytest.raises(ValueError, match="paired=False"):
        texture_ratios(noise(3), noise(2), paired=True)


def test_the_brain_window_keeps_the_outline_out_of_the_high_frequencies():
    # a slow sinusoid inside a disc on a -1 background: only the disc's outline is sharp
    n = 64
    y, x = _grid(n)
    disc = (y - 31.5) ** 2 + (x - 31.5) ** 2 < 24**2
    img = torch.where(disc, 0.3 * torch.sin(2 * math.pi * x / 16), torch.tensor(-1.0))
    img = img[None, None]
    mask = disc[None]
    soft = high_frequency_share(img, mask).item()  # the soft window (taper 3)
    assert soft < 1e-4
    assert high_frequency_share(img, mask, taper=0).item() > 50 * soft  # a hard mask: a step
    assert high_frequency_share(img).item() > 50 * soft  # no mask: the step to -1
    window = brain_window(mask, img.shape)
    assert window.min() == 0.0
    assert window.max() == 1.0
    assert torch.equal(window > 0, mask)  # it never reaches outside the mask
    with pytest.raises(ValueError, match="taper must be"):
        brain_window(mask, img.shape, taper=-1)


def test_ratios_from_precomputed_values_match_texture_ratios():
    real, fake = noise(4), blur(noise(3, seed=1))
    mask = torch.ones(4, N, N, dtype=torch.bool)
    values = texture_values(real, mask)
    assert set(values) == {"laplacian", "hf_share"}
    assert ratios_from_values(values, texture_values(fake)) == texture_ratios(real, fake, mask)
    with pytest.raises(ValueError, match="one length"):
        ratios_from_values(values, texture_values(fake), paired=True)
