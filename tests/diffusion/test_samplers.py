"""The sampler protocol and registry: declared capabilities that hold, one place for each rule,
and the worked example (Euler on the VP probability-flow ODE) against its closed form, DDIM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib.diffusion.processes import RectifiedFlowProcess
from oasis_lib.diffusion.samplers import (
    SAMPLER_REGISTRY,
    SAMPLERS,
    Sampler,
    display_name,
    get_sampler,
    make_sampler,
    register_sampler,
    sampler_names,
    samplers_for,
    sampling_timesteps,
)
from oasis_lib.diffusion.samplers.euler import EulerODESampler
from oasis_lib.diffusion.samplers.flow import FlowEulerSampler
from oasis_lib.diffusion.sampling import SAMPLERS as SAMPLING_SAMPLERS
from oasis_lib.diffusion.sampling import ddim_step, sample
from oasis_lib.diffusion.schedule import NoiseSchedule

SHAPE = (2, 1, 8, 8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Dummy(nn.Module):
    """A fixed 'network' that depends on x and t: 0.1 x_t + 0.01 t / T."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def forward(self, x, t):
        return 0.1 * x + 0.01 * (t.to(x.dtype) / self.T)[:, None, None, None]


# --------------------------------------------------------------------------- the registry
def test_samplers_are_the_registry_in_order():
    assert SAMPLERS == tuple(SAMPLER_REGISTRY) == SAMPLING_SAMPLERS
    assert SAMPLERS[:6] == ("ddpm", "ddim", "dpm++2m", "dpm++2m-sde", "dpm++3m", "unipc")
    assert "euler-ode" in SAMPLERS
    for name in SAMPLERS:
        assert get_sampler(name).name == name


