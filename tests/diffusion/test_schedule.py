"""Noise schedules against their closed forms, and the forward process q (Ho et al. 2020)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from oasis_lib.diffusion.schedule import SCHEDULE_KINDS, NoiseSchedule, extract

# Golden value: alpha_bar_T of the seed's quadratic schedule at T = 500.
QUADRATIC_500_ALPHA_BAR_T = 0.0270417


def _quiet(kind, T, **kw):
    return NoiseSchedule(kind, T, warn=False, **kw)


def _cosine_f(s, off=0.008):
    return np.cos((s + off) / (1 + off) * np.pi / 2) ** 2


def _sigmoid_f(s, start=-3.0, end=3.0, tau=1.0):
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    return (sig(end / tau) - sig((s * (end - start) + start) / tau)) / (
        sig(end / tau) - sig(start / tau))


@pytest.mark.parametrize("T", [50, 1000])
def test_linear_and_quadratic_alpha_bar_closed_form(T):
    lin = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
    quad = np.cumprod(1 - np.linspace(1e-2, 0.02**0.5, T) ** 2)
    np.testing.assert_allclose(_quiet("linear", T).alpha_bar.numpy(), lin, rtol=1e-6)
    np.testing.assert_allclose(_quiet("quadratic", T).alpha_bar.numpy(), quad, rtol=1e-6)
    assert _quiet("linear", T).betas[-1].item() == pytest.approx(0.02)  # Ho's values at any T


@pytest.mark.parametrize(("kind", "f"), [("cosine", _cosine_f), ("sigmoid", _sigmoid_f)])
@pytest.mark.parametrize("T", [50, 1000])
def test_continuous_alpha_bar_closed_form_with_clipping(kind, f, T):
    s = _quiet(kind, T)
    t = np.arange(T)
    expected = f((t + 1) / T) / f(0.0)
    ab = s.f64("alpha_bar").numpy()
    # Every step but the last follows f(t/T)/f(0); f(1) ~ 0 so the last beta is clipped at 0.999.
    np.testing.assert_allclose(ab[:-1], expected[:-1], rtol=1e-9)
    np.testing.assert_allclose(s.alpha_bar.numpy()[:-1], expected[:-1], rtol=1e-5)
    assert s.betas[-1].item() == pytest.approx(0.999)
    assert (s.betas[:-1] < 0.999).all()
    assert ab[-1] == pytest.approx(ab[-2] * 0.001, rel=1e-12)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_buffers_consistent_and_monotone(kind):
    s = _quiet(kind, 200)
    for name in ("betas", "alphas", "alpha_bar", "alpha_bar_prev", "snr", "posterior_variance",
                 "posterior_mean_coef1", "posterior_mean_coef2", "log_snr"):
        buf = getattr(s, name)
        assert buf.dtype == torch.float32
        assert buf.device.type == "cpu"
        assert buf.shape == (200,)
    ab = s.f64("alpha_bar")
    assert (ab[1:] < ab[:-1]).all()
    assert 0 < ab[-1]
    assert ab[0] < 1
    assert s.alpha_bar_prev[0].item() == 1.0
    torch.testing.assert_close(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    ab64 = s.f64("alpha_bar")
    torch.testing.assert_close(s.snr, (ab64 / (1 - ab64)).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(s.log_snr, (ab64 / (1 - ab64)).log().float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.sqrt_alpha_bar ** 2 + s.sqrt_one_minus_alpha_bar ** 2,
                               torch.ones(200))
    assert s.posterior_variance[0].item() == 0.0
    assert s.posterior_mean_coef1[0].item() == pytest.approx(1.0, abs=1e-6)
    assert s.posterior_mean_coef2[0].item() == 0.0
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]


def test_quadratic_500_terminal_snr_warning():
    with pytest.warns(UserWarning, match=r"16\.4% of the signal") as rec:
        s = NoiseSchedule("quadratic", 500)
    assert round(s.alpha_bar_T, 3) == 0.027
    assert s.alpha_bar_T == pytest.approx(QUADRATIC_500_ALPHA_BAR_T, abs=1e-7)
    assert s.terminal_signal == pytest.approx(0.1644, abs=1e-4)
    assert "alpha_bar_T = 0.0270" in str(rec[0].message)


def test_no_warning_for_low_terminal_snr_or_warn_false():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NoiseSchedule("cosine", 1000)
        NoiseSchedule("linear", 1000)
        NoiseSchedule("quadratic", 500, warn=False)
        NoiseSchedule("quadratic", 500, zero_terminal_snr=True)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_zero_terminal_snr(kind):
    base, z = _quiet(kind, 300), _quiet(kind, 300, zero_terminal_snr=True)
    assert z.alpha_bar_T == 0.0
    assert z.alpha_bar[-1].item() == 0.0
    assert z.f64("alpha_bar")[0].item() == pytest.approx(base.f64("alpha_bar")[0].item(),
                                                         rel=1e-12)
    # Lin et al. 2024 Alg. 1: sqrt(alpha_bar) is shifted and scaled (an affine map).
    old, new = base.f64("sqrt_alpha_bar"), z.f64("sqrt_alpha_bar")
    expect = (old - old[-1]) * old[0] / (old[0] - old[-1])
    torch.testing.assert_close(new, expect, rtol=1e-10, atol=1e-12)
    assert (z.f64("alpha_bar")[1:] < z.f64("alpha_bar")[:-1]).all()
    assert z.betas[-1].item() == 1.0
    assert z.snr[-1].item() == 0.0
    assert z.log_snr[-1].item() == -math.inf
    assert torch.isfinite(z.log_snr[:-1]).all()
    for name in ("posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
                 "posterior_mean_coef2"):
        assert torch.isfinite(getattr(z, name)).all(), name
    assert z.posterior_mean_coef2[-1].item() == 0.0  # x_T carries no information about x0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown schedule 'cos'") as e:
        NoiseSchedule("cos")
    assert all(k in str(e.value) for k in SCHEDULE_KINDS)
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule("cosine", 1)


def test_config_round_trip_and_repr():
    s = NoiseSchedule("cosine", 64, zero_terminal_snr=True)
    d = s.to_dict()
    assert d == {"kind": "cosine", "timesteps": 64, "zero_terminal_snr": True}
    s2 = NoiseSchedule.from_dict(d)
    assert s2 == s
    assert s2.T == s2.timesteps == len(s2) == 64
    torch.testing.assert_close(s2.betas, s.betas, rtol=0, atol=0)
    assert repr(_quiet("quadratic", 500)) == (
        "NoiseSchedule(kind='quadratic', T=500, zero_terminal_snr=False, beta=[0.0001, 0.02], "
        "alpha_bar_T=0.02704)")


def test_extract_shapes_device_dtype():
    a = torch.arange(10, dtype=torch.float64)
    x = torch.zeros(3, 1, 4, 4)
    out = extract(a, torch.tensor([0, 5, 9]), x)
    assert out.shape == (3, 1, 1, 1)
    assert out.dtype == torch.float32
    assert out.flatten().tolist() == [0.0, 5.0, 9.0]
    assert extract(a, 7, x).shape == (1, 1, 1, 1)
    assert extract(a, 7, x).item() == 7.0
    assert extract(a, torch.tensor([2, 3]), (2, 5)).shape == (2, 1)


def test_q_sample_equals_iterated_q_step_exactly_when_noise_composed():
    """x_t = sqrt(a_t) x_{t-1} + sqrt(b_t) e_t. The accumulated noise n_t = sqrt(a_t) n_{t-1} +
    sqrt(b_t) e_t has std s_t with s_t^2 = a_t s_{t-1}^2 + b_t = 1 - alpha_bar_t, so q_sample with
    eps = n_t / s_t must reproduce the chain (eq. 4 from eq. 2)."""
    s = _quiet("linear", 100)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    x, n, var = x0.clone(), torch.zeros_like(x0), 0.0
    for t in range(s.T):
        e = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x = s.q_step(x, t, e)
        a, b = float(s.f64("alphas")[t]), float(s.f64("betas")[t])
        n = a**0.5 * n + b**0.5 * e
        var = a * var + b
        assert var == pytest.approx(1 - float(s.f64("alpha_bar")[t]), rel=1e-12)
        if t in (0, 10, 99):
            eps = n / var**0.5
            tt = torch.full((4,), t, dtype=torch.long)
            torch.testing.assert_close(s.q_sample(x0, tt, eps), x, rtol=1e-12, atol=1e-12)


def test_q_sample_matches_iterated_q_step_in_distribution():
    s = _quiet("quadratic", 500)
    g = torch.Generator().manual_seed(0)
    n, x0 = 20000, 0.7
    x = torch.full((n,), x0, dtype=torch.float64)
    for t in range(s.T):
        x = s.q_step(x, t, torch.randn(n, generator=g, dtype=torch.float64))
    ab = s.alpha_bar_T
    t_last = torch.full((n,), s.T - 1, dtype=torch.long)
    closed = s.q_sample(torch.full((n,), x0, dtype=torch.float64), t_last,
                        torch.randn(n, generator=g, dtype=torch.float64))
    for sample in (x, closed):  # standard errors: mean 0.007, variance 0.01
        assert sample.mean().item() == pytest.approx(ab**0.5 * x0, abs=0.03)
        assert sample.var().item() == pytest.approx(1 - ab, abs=0.04)


def test_q_posterior_matches_bayes_rule_for_scalars():
    """q(x_{t-1} | x_t, x0) ∝ N(x_{t-1}; sqrt(ab_prev) x0, 1 - ab_prev) N(x_t; sqrt(a_t) x_{t-1},
    b_t): a product of Gaussians in x_{t-1}."""
    s = _quiet("cosine", 100)
    x0, xt = torch.tensor([0.3, -0.8, 0.1], dtype=torch.float64), torch.tensor(
        [1.2, 0.4, -2.0], dtype=torch.float64)
    for t in (1, 7, 50, 99):
        ab_prev, a, b = (float(s.f64(k)[t]) for k in ("alpha_bar_prev", "alphas", "betas"))
        prec = 1 / (1 - ab_prev) + a / b
        var = 1 / prec
        mean = var * (ab_prev**0.5 * x0 / (1 - ab_prev) + a**0.5 * xt / b)
        m, v, logv = s.q_posterior(x0, xt, torch.full((3,), t))
        torch.testing.assert_close(m, mean, rtol=1e-10, atol=1e-12)
        assert v.flatten()[0].item() == pytest.approx(var, rel=1e-10)
        assert logv.flatten()[0].item() == pytest.approx(math.log(var), rel=1e-10)
    m, v, _ = s.q_posterior(x0, xt, 0)  # t = 0: x_{t-1} is the data itself
    torch.testing.assert_close(m, x0, rtol=1e-12, atol=1e-12)
    assert v.abs().max().item() == 0.0


def test_q_sample_default_noise_uses_generator():
    s = _quiet("cosine", 10)
    x0, t = torch.zeros(2, 1, 2, 2), torch.tensor([3, 9])
    a = s.q_sample(x0, t, generator=torch.Generator().manual_seed(5))
    b = s.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(a, b)
