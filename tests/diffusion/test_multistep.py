"""Multistep samplers (dpm++2m-sde, dpm++3m, unipc) and Karras spacing: closed forms on Gaussian
data, observed orders of convergence, goldens, generator draws, and diffusers equivalence."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from oasis_lib import SAMPLERS, NoiseSchedule, sample
from oasis_lib.diffusion import multistep as M
from oasis_lib.diffusion.multistep import (
    MULTISTEP_SAMPLERS,
    MultistepSolver,
    karras_sigmas,
    karras_timesteps,
    schedule_sigma_max,
)
from oasis_lib.diffusion.sampling import sampling_timesteps

SHAPE = (2, 1, 8, 8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def dummy(T):
    """The fixed 'network' of test_sampling's goldens: 0.1 x_t + 0.01 t / T."""
    return lambda x, t: 0.1 * x + 0.01 * (t.to(x.dtype) / T)[:, None, None, None]


def gaussian_x0(schedule, mu, c):
    """Exact E[x0 | x_t] for x0 ~ N(mu, c^2) per pixel: mu + sqrt(ab) c^2 (x_t - sqrt(ab) mu) /
    (ab c^2 + 1 - ab). An x0-prediction network that is exactly right."""
    def net(x, t):
        ab = schedule.f64("alpha_bar")[t.cpu()].view(-1, 1, 1, 1).to(x.dtype)
        return mu + ab.sqrt() * c * c / (ab * c * c + 1 - ab) * (x - ab.sqrt() * mu)
    return net