def test_unknown_sampler_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown sampler 'heun'; choose one of \('ddpm', 'ddim'"):
        get_sampler("heun")
    with pytest.raises(ValueError, match="unknown sampler capability 'fast'"):
        sampler_names(fast=True)


def test_declared_capabilities():
    assert sampler_names(uses_eta=True) == ("ddim",)
    assert sampler_names(needs_every_step=True) == ("ddpm",)
    assert sampler_names(can_inpaint=True) == ("ddpm",)  # RePaint runs DDPM steps
    assert sampler_names(stochastic=True) == ("ddpm", "dpm++2m-sde")
    orders = {name: get_sampler(name).order for name in SAMPLERS}
    assert orders == {"ddpm": 1, "ddim": 1, "dpm++2m": 2, "dpm++2m-sde": 2, "dpm++3m": 3,
                      "unipc": 3, "euler-ode": 1, "flow-euler": 1, "flow-heun": 2}
    assert samplers_for("rectified-flow") == ("flow-euler", "flow-heun")
    assert samplers_for("vp") == SAMPLERS[:7]


def test_display_names_are_the_registry_ones():
    from oasis_lib.teaching.figures import SAMPLER_LABELS

    assert display_name("dpm++2m") == "DPM-Solver++(2M)"
    names = [display_name(n) for n in SAMPLERS]
    assert len(set(names)) == len(names)
    assert all(names)
    assert SAMPLER_LABELS == {n: display_name(n) for n in samplers_for("vp") if n != "ddpm"}


def test_register_refuses_duplicates_and_non_samplers():
    class Other(Sampler):
        name, display_name = "ddim", "another DDIM"

    with pytest.raises(ValueError, match="'ddim' is already registered"):
        register_sampler(Other)
    with pytest.raises(TypeError, match="takes a Sampler subclass"):
        register_sampler(object)

    class Nameless(Sampler):
        pass

    with pytest.raises(ValueError, match="needs a name and a display_name"):
        register_sampler(Nameless)
    assert SAMPLER_REGISTRY["ddim"] is not Other


def test_a_sampler_registered_from_outside_runs_in_sample():
    """Adding a sampler: a class with ``step`` and a registry entry; sample() needs nothing else.
    Here x0-only DDIM (x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps) written from scratch."""

    @register_sampler
    class MyDDIM(Sampler):
        name, display_name = "test-my-ddim", "my DDIM"

        def step(self, model_output, i, x, generator=None):
            t, t_prev = self.timestep(i)
            x0, eps = self.x0_eps(model_output, x, t)
            ab_prev = self.schedule.alpha_bar_at(t_prev)
            return ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps, x0

    try:
        s = NoiseSchedule("cosine", 40)
        kw = {"steps": 7, "generator": _gen(1), "progress": False, "dtype": torch.float64}
        mine = sample(Dummy(40), s, SHAPE, sampler="test-my-ddim", **kw)
        kw["generator"] = _gen(1)
        torch.testing.assert_close(mine, sample(Dummy(40), s, SHAPE, sampler="ddim", **kw),
                                   rtol=0, atol=1e-12)
    finally:
        del SAMPLER_REGISTRY["test-my-ddim"]


# --------------------------------------------------------------------------- the protocol
def test_set_timesteps_and_the_every_step_rule():
    s = NoiseSchedule("cosine", 30)
    ddim = make_sampler("ddim", s)
    assert ddim.set_timesteps(6, spacing="leading") == sampling_timesteps(30, 6, "leading")
    assert ddim.timestep(5) == (0, -1)  # the last step goes to clean data
    assert len(ddim.set_timesteps()) == 30  # the default, min(T, 50)
    ddpm = make_sampler("ddpm", s)
    assert ddpm.set_timesteps() == list(range(29, -1, -1))
    assert get_sampler("ddpm").accepts_steps(30, 30)
    assert get_sampler("ddpm").accepts_steps(None, 30)
    assert not get_sampler("ddpm").accepts_steps(10, 30)
    assert all(get_sampler(n).accepts_steps(10, 30) for n in SAMPLERS if n != "ddpm")
    assert FlowEulerSampler.resolve_steps(None) == 20
    with pytest.raises(ValueError, match="'ddpm' uses all T=30 steps; got steps=10"):
        ddpm.set_timesteps(10)


def test_step_before_set_timesteps_and_eta_where_unread():
    s = NoiseSchedule("cosine", 10)
    with pytest.raises(RuntimeError, match="needs set_timesteps"):
        make_sampler("euler-ode", s).step(torch.zeros(SHAPE), 0, torch.zeros(SHAPE))
    with pytest.raises(ValueError, match="eta only applies to sampler='ddim', not 'euler-ode'"):
        make_sampler("euler-ode", s, eta=0.5)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        make_sampler("ddim", s, eta=1.5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_stochastic_means_the_generator_matters(sampler):
    """The declaration is true: with x_T fixed, a deterministic sampler ignores the generator and
    a stochastic one does not."""
    s = (NoiseSchedule("cosine", 12) if "vp" in get_sampler(sampler).processes
         else RectifiedFlowProcess())
    x_T = torch.randn(SHAPE, generator=_gen(9))
    steps = None if get_sampler(sampler).needs_every_step else 5
    a, b = (sample(Dummy(12), s, SHAPE, sampler=sampler, steps=steps, x_T=x_T,
                   generator=_gen(seed), progress=False) for seed in (1, 2))
    assert torch.equal(a, b) != get_sampler(sampler).stochastic


# --------------------------------------------------------------------------- the worked example
@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
@pytest.mark.parametrize(("kind", "zero_snr", "spacing"), [
    ("cosine", False, "trailing"), ("linear", False, "leading"), ("linear", False, "karras"),
    ("linear", True, "trailing"),  # alpha_bar = 0 at t = T-1: sigma = inf, the limit step
])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-4)])
def test_euler_on_the_vp_ode_is_ddim_eta0(prediction_type, kind, zero_snr, spacing, dtype, tol):
    """Karras et al. 2022: in y = x / sqrt(ab), sigma = sqrt((1 - ab) / ab) the Euler step of
    the probability-flow ODE is DDIM's (eta = 0) update, so the two chains agree to rounding.
    float32: y is up to 1 / sqrt(ab_59) = 1218 times larger than x on the cosine schedule, and so
    is its rounding (measured 4e-5); float64 shows the identity itself."""
    s = NoiseSchedule(kind, 60, zero_terminal_snr=zero_snr, warn=False)
    kw = {"steps": 8, "spacing": spacing, "prediction_type": prediction_type,
          "clip_x0": prediction_type != "x0", "progress": False, "dtype": dtype,
          "return_intermediates": True}
    euler = sample(Dummy(60), s, SHAPE, sampler="euler-ode", generator=_gen(5), **kw)
    ddim = sample(Dummy(60), s, SHAPE, sampler="ddim", generator=_gen(5), **kw)
    assert torch.isfinite(euler.images).all()
    torch.testing.assert_close(euler.xs.double(), ddim.xs.double(), rtol=tol, atol=tol)
    torch.testing.assert_close(euler.images, ddim.images, rtol=tol, atol=tol)


def test_one_euler_step_is_algorithm_1():
    """A single step against Karras et al. Algorithm 1 lines 4-5 written out in sigma: from
    t = 30 to t = 10, d = (y - D) / sigma, y' = y + (sigma' - sigma) d, x' = sqrt(ab') y'."""
    s = NoiseSchedule("cosine", 60)
    x = torch.randn(SHAPE, generator=_gen(3), dtype=torch.float64)
    out = 0.3 * x  # an eps prediction
    euler = EulerODESampler(s, clip_x0=False)
    euler.timesteps = [30, 10]
    x_new, x0 = euler.step(out, 0, x)
    ab, ab_prev = s.alpha_bar_at(30), s.alpha_bar_at(10)
    sig, sig_prev = ((1 - ab) / ab) ** 0.5, ((1 - ab_prev) / ab_prev) ** 0.5
    y = x / ab**0.5
    denoised = (x - (1 - ab) ** 0.5 * out) / ab**0.5
    want = ab_prev**0.5 * (y + (sig_prev - sig) * (y - denoised) / sig)
    torch.testing.assert_close(x_new, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_new, ddim_step(out, x, 30, 10, s, clip_x0=False)[0],
                               rtol=0, atol=1e-12)
