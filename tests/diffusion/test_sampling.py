"""The reverse process: DDPM, DDIM and DPM-Solver++(2M) against exact identities and goldens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib.diffusion.objectives import PREDICTION_TYPES, v_target
from oasis_lib.diffusion.processes import RectifiedFlowProcess
from oasis_lib.diffusion.samplers import get_sampler
from oasis_lib.diffusion.sampling import (
    SAMPLERS,
    SampleResult,
    ddim_sigma,
    p_mean_variance,
    sample,
    sampling_timesteps,
)
from oasis_lib.diffusion.schedule import NoiseSchedule

SHAPE = (2, 1, 8, 8)


class Dummy(nn.Module):
    """Fixed 'network' for golden numbers: 0.1 x_t + 0.01 t / T."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def forward(self, x, t):
        return 0.1 * x + 0.01 * (t.to(x.dtype) / self.T)[:, None, None, None]


class Oracle(nn.Module):
    """Knows x0 and answers exactly for any x_t: the true eps, x0 or v."""

    def __init__(self, schedule, x0, prediction_type):
        super().__init__()
        self.s, self.x0, self.pt = schedule, x0, prediction_type

    def forward(self, x_t, t):
        ab = self.s.f64("alpha_bar")[t.cpu()].to(x_t.dtype).view(-1, 1, 1, 1)
        x0 = self.x0.to(x_t.dtype)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        if self.pt == "eps":
            return eps
        return x0 if self.pt == "x0" else v_target(self.s, x0, eps, t)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _x0(shape=SHAPE):
    return torch.rand(shape, generator=_gen(42)) * 1.8 - 0.9


def test_sampling_timesteps():
    assert sampling_timesteps(1000, 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert sampling_timesteps(1000, 10, "leading") == list(range(900, -1, -100))
    assert sampling_timesteps(10, 3) == [9, 6, 2]  # round(10, 6.67, 3.33) - 1, as diffusers
    assert sampling_timesteps(7, 7) == sampling_timesteps(7, 7, "leading") == list(range(6, -1, -1))
    assert sampling_timesteps(100, 1) == [99]
    with pytest.raises(ValueError, match="steps"):
        sampling_timesteps(10, 11)
    with pytest.raises(ValueError, match="unknown spacing 'linspace'"):
        sampling_timesteps(10, 5, "linspace")


def test_ddim_sigma_eta1_is_posterior_std():
    s = NoiseSchedule("cosine", 100)
    for t in (1, 50, 99):
        assert ddim_sigma(s, t, t - 1, 1.0) ** 2 == pytest.approx(
            float(s.f64("posterior_variance")[t]), rel=1e-12)
    assert ddim_sigma(s, 0, -1, 1.0) == 0.0


@pytest.mark.parametrize("clip_x0", [True, False])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_ddim_eta1_all_steps_equals_ddpm_posterior(clip_x0, dtype, tol):
    s = NoiseSchedule("cosine", 100)
    kw = {"clip_x0": clip_x0, "dtype": dtype, "progress": False}
    ddpm = sample(Dummy(100), s, SHAPE, sampler="ddpm", generator=_gen(3), **kw)
    ddim = sample(Dummy(100), s, SHAPE, sampler="ddim", steps=100, eta=1.0, generator=_gen(3),
                  **kw)
    assert ddpm.dtype == dtype
    torch.testing.assert_close(ddim, ddpm, rtol=tol, atol=tol)
    assert (ddpm - sample(Dummy(100), s, SHAPE, sampler="ddpm", generator=_gen(4), **kw)
            ).abs().max() > 0.1


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("ddim", 5), ("dpm++2m", 5)])
@pytest.mark.parametrize("clip_x0", [True, False])
def test_oracle_recovers_x0(prediction_type, sampler, steps, clip_x0):
    s = NoiseSchedule("cosine", 100)
    x0 = _x0()
    out = sample(Oracle(s, x0, prediction_type), s, SHAPE, sampler=sampler, steps=steps,
                 prediction_type=prediction_type, clip_x0=clip_x0, generator=_gen(), progress=False)
    torch.testing.assert_close(out, x0, rtol=0, atol=2e-4)


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("ddim", 4), ("dpm++2m", 4)])
def test_v_oracle_with_zero_terminal_snr(sampler, steps):
    s = NoiseSchedule("linear", 60, zero_terminal_snr=True)
    x0 = _x0()
    res = sample(Oracle(s, x0, "v"), s, SHAPE, sampler=sampler, steps=steps, prediction_type="v",
                 generator=_gen(), progress=False, return_intermediates=True)
    assert torch.isfinite(res.xs).all()
    assert torch.isfinite(res.x0s).all()
    torch.testing.assert_close(res.x0s[0], x0, rtol=0, atol=1e-5)  # exact even at alpha_bar = 0
    torch.testing.assert_close(res.images, x0, rtol=0, atol=2e-5)
    # eps-prediction is ill posed at alpha_bar_T = 0 but stays finite
    eps_out = sample(Oracle(s, x0, "eps"), s, SHAPE, sampler=sampler, steps=steps,
                     generator=_gen(), progress=False)
    assert torch.isfinite(eps_out).all()