# --------------------------------------------------------------------------- Karras spacing
def test_karras_sigmas_is_edm_eq5():
    sig = torch.tensor(karras_sigmas(12, 0.002, 80.0, 7.0), dtype=torch.float64)
    assert sig[0].item() == pytest.approx(80.0, rel=1e-12)
    assert sig[-1].item() == pytest.approx(0.002, rel=1e-12)
    root = sig ** (1 / 7)  # linear in i
    torch.testing.assert_close(root.diff().diff(), torch.zeros(10, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert karras_sigmas(1, 0.1, 5.0) == [5.0]
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        karras_sigmas(5, 2.0, 1.0)
    with pytest.raises(ValueError, match="rho"):
        karras_sigmas(5, 0.1, 1.0, rho=0)


def test_karras_timesteps_nearest_in_log_sigma():
    s = NoiseSchedule("cosine", 1000)
    ab = s.f64("alpha_bar")
    log_sigma = 0.5 * (torch.log1p(-ab) - torch.log(ab))
    ts = karras_timesteps(s, 20)
    assert ts == sampling_timesteps(1000, 20, "karras", schedule=s)
    assert ts == [991, 988, 985, 980, 973, 963, 947, 925, 891, 838, 757, 640, 486, 324, 191, 101,
                  47, 18, 5, 0]
    target = torch.tensor(karras_sigmas(20, float(log_sigma[0].exp()), 80.0)).log()
    for t, ls in zip(ts, target, strict=True):  # each the nearest one (none collide here)
        d = (log_sigma - ls).abs()
        assert d[t] == d.min()
    # many steps: collisions at the low-noise end are pushed down, order stays strict
    many = karras_timesteps(s, 200)
    assert many[0] == 991
    assert many[-1] == 0
    assert all(a > b for a, b in zip(many, many[1:], strict=False))
    assert karras_timesteps(s, 1000) == list(range(999, -1, -1))
    # the schedule's own range (diffusers): the cosine schedule's clipped last beta puts sigma
    # 20291 at t = 999 (642 at t = 998), so most of 10 steps crowd at the top
    assert schedule_sigma_max(s) == pytest.approx(20291.3, rel=1e-5)
    full = karras_timesteps(s, 10, sigma_max=schedule_sigma_max(s))
    assert full == [999, 998, 997, 996, 995, 994, 983, 895, 259, 0]
    # zero terminal SNR: sigma_{T-1} = inf is skipped, the ramp starts at the largest finite one
    z = karras_timesteps(NoiseSchedule("linear", 60, zero_terminal_snr=True), 8)
    assert z == [58, 57, 54, 48, 31, 11, 2, 0]
    with pytest.raises(ValueError, match="steps must be"):
        karras_timesteps(s, 0)
    with pytest.raises(ValueError, match="needs the schedule"):
        sampling_timesteps(1000, 10, "karras")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("n", [10, 20])
def test_karras_timesteps_equal_diffusers(kind, n):
    """Our Karras steps are diffusers' ``use_karras_sigmas`` timesteps, rounded: with EDM's
    sigma_max = 80 (the default) those of EulerDiscreteScheduler(sigma_max=80), and with the
    schedule's own largest sigma those of DPMSolverMultistepScheduler (where no two of its
    timesteps coincide: on the linear schedule)."""
    diffusers = pytest.importorskip("diffusers")
    s = NoiseSchedule(kind, 1000)
    common = {"num_train_timesteps": 1000, "trained_betas": s.f64("betas").tolist(),
              "use_karras_sigmas": True}
    euler = diffusers.EulerDiscreteScheduler(**common, sigma_max=80.0)
    euler.set_timesteps(n)
    assert euler.timesteps.double().round().long().tolist() == karras_timesteps(s, n)
    if kind == "linear":
        dpm = diffusers.DPMSolverMultistepScheduler(**common)
        dpm.set_timesteps(n)
        assert dpm.timesteps.tolist() == karras_timesteps(s, n, sigma_max=schedule_sigma_max(s))


# --------------------------------------------------------------------------- orders of convergence
def _lambda_uniform_run(sampler, n, *, order=None, d2="taylor", start=8000, end=100, c=0.5):
    """Probability-flow ODE for x0 ~ N(0, c^2) on a grid uniform in lambda (T = 10000, so the
    nearest discrete timesteps are uniform to 1e-3), from t = start to t = end. The exact solution
    is x_t = sqrt(ab_t c^2 + 1 - ab_t) z. The first two steps (the multistep warm-up, of lower
    order) are reset to the exact solution, so the error measures the solver's own order."""
    s = NoiseSchedule("cosine", 10000)
    ab = s.f64("alpha_bar")
    lam = 0.5 * (ab.log() - torch.log1p(-ab))
    grid = torch.linspace(float(lam[start]), float(lam[end]), n + 1, dtype=torch.float64)
    ts = (grid[:, None] - lam[None]).abs().argmin(dim=1).tolist()
    z = torch.randn(4096, generator=_gen(0), dtype=torch.float64)
    exact = lambda t: (ab[t] * c * c + 1 - ab[t]).sqrt() * z  # noqa: E731
    net = gaussian_x0(s, 0.0, c)
    solver = MultistepSolver(sampler, s, ts, order=order)
    x = exact(ts[0])
    step3 = functools.partial(M.dpmpp_3m_step, d2_coefficient=d2)
    orig, M.dpmpp_3m_step = M.dpmpp_3m_step, step3
    try:
        for i, t in enumerate(ts[:-1]):
            x = solver.step(i, x, net(x.view(-1, 1, 1, 1), torch.full((4096,), t)).view(-1))
            if i < 2:
                x = exact(ts[i + 1])
    finally:
        M.dpmpp_3m_step = orig
    return (x - exact(end)).abs().max().item()


def _orders(**kw):
    errs = [_lambda_uniform_run(n=n, **kw) for n in (10, 20, 40, 80)]
    return errs, [math.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]


def test_observed_orders_of_convergence():
    """DPM-Solver++(2M) is second order, (3M) third, UniPC-2 (UniP-2 + UniC) third; the 3M with
    the authors'/diffusers' D2 coefficient ("lu2022") is only second order."""
    e2, p2 = _orders(sampler="dpm++3m", order=2)
    e3, p3 = _orders(sampler="dpm++3m")
    e3l, p3l = _orders(sampler="dpm++3m", d2="lu2022")
    eu2, pu2 = _orders(sampler="unipc", order=2)
    eu3, _ = _orders(sampler="unipc")
    assert p2[-1] == pytest.approx(2.0, abs=0.1)
    assert p3l[-1] == pytest.approx(2.0, abs=0.15)
    assert min(p3) > 2.8  # approaches 3 from above on this grid
    assert pu2[-1] == pytest.approx(3.0, abs=0.1)
    for a, b, c in zip(e3, e2, e3l, strict=True):  # 3M error falls faster than 2M
        assert a < b
        assert a < c
    assert e3[-1] < 0.02 * e2[-1]  # measured 0.011 at n = 80
    assert max(eu3) < 0.2 * min(e3[0], e2[0])  # UniPC-3 is far ahead at every n
    assert all(a < b for a, b in zip(eu3, e3, strict=True))


def test_dpmpp_3m_order2_is_dpmpp_2m():
    """The 3M solver capped at order 2 is the existing dpm++2m of sampling.py."""
    s = NoiseSchedule("cosine", 50)
    net = dummy(50)
    ts = sampling_timesteps(50, 10)
    x_T = torch.randn(SHAPE, generator=_gen(3), dtype=torch.float64)
    x, solver = x_T.clone(), MultistepSolver("dpm++3m", s, ts, order=2)
    for i, t in enumerate(ts):
        x0 = (net(x, torch.full((2,), t)))  # an x0-prediction network
        x = solver.step(i, x, x0)
    ref = sample(net, s, SHAPE, sampler="dpm++2m", steps=10, x_T=x_T, prediction_type="x0",
                 clip_x0=False, dtype=torch.float64, progress=False)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler", ["dpm++3m", "unipc"])
def test_more_accurate_than_ddim_on_gaussian_ode(sampler):
    """Through sample(): x_T -> c x_T / sqrt(ab_T c^2 + 1 - ab_T) is the exact ODE map."""
    s, c = NoiseSchedule("cosine", 1000), 0.5
    net = gaussian_x0(s, 0.0, c)
    x_T = torch.randn(SHAPE, generator=_gen(), dtype=torch.float64)
    exact = c * x_T / (s.alpha_bar_T * c * c + 1 - s.alpha_bar_T) ** 0.5
    err = {}
    for name in ("ddim", "dpm++2m", sampler):
        for n in (10, 20):
            x = sample(net, s, SHAPE, sampler=name, steps=n, x_T=x_T, clip_x0=False,
                       prediction_type="x0", dtype=torch.float64, progress=False)
            err[name, n] = (x - exact).abs().max().item()
    assert err[sampler, 10] < 0.3 * err["ddim", 10]
    assert err[sampler, 10] < err["dpm++2m", 10]
    assert err[sampler, 20] < 0.15 * err["ddim", 20]


# --------------------------------------------------------------------------- the SDE
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_sde_samples_the_gaussian_data_distribution(spacing):
    """x0 ~ N(mu, c^2) with the exact network: the reverse SDE's samples have mean mu and std c;
    the discretisation bias of the std shrinks with the steps (262,144 values: std error 7e-4)."""
    s, mu, c = NoiseSchedule("cosine", 1000), 0.3, 0.5
    net = gaussian_x0(s, mu, c)
    bias = {}
    for n in (20, 100):
        x = sample(net, s, (256, 1, 32, 32), sampler="dpm++2m-sde", steps=n, spacing=spacing,
                   prediction_type="x0", clip_x0=False, generator=_gen(1), dtype=torch.float64,
                   progress=False)
        assert x.mean().item() == pytest.approx(mu, abs=0.004)
        bias[n] = abs(x.std().item() - c)
    assert bias[100] < 0.005
    assert bias[100] < bias[20]


def test_sde_draws_in_documented_order():
    """x_T first, then one randn per step except the last, all of the sample's shape."""
    s = NoiseSchedule("cosine", 50)
    g = _gen(7)
    res = sample(dummy(50), s, SHAPE, sampler="dpm++2m-sde", steps=6, generator=g,
                 progress=False, return_intermediates=True)
    ref = _gen(7)
    x_T = torch.randn(SHAPE, generator=ref)
    for _ in range(5):
        torch.randn(SHAPE, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())
    torch.testing.assert_close(res.xs[0], x_T, rtol=0, atol=0)
    a = sample(dummy(50), s, SHAPE, sampler="dpm++2m-sde", steps=6, generator=_gen(7),
               progress=False)
    b = sample(dummy(50), s, SHAPE, sampler="dpm++2m-sde", steps=6, generator=_gen(8),
               progress=False)
    torch.testing.assert_close(a, res.images, rtol=0, atol=0)
    assert (a - b).abs().max() > 0.1
    g = _gen(7)  # the ODE solvers draw x_T only
    sample(dummy(50), s, SHAPE, sampler="unipc", steps=6, generator=g, progress=False)
    ref = _gen(7)
    torch.randn(SHAPE, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


# --------------------------------------------------------------------------- oracle, ZTSNR, goldens
class Oracle:
    """Knows x0: returns the exact eps, x0 or v for any x_t."""

    def __init__(self, s, x0, pt):
        self.s, self.x0, self.pt = s, x0, pt

    def __call__(self, x_t, t):
        ab = self.s.f64("alpha_bar")[t.cpu()].to(x_t.dtype).view(-1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        if self.pt == "eps":
            return eps
        return self.x0 if self.pt == "x0" else ab.sqrt() * eps - (1 - ab).sqrt() * self.x0


@pytest.mark.parametrize("sampler", MULTISTEP_SAMPLERS)
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_oracle_recovers_x0(sampler, spacing, prediction_type):
    s = NoiseSchedule("cosine", 100)
    x0 = torch.rand(SHAPE, generator=_gen(42)) * 1.8 - 0.9
    out = sample(Oracle(s, x0, prediction_type), s, SHAPE, sampler=sampler, steps=6,
                 spacing=spacing, prediction_type=prediction_type, generator=_gen(),
                 progress=False)
    torch.testing.assert_close(out, x0, rtol=0, atol=2e-4)


@pytest.mark.parametrize("sampler", MULTISTEP_SAMPLERS)
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_zero_terminal_snr_stays_finite(sampler, spacing):
    s = NoiseSchedule("linear", 60, zero_terminal_snr=True)
    x0 = torch.rand(SHAPE, generator=_gen(42)) * 1.8 - 0.9
    res = sample(Oracle(s, x0, "v"), s, SHAPE, sampler=sampler, steps=5, spacing=spacing,
                 prediction_type="v", generator=_gen(), progress=False,
                 return_intermediates=True)
    assert torch.isfinite(res.xs).all()
    torch.testing.assert_close(res.images, x0, rtol=0, atol=2e-5)
    eps_out = sample(Oracle(s, x0, "eps"), s, SHAPE, sampler=sampler, steps=5, spacing=spacing,
                     generator=_gen(), progress=False)
    assert torch.isfinite(eps_out).all()


# Golden numbers: dummy(50) on the cosine schedule, T = 50, shape [2, 1, 8, 8], seed 0
# (the same setting as test_sampling.GOLDEN).
GOLDEN = [
    ({"sampler": "dpm++2m-sde", "steps": 10}, 1.098000, 0.7245449),
    ({"sampler": "dpm++3m", "steps": 10}, 4.077563, 0.9950974),
    ({"sampler": "unipc", "steps": 10}, 4.086442, 0.9948407),
    ({"sampler": "dpm++2m-sde", "steps": 10, "spacing": "karras"}, -9.853134, 0.7467316),
    ({"sampler": "unipc", "steps": 10, "spacing": "karras"}, 4.095491, 0.9787914),
    ({"sampler": "dpm++3m", "steps": 10, "prediction_type": "v", "clip_x0": False},
     4.727535, 0.6796645),
]


@pytest.mark.parametrize(("cfg", "total", "mean_abs"), GOLDEN)
def test_golden_numbers(cfg, total, mean_abs):
    s = NoiseSchedule("cosine", 50)
    x = sample(dummy(50), s, SHAPE, generator=_gen(0), progress=False, **cfg)
    assert x.shape == SHAPE
    assert x.dtype == torch.float32
    assert x.sum().item() == pytest.approx(total, rel=1e-4)
    assert x.abs().mean().item() == pytest.approx(mean_abs, rel=1e-4)


def test_intermediates_and_nfe():
    s = NoiseSchedule("cosine", 20)
    for sampler in MULTISTEP_SAMPLERS:
        res = sample(dummy(20), s, SHAPE, sampler=sampler, steps=7, generator=_gen(1),
                     return_intermediates=True, progress=False)
        assert res.nfe == 7
        assert res.timesteps.tolist() == [*sampling_timesteps(20, 7), -1]
        torch.testing.assert_close(res.x0s[-2], res.images, rtol=0, atol=0)  # last step: x0


def test_bad_options():
    s = NoiseSchedule("cosine", 10)
    assert set(MULTISTEP_SAMPLERS) <= set(SAMPLERS)
    with pytest.raises(ValueError, match=r"unknown sampler 'euler'; choose one of \('dpm"):
        MultistepSolver("euler", s, [9, 5, 0])
    with pytest.raises(ValueError, match=r"order for 'dpm\+\+2m-sde' must be in 1..2"):
        MultistepSolver("dpm++2m-sde", s, [9, 5, 0], order=3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        MultistepSolver("unipc", s, [9, 9, 0])
    with pytest.raises(ValueError, match="unknown d2_coefficient 'half'; choose one of"):
        M.dpmpp_3m_step(torch.zeros(SHAPE), [torch.zeros(SHAPE)], [5], 3, s, d2_coefficient="half")
    solver = MultistepSolver("dpm++2m-sde", s, [9, 5, 0])
    with pytest.raises(ValueError, match="needs noise"):
        solver.step(0, torch.zeros(SHAPE), torch.zeros(SHAPE))
    with pytest.raises(ValueError, match="eta only applies"):
        sample(dummy(10), s, SHAPE, sampler="unipc", eta=0.5, progress=False)


# --------------------------------------------------------------------------- diffusers
def _diffusers_run(scheduler, T, n, *, stochastic=False, timesteps=None):
    """diffusers' loop with dummy(T) as a v-prediction network; with ``stochastic``, the noise
    is drawn in our documented order and passed as ``variance_noise``."""
    if timesteps is None:
        scheduler.set_timesteps(n)
    else:
        scheduler.set_timesteps(timesteps=timesteps)
    g, net = _gen(0), dummy(T)
    x = torch.randn(SHAPE, generator=g)
    ts = scheduler.timesteps.tolist()
    for i, t in enumerate(ts):
        kw = {}
        if stochastic:
            kw["variance_noise"] = (torch.randn(SHAPE, generator=g) if i < len(ts) - 1
                                    else torch.zeros(SHAPE))
        x = scheduler.step(net(x, torch.full((2,), t)), t, x, **kw).prev_sample
    return x, ts


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("n", [10, 20])
def test_equals_diffusers(n):
    """Float32 precision agreement with diffusers' DPMSolverMultistepScheduler (sde-dpmsolver++,
    midpoint) and UniPCMultistepScheduler (bh2, order 3), on our betas and trailing spacing."""
    diffusers = pytest.importorskip("diffusers")
    T, s = 1000, NoiseSchedule("cosine", 1000)
    common = {"num_train_timesteps": T, "trained_betas": s.f64("betas").tolist(),
              "prediction_type": "v_prediction", "timestep_spacing": "trailing",
              "final_sigmas_type": "zero", "lower_order_final": True}

    def ours(sampler, spacing="trailing"):
        return sample(dummy(T), s, SHAPE, sampler=sampler, steps=n, prediction_type="v",
                      clip_x0=False, spacing=spacing, generator=_gen(0), progress=False)

    sde = diffusers.DPMSolverMultistepScheduler(**common, solver_order=2, solver_type="midpoint",
                                                algorithm_type="sde-dpmsolver++")
    x, ts = _diffusers_run(sde, T, n, stochastic=True)
    assert ts == sampling_timesteps(T, n)
    torch.testing.assert_close(ours("dpm++2m-sde"), x, rtol=0, atol=1e-5)
    x, _ = _diffusers_run(diffusers.UniPCMultistepScheduler(**common, solver_order=3), T, n)
    torch.testing.assert_close(ours("unipc"), x, rtol=0, atol=1e-5)
    # Karras spacing: our timesteps handed to diffusers as custom timesteps (diffusers' own
    # use_karras_sigmas steps the continuous sigmas but calls the network at rounded timesteps)
    kt = karras_timesteps(s, n)
    x, ts = _diffusers_run(sde, T, n, stochastic=True, timesteps=kt)
    assert ts == kt
    torch.testing.assert_close(ours("dpm++2m-sde", "karras"), x, rtol=0, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dpmpp_3m_lu2022_equals_diffusers(monkeypatch):
    """diffusers' 3M (solver_order=3) is our 3M with the authors' D2 coefficient, to float32;
    ours (the Taylor coefficient) differs from it by the third-order term only."""
    diffusers = pytest.importorskip("diffusers")
    T, s, n = 1000, NoiseSchedule("cosine", 1000), 10
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=s.f64("betas").tolist(),
        prediction_type="v_prediction", timestep_spacing="trailing", solver_order=3,
        algorithm_type="dpmsolver++", lower_order_final=True, final_sigmas_type="zero")
    x, _ = _diffusers_run(sched, T, n)
    kw = {"sampler": "dpm++3m", "steps": n, "prediction_type": "v", "clip_x0": False,
          "progress": False}
    taylor = sample(dummy(T), s, SHAPE, generator=_gen(0), **kw)
    assert (taylor - x).abs().max() > 1e-3
    monkeypatch.setattr(M, "dpmpp_3m_step",
                        functools.partial(M.dpmpp_3m_step, d2_coefficient="lu2022"))
    lu = sample(dummy(T), s, SHAPE, generator=_gen(0), **kw)
    torch.testing.assert_close(lu, x, rtol=0, atol=1e-5)
