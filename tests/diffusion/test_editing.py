"""SDEdit and DDIM inversion (oasis_lib.diffusion.editing), on the exact denoiser of Gaussian
data, where the probability-flow ODE is known, and on a small real U-Net."""

from __future__ import annotations

import pytest
import torch

from oasis_lib import NoiseSchedule, sample
from oasis_lib.diffusion.editing import ddim_invert, sdedit, sdedit_noise, sdedit_start_timestep

MU, SIGMA = 0.3, 0.5  # data x0 ~ N(MU, SIGMA^2) per pixel


def gaussian_eps(schedule: NoiseSchedule):
    """The exact E[eps | x_t] for x0 ~ N(MU, SIGMA^2 I): sqrt(1 - ab) (x_t - sqrt(ab) MU) /
    (ab SIGMA^2 + 1 - ab), a linear function of x_t (float64)."""
    ab_all = schedule.f64("alpha_bar")

    def eps(x, t):
        ab = ab_all[t].reshape(-1, 1, 1, 1).to(x.dtype)
        return (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * SIGMA**2 + 1 - ab)

    return eps


@pytest.fixture
def setup():
    schedule = NoiseSchedule("cosine", 1000, warn=False)
    image = (MU + SIGMA * torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0),
                                      dtype=torch.float64))
    return schedule, gaussian_eps(schedule), image


def _round_trip(schedule, model, image, steps):
    x_T = ddim_invert(model, schedule, image, steps=steps)
    back = sample(model, schedule, tuple(image.shape), sampler="ddim", steps=steps, x_T=x_T,
                  clip_x0=False, progress=False, dtype=torch.float64)
    return x_T, (back - image).abs().max().item()


def test_ddim_inversion_round_trip_error_shrinks_with_the_steps(setup):
    schedule, model, image = setup
    errors = {k: _round_trip(schedule, model, image, k)[1] for k in (10, 50, 250)}
    assert errors[250] < errors[50] < errors[10]
    assert errors[250] < 0.02          # many small steps: the image comes back
    assert errors[10] > 5 * errors[250]  # the approximation is first order in the step size


def test_ddim_inversion_reaches_unit_noise(setup):
    """x_T of Gaussian data under the exact ODE is x0 standardised: (x0 - MU) / SIGMA scaled by
    the ODE's flow; at T - 1 of the cosine schedule alpha_bar ~ 0, so x_T ~ N(0, 1)-sized."""
    schedule, model, image = setup
    x_T, _ = _round_trip(schedule, model, image, 250)
    want = (image - MU) / SIGMA  # the exact flow maps N(MU, SIGMA^2) to N(0, 1), monotonically
    assert torch.allclose(x_T, want, atol=0.05)


def test_sdedit_at_t0_zero_returns_the_input(setup):
    schedule, model, image = setup
    assert sdedit_start_timestep(1000, 0.0) == -1
    out = sdedit(model, schedule, image, 0.0, steps=10)
    assert torch.equal(out, image)
    assert torch.equal(sdedit_noise(schedule, image, 0.0, torch.ones_like(image)), image)


def test_sdedit_from_t0_one_is_ddim_from_the_noised_image(setup):
    """t0 = 1 starts at T - 1; with eta = 0 it is the DDIM sampler from x_{T-1} = q_sample."""
    schedule, model, image = setup
    z = torch.randn(image.shape, generator=torch.Generator().manual_seed(3), dtype=image.dtype)
    out = sdedit(model, schedule, image, 1.0, steps=10, eta=0.0, noise=z, clip_x0=False)
    start = sdedit_noise(schedule, image, 1.0, z)
    ab = schedule.alpha_bar_at(999)
    assert torch.allclose(start, ab**0.5 * image + (1 - ab) ** 0.5 * z)
    want = sample(model, schedule, tuple(image.shape), sampler="ddim", steps=10, x_T=start,
                  clip_x0=False, progress=False, dtype=torch.float64)
    assert torch.allclose(out, want, atol=1e-12)


def test_sdedit_keeps_more_of_the_image_at_small_t0(setup):
    schedule, model, image = setup
    dist = {}
    for t0 in (0.1, 0.5, 0.9):
        out = sdedit(model, schedule, image, t0, steps=20,
                     generator=torch.Generator().manual_seed(1))
        dist[t0] = (out - image).pow(2).mean().item()
    assert dist[0.1] < dist[0.5] < dist[0.9]


def test_sdedit_draws_are_seeded_and_steps_are_capped(setup):
    schedule, model, image = setup
    a = sdedit(model, schedule, image, 0.3, steps=5, generator=torch.Generator().manual_seed(2))
    b = sdedit(model, schedule, image, 0.3, steps=5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    # t0 = 0.002: h0 = 1, two timesteps only; steps=50 is capped at 2 instead of failing
    assert sdedit(model, schedule, image, 0.002, steps=50).shape == image.shape


def test_bad_arguments(setup):
    schedule, model, image = setup
    with pytest.raises(ValueError, match="t0"):
        sdedit(model, schedule, image, 1.5)
    with pytest.raises(ValueError, match="steps"):
        sdedit(model, schedule, image, 0.5, steps=0)