def test_dpmpp_2m_is_more_accurate_than_ddim_on_gaussian_ode():
    """x0 ~ N(0, c^2): E[eps | x_t] = sqrt(1-ab) x_t / (ab c^2 + 1 - ab) is the exact network and
    the probability-flow ODE maps x_T to c x_T / sqrt(ab_T c^2 + 1 - ab_T)."""
    s, c = NoiseSchedule("cosine", 1000), 0.5

    def gauss(x, t):
        ab = s.f64("alpha_bar")[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() / (ab * c * c + 1 - ab) * x

    x_T = torch.randn(SHAPE, generator=_gen(), dtype=torch.float64)
    exact = c * x_T / (s.alpha_bar_T * c * c + 1 - s.alpha_bar_T) ** 0.5
    err = {}
    for sampler in ("ddim", "dpm++2m"):
        for n in (10, 20):
            x = sample(gauss, s, SHAPE, sampler=sampler, steps=n, x_T=x_T, clip_x0=False,
                       dtype=torch.float64, progress=False)
            err[sampler, n] = (x - exact).abs().max().item()
    assert err["ddim", 20] == pytest.approx(err["ddim", 10] / 2, rel=0.1)  # first order
    assert err["dpm++2m", 10] < 0.4 * err["ddim", 10]
    assert err["dpm++2m", 20] < 0.1 * err["ddim", 20]


# Golden numbers: Dummy(50) on the cosine schedule, T = 50, shape [2, 1, 8, 8], seed 0.
GOLDEN = [
    ({"sampler": "ddpm"}, -6.562161, 0.6747341),
    ({"sampler": "ddpm", "ddpm_variance": "beta"}, -7.196233, 0.6664111),
    ({"sampler": "ddim", "steps": 10}, 4.068976, 0.9956703),
    ({"sampler": "ddim", "steps": 10, "eta": 1.0}, 3.785242, 0.6968839),
    ({"sampler": "dpm++2m", "steps": 10}, 4.077005, 0.9950613),
    ({"sampler": "ddim", "steps": 10, "prediction_type": "v", "clip_x0": False},
     4.168107, 0.6133351),
    ({"sampler": "dpm++2m", "steps": 10, "prediction_type": "v", "clip_x0": False},
     4.746533, 0.6813729),
    ({"sampler": "ddpm", "prediction_type": "x0", "clip_x0": False}, -0.03092165, 0.004024330),
]


@pytest.mark.parametrize(("cfg", "total", "mean_abs"), GOLDEN)
def test_golden_numbers(cfg, total, mean_abs):
    s = NoiseSchedule("cosine", 50)
    x = sample(Dummy(50), s, SHAPE, generator=_gen(0), progress=False, **cfg)
    assert x.shape == SHAPE
    assert x.device.type == "cpu"
    assert x.dtype == torch.float32
    assert x.sum().item() == pytest.approx(total, rel=1e-4)
    assert x.abs().mean().item() == pytest.approx(mean_abs, rel=1e-4)


class TrainModeNet(nn.Module):
    def __init__(self, fail=False):
        super().__init__()
        self.bn, self.drop, self.fail = nn.BatchNorm2d(1), nn.Dropout(0.5), fail
        self.frozen = nn.BatchNorm2d(1).eval()  # a submodule deliberately in eval mode
        self.seen = []

    def forward(self, x, t):
        self.seen.append((self.training, self.bn.training, self.drop.training))
        if self.fail:
            raise RuntimeError("boom")
        return self.drop(self.bn(x)) * 0.0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_eval_mode_during_sampling_and_restored(sampler):
    net = TrainModeNet().train()
    net.frozen.eval()
    stats = net.bn.running_mean.clone()
    process = (NoiseSchedule("cosine", 10) if "vp" in get_sampler(sampler).processes
               else RectifiedFlowProcess())
    sample(net, process, SHAPE, sampler=sampler, generator=_gen(), progress=False)
    assert net.seen
    assert all(not any(modes) for modes in net.seen)
    assert net.training
    assert net.bn.training
    assert net.drop.training
    assert not net.frozen.training
    assert torch.equal(net.bn.running_mean, stats)  # BN statistics untouched
    bad = TrainModeNet(fail=True).train()
    with pytest.raises(RuntimeError, match="boom"):
        sample(bad, NoiseSchedule("cosine", 10), SHAPE, progress=False)
    assert bad.training
    assert bad.bn.training


@pytest.mark.parametrize(("sampler", "steps", "every"), [("ddim", 10, 3), ("ddpm", None, 4),
                                                         ("dpm++2m", 7, 1)])
def test_intermediates(sampler, steps, every):
    s = NoiseSchedule("cosine", 20)
    x_T = torch.randn(SHAPE, generator=_gen(9))
    res = sample(Dummy(20), s, SHAPE, sampler=sampler, steps=steps, x_T=x_T, every=every,
                 return_intermediates=True, progress=False, generator=_gen(1))
    assert isinstance(res, SampleResult)
    ts = sampling_timesteps(20, steps or 20)
    recorded = ts[::every]
    assert res.timesteps.tolist() == [*recorded, -1]
    assert res.nfe == len(ts)
    K = len(recorded) + 1
    assert res.xs.shape == res.x0s.shape == (K, *SHAPE)
    assert res.xs.device.type == "cpu"
    assert res.xs.dtype == torch.float32
    torch.testing.assert_close(res.xs[0], x_T, rtol=0, atol=0)
    torch.testing.assert_close(res.xs[-1], res.images.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(res.x0s[-1], res.images.cpu(), rtol=0, atol=0)
    assert res.x0s[:-1].abs().max() <= 1.0  # clipped x0 predictions
    plain = sample(Dummy(20), s, SHAPE, sampler=sampler, steps=steps, x_T=x_T, progress=False,
                   generator=_gen(1))
    torch.testing.assert_close(plain, res.images, rtol=0, atol=0)
    if every == 1:  # the x0 recorded at step k is what the step itself turned into x_{k+1}
        torch.testing.assert_close(res.x0s[-2], res.images, rtol=0, atol=0)


def test_generator_reproducibility_and_x_T():
    s = NoiseSchedule("cosine", 30)
    for cfg in ({"sampler": "ddpm"}, {"sampler": "ddim", "steps": 6, "eta": 0.5}):
        a = sample(Dummy(30), s, SHAPE, generator=_gen(1), progress=False, **cfg)
        b = sample(Dummy(30), s, SHAPE, generator=_gen(1), progress=False, **cfg)
        c = sample(Dummy(30), s, SHAPE, generator=_gen(2), progress=False, **cfg)
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
    # x_T is the first draw: passing it explicitly gives the same deterministic DDIM result
    x_T = torch.randn(SHAPE, generator=_gen(5))
    a = sample(Dummy(30), s, SHAPE, steps=6, generator=_gen(5), progress=False)
    b = sample(Dummy(30), s, SHAPE, steps=6, x_T=x_T, progress=False)
    assert torch.equal(a, b)
    a.add_(1.0)  # a normal tensor, not an inference tensor


def test_p_mean_variance_variances():
    s = NoiseSchedule("linear", 40, warn=False)
    x_t = torch.randn(SHAPE, generator=_gen())
    out = torch.zeros(SHAPE)
    _, var_post, _, x0 = p_mean_variance(out, x_t, 10, s, "eps", False)
    _, var_beta, log_beta, _ = p_mean_variance(out, x_t, 10, s, "eps", False, variance="beta")
    assert var_post.item() == pytest.approx(float(s.f64("posterior_variance")[10]), rel=1e-6)
    assert var_beta.item() == pytest.approx(float(s.f64("betas")[10]), rel=1e-6)
    assert log_beta.exp().item() == pytest.approx(var_beta.item(), rel=1e-6)
    torch.testing.assert_close(x0, x_t / s.sqrt_alpha_bar[10])


def test_bad_options():
    s = NoiseSchedule("cosine", 10)
    m = Dummy(10)
    cases = [
        ({"sampler": "euler"}, r"unknown sampler 'euler'; choose one of \('ddpm', 'ddim'"),
        ({"prediction_type": "score"}, r"unknown prediction_type 'score'"),
        ({"sampler": "ddpm", "ddpm_variance": "learned"}, r"unknown ddpm_variance 'learned'.*beta"),
        ({"sampler": "ddpm", "steps": 5}, r"uses all T=10 steps"),
        ({"eta": 1.5}, r"eta must be in \[0, 1\]"),
        ({"sampler": "dpm++2m", "eta": 0.5}, r"eta only applies"),
        ({"steps": 0}, r"steps must be"),
        ({"every": 0}, r"every"),
        ({"x_T": torch.zeros(1, 1, 8, 8)}, r"x_T has shape"),
        ({"spacing": "middle"}, r"unknown spacing"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            sample(m, s, SHAPE, progress=False, **kw)
    with pytest.raises(ValueError, match="unknown ddpm_variance"):
        p_mean_variance(torch.zeros(SHAPE), torch.zeros(SHAPE), 3, s, variance="fixed")
