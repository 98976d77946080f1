"""Rectified flow maths: the path, the shift, the time draws, diffusers' sampling grid, and the
order of Euler and Heun on Gaussian data, where the exact velocity field is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oasis_lib.diffusion.flow_matching import (
    euler_flow_step,
    flow_forward,
    flow_sigmas,
    flow_velocity,
    heun_flow_step,
    integrate_flow,
    logit_normal_density,
    point_mixture_velocity,
    sample_flow_time,
    shift_time,
)


def test_path_ends_and_velocity():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    assert torch.equal(flow_forward(x0, torch.zeros(3), eps), x0)
    assert torch.equal(flow_forward(x0, torch.ones(3), eps), eps)
    t, h = torch.full((3,), 0.3), 1e-3
    finite = (flow_forward(x0, t + h, eps) - flow_forward(x0, t - h, eps)) / (2 * h)
    torch.testing.assert_close(finite, flow_velocity(x0, eps), atol=1e-3, rtol=0)


def test_shift_closed_form():
    t = np.linspace(0, 1, 11)
    assert np.allclose(shift_time(t, 1.0), t)
    assert shift_time(0.0, 3.0) == 0.0
    assert shift_time(1.0, 3.0) == 1.0
    assert shift_time(0.5, 3.0) == pytest.approx(0.75)  # 1.5 / 2
    # the shift is a Moebius map: shifting by a then b is shifting by a * b
    assert np.allclose(shift_time(shift_time(t, 2.0), 1.5), shift_time(t, 3.0))
    with pytest.raises(ValueError, match="shift must be > 0"):
        shift_time(t, 0.0)


def test_logit_normal_draws_follow_their_density():
    t = sample_flow_time(200_000, sampling="logit-normal", loc=0.5, scale=0.8,
                         generator=torch.Generator().manual_seed(0)).numpy()
    counts, edges = np.histogram(t, bins=20, range=(0, 1), density=True)
    mids = (edges[:-1] + edges[1:]) / 2
    assert np.allclose(counts, logit_normal_density(mids, loc=0.5, scale=0.8), atol=0.05)
    u = sample_flow_time(100_000, generator=torch.Generator().manual_seed(1))
    assert abs(float(u.mean()) - 0.5) < 0.005
    assert 0 <= float(u.min())
    assert float(u.max()) < 1


def test_time_draws_are_shifted_and_checked():
    g = torch.Generator().manual_seed(0)
    plain = sample_flow_time(8, generator=g)
    shifted = sample_flow_time(8, shift=3.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, shift_time(plain, 3.0))
    with pytest.raises(ValueError, match="unknown time sampling 'beta'; choose one of"):
        sample_flow_time(4, sampling="beta")


@pytest.mark.parametrize(("steps", "shift"), [(1, 1.0), (4, 1.0), (8, 3.0), (20, 1.0), (28, 3.0)])
def test_sigmas_equal_diffusers(steps, shift):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    ref.set_timesteps(steps)
    ours = flow_sigmas(steps, shift=shift)
    assert ours.shape == ref.sigmas.shape
    torch.testing.assert_close(ours.float(), ref.sigmas, atol=1e-6, rtol=0)


def _gaussian_velocity(mu: float, std: float):
    """The exact velocity E[eps - x0 | x_t = x] when x0 ~ N(mu, std^2), eps ~ N(0, 1)
    (jointly Gaussian: the conditional mean is linear in x)."""
    def v(x, t):
        a, b = 1.0 - t, t
        return -mu + (b - a * std**2) / (a**2 * std**2 + b**2) * (x - a * mu)
    return v


def _integrate(v, z, grid, *, heun: bool):
    """Euler or Heun on every step of ``grid`` (the exact Gaussian field is smooth at t = 0,
    so Heun can take its last step there too)."""
    x = z
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        d = v(x, t)
        x = (heun_flow_step(d, v(x + (t_next - t) * d, t_next), x, t, t_next) if heun
             else euler_flow_step(d, x, t, t_next))
    return x


@pytest.mark.parametrize(("heun", "order"), [(False, 1), (True, 2)])
def test_euler_and_heun_converge_at_their_order(heun, order):
    mu, std = 0.4, 0.3
    z = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    exact = mu + std * z  # the flow map of a Gaussian: x_t = a mu + sqrt(a^2 std^2 + b^2) z
    v = _gaussian_velocity(mu, std)
    errors = [float((_integrate(v, z, torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64),
                                heun=heun) - exact).abs().max()) for n in (8, 16, 32, 64)]
    rates = [float(np.log2(errors[i] / errors[i + 1])) for i in range(len(errors) - 1)]
    assert all(abs(r - order) < 0.25 for r in rates[1:]), (errors, rates)


# ---------------------------------------------------------------------------- point data
def test_point_velocity_of_one_point_is_the_straight_line_to_it():
    """One data point mu: E[x0 | x_t] = mu, so v = (x - mu) / t, and Euler lands on mu in one
    step from any start."""
    mu = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (1.0, 0.4, 0.01):
        torch.testing.assert_close(point_mixture_velocity(x, t, mu), (x - mu) / t)
    end = integrate_flow(lambda z, t: point_mixture_velocity(z, t, mu), x, 1)[-1]
    torch.testing.assert_close(end, mu.expand(5, 2))


def test_point_velocity_at_t1_points_to_the_mean_so_one_step_lands_on_it():
    points = torch.tensor([[-2.0, -1.0], [2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean = weights @ points
    torch.testing.assert_close(point_mixture_velocity(x, 1.0, points, weights), x - mean)
    end = integrate_flow(lambda z, t: point_mixture_velocity(z, t, points, weights), x, 1)[-1]
    torch.testing.assert_close(end, mean.expand(6, 2))


def test_the_exact_field_carries_noise_to_the_data_in_proportion():
    """The marginal field transports N(0, I) to the data distribution (Lipman et al. 2023,
    Theorem 1): with many Euler steps every start ends on a data point, and the share ending on
    each point is its weight (4,000 starts: binomial sd about 0.007)."""
    points = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    x1 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    end = integrate_flow(lambda z, t: point_mixture_velocity(z, t, points, weights), x1, 400)[-1]
    dist = torch.cdist(end, points)
    assert float(dist.min(dim=1).values.max()) < 1e-3
    share = (dist.argmin(dim=1) == 1).double().mean()
    assert abs(float(share) - 0.75) < 0.03


def test_point_velocity_refuses_bad_input():
    x, pts = torch.zeros(3, 2), torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"t must be in \(0, 1\]"):
        point_mixture_velocity(x, 0.0, pts)
    with pytest.raises(ValueError, match="must share D"):
        point_mixture_velocity(x, 0.5, torch.zeros(2, 3))


def test_blob_velocity_of_one_blob_is_the_gaussian_closed_form():
    """One Gaussian blob N(mu, std^2 I): the field is linear in x (the closed form of the
    samplers' order test, tests/diffusion/test_rectified_flow.py), an independent check of the
    blob's posterior mean and of the weights' variance."""
    mu, std = torch.tensor([[0.4, -0.7]], dtype=torch.float64), 0.3
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for t in (1.0, 0.6, 0.2, 0.01):
        a, b = 1 - t, t
        want = -mu + (b - a * std**2) / (a**2 * std**2 + b**2) * (x - a * mu)
        torch.testing.assert_close(point_mixture_velocity(x, t, mu, std=std), want)


def test_blobs_carry_noise_to_their_spread():
    """Two blobs with std 0.3: many Euler steps end in the blobs with their spread; one step
    and two steps (diffusers' grid: 1 -> 0.001 -> 0) end near the mean, between the blobs."""
    points = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    x1 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    field = lambda z, t: point_mixture_velocity(z, t, points, std=0.3)  # noqa: E731
    end = integrate_flow(field, x1, 400)[-1]
    off = end - points[end[:, 0].gt(0).long()]  # from the nearer centre
    assert abs(float(off.std()) - 0.3) < 0.02
    assert abs(float(end[:, 0].gt(0).double().mean()) - 0.5) < 0.03
    for steps in (1, 2):
        few = integrate_flow(field, x1, steps)[-1]
        assert float(few.norm(dim=1).mean()) < 0.05
