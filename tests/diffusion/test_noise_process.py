"""The noise process behind the pipeline (issue 22, item 1).

(a) ``VPProcess`` is today's VP maths, bitwise: q_sample, the targets, the min-SNR weights, the
validation grid, the training draw of t, the sampling grid, the conversions; the loss, the
guidance rescale and the pipeline give the same numbers through it.
(b) The interface carries flow matching: a minimal rectified-flow process defined here
(x_t = (1 - t) x0 + t eps, target eps - x0, continuous t in [0, 1]) trains through the
unchanged ``diffusion_loss`` and ``DiffusionPipeline.loss`` (one optimizer step of a tiny
model), and an Euler loop over its ``sampling_times`` with the exact velocity field of Gaussian
data lands on the data's mean and variance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oasis_lib.config import DiffusionConfig, TrainConfig
from oasis_lib.diffusion.flow_matching import (
    euler_flow_step,
    flow_forward,
    flow_sigmas,
    flow_velocity,
    sample_flow_time,
)
from oasis_lib.diffusion.guidance import ClassifierFreeGuidance, rescale_guidance
from oasis_lib.diffusion.objectives import diffusion_loss, validation_draws
from oasis_lib.diffusion.parameterization import (
    PREDICTION_TYPES,
    min_snr_weight,
    model_output_to_x0_eps,
    training_target,
)
from oasis_lib.diffusion.pipeline import DiffusionPipeline
from oasis_lib.diffusion.processes import (
    NOISE_PROCESSES,
    NoiseProcess,
    VPProcess,
    as_process,
    get_noise_process,
    register_noise_process,
)
from oasis_lib.diffusion.processes.registry import NOISE_PROCESS_REGISTRY
from oasis_lib.diffusion.samplers import sampling_timesteps
from oasis_lib.diffusion.schedule import NoiseSchedule
from oasis_lib.models.factory import build_pipeline
from oasis_lib.training.draws import StepDraws

T = 50


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule("cosine", T)


def _data(seed: int = 0, b: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    g = _gen(seed)
    x0 = torch.rand(b, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(b, 1, 8, 8, generator=g)
    t = torch.randint(0, T, (b,), generator=g)
    return x0, noise, t


class TinyNet(nn.Module):
    """A 1x1 convolution plus a learned multiple of t: uses x and t, any dtype of t."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.time = nn.Parameter(torch.tensor(0.1))
        self.seen_t: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.seen_t.append(t)
        return self.conv(x) + self.time * t.to(x.dtype).view(-1, 1, 1, 1) / T


# --------------------------------------------------------------------------- (a) VP, bitwise
def test_vp_forward_target_weight_and_conversions_are_todays_functions(schedule):
    vp = VPProcess(schedule)
    x0, noise, t = _data()
    assert torch.equal(vp.forward(x0, t, noise), schedule.q_sample(x0, t, noise))
    x_t = schedule.q_sample(x0, t, noise)
    out = torch.randn(x0.shape, generator=_gen(3))
    for pt in PREDICTION_TYPES:
        assert torch.equal(vp.training_target(x0, noise, t, prediction_type=pt),
                           training_target(schedule, x0, noise, t, pt))
        assert torch.equal(vp.loss_weight(t, prediction_type=pt, min_snr_gamma=5.0),
                           min_snr_weight(schedule, t, 5.0, pt))
        want = model_output_to_x0_eps(schedule, out, x_t, t, pt)
        got = vp.split_output(out, x_t, t, prediction_type=pt)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert torch.equal(vp.to_x0(out, x_t, t, prediction_type=pt), want[0])
        assert torch.equal(vp.to_eps(out, x_t, t, prediction_type=pt), want[1])
        # to_output inverts to_x0 (float64: exact up to rounding)
        x0d, xtd = x0.double(), x_t.double()
        back = vp.to_x0(vp.to_output(x0d, xtd, t, prediction_type=pt), xtd, t,
                        prediction_type=pt)
        torch.testing.assert_close(back, x0d, rtol=0, atol=1e-9)
    assert vp.loss_weight(t, prediction_type="v") is None  # no gamma: unweighted


def test_vp_draws_and_grids_are_todays(schedule):
    vp = VPProcess(schedule)
    assert torch.equal(vp.sample_time(7, generator=_gen(4)),
                       torch.randint(0, T, (7,), generator=_gen(4)))
    u = StepDraws(3, 11).uniform(9, "timestep")
    assert torch.equal(vp.time_from_uniform(u), StepDraws(3, 11).timesteps(9, T))
    for spacing in ("trailing", "leading", "karras"):
        assert vp.sampling_times(10, spacing=spacing) == sampling_timesteps(
            T, 10, spacing, schedule=schedule)
    # the validation grid as objectives.validation_draws wrote it before processes existed
    for b in (1, 7, 64):
        shape = (b, 1, 4, 4)
        t_old = torch.div(torch.arange(b) * T + T // 2, b, rounding_mode="floor")
        t_old = t_old.clamp(max=T - 1).long()
        noise_old = torch.randn(shape, generator=_gen(5), dtype=torch.float32)
        for t_new, noise_new in (vp.validation_draws(shape, seed=5),
                                 validation_draws(schedule, shape, seed=5)):
            assert torch.equal(t_new, t_old)
            assert t_new.dtype == torch.long
            assert torch.equal(noise_new, noise_old)


@pytest.mark.parametrize("pt", PREDICTION_TYPES)
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_diffusion_loss_through_the_process_is_the_old_loss(schedule, pt, gamma):
    torch.manual_seed(0)
    net = TinyNet()
    x0 = _data()[0]
    # the loss as objectives computed it before processes existed (Algorithm 1 of Ho et al.)
    g = _gen(8)
    t = torch.randint(0, T, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float32)
    per = F.mse_loss(net(schedule.q_sample(x0, t, noise), t),
                     training_target(schedule, x0, noise, t, pt),
                     reduction="none").reshape(len(x0), -1).mean(dim=1)
    if gamma is not None:
        per = per * min_snr_weight(schedule, t, gamma, pt)
    old = per.mean()
    for process in (schedule, VPProcess(schedule)):
        new = diffusion_loss(net, process, x0, prediction_type=pt, min_snr_gamma=gamma,
                             generator=_gen(8))
        assert torch.equal(new, old)


def test_guidance_rescale_through_the_process_is_unchanged(schedule):
    def net(x, t, c):
        return x * (1 + c.view(-1, 1, 1, 1)) + 0.01 * t.view(-1, 1, 1, 1)

    x_t, t = _data()[1], _data()[2]
    cond, null = torch.full((len(x_t),), 0.5), torch.zeros(len(x_t))
    outs = [ClassifierFreeGuidance(net, cond, null, scale=3.0, rescale=0.7, **kw)(x_t, t)
            for kw in ({"schedule": schedule}, {"process": VPProcess(schedule)})]
    assert torch.equal(outs[0], outs[1])


def test_registry_config_and_pipeline(schedule):
    assert NOISE_PROCESSES[0] == "vp"
    assert get_noise_process("vp") is VPProcess
    with pytest.raises(ValueError, match=r"unknown noise process 'flow'; choose one of \('vp',"):
        get_noise_process("flow")
    with pytest.raises(ValueError, match="unknown noise_process 'flow'"):
        DiffusionConfig(noise_process="flow").validate()
    with pytest.raises(ValueError, match="already registered"):
        register_noise_process(type("OtherVP", (VPProcess,), {}))
    with pytest.raises(TypeError):
        register_noise_process(int)
    vp = VPProcess(schedule)
    assert as_process(vp) is vp
    assert as_process(schedule).schedule is schedule
    assert VPProcess(NoiseSchedule("cosine", T)) == vp
    assert vp != VPProcess(NoiseSchedule("cosine", T + 1))
    pipe = build_pipeline(TrainConfig.from_preset("tiny"), warn=False)
    assert isinstance(pipe.process, VPProcess)
    assert pipe.process.schedule is pipe.schedule
    pipe.schedule = NoiseSchedule("linear", 20, warn=False)  # the VP process follows it
    assert pipe.process.schedule is pipe.schedule


# --------------------------------------------------------------------------- (b) flow matching
def _per_sample(t: Tensor | float, x: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        return torch.tensor(float(t), dtype=x.dtype)
    return t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class RectifiedFlow(NoiseProcess):
    """Rectified flow (Liu et al. 2022; flow matching, Lipman et al. 2023) in the form the next
    issue will implement, on the maths of :mod:`oasis_lib.diffusion.flow_matching`:
    x_t = (1 - t) x0 + t eps, the network predicts the velocity v = eps - x0, t ~ U(0, 1)
    continuous (t = 0 data, t = 1 noise), diffusers' FlowMatchEuler grid for sampling."""

    name = "rectified-flow-test"
    prediction_types = ("velocity",)
    discrete_time = False

    def sample_time(self, n, *, generator=None):
        return sample_flow_time(n, generator=generator)

    def time_from_uniform(self, u):
        return u.to(torch.float32)

    def forward(self, x0, t, noise):
        return flow_forward(x0, t, noise)

    def training_target(self, x0, noise, t, *, prediction_type):
        self.check_prediction_type(prediction_type)
        return flow_velocity(x0, noise)

    def split_output(self, output, x_t, t, *, prediction_type):
        t = _per_sample(t, x_t)
        return x_t - t * output, x_t + (1 - t) * output

    def to_output(self, x0, x_t, t, *, prediction_type):
        return (x_t - x0) / _per_sample(t, x_t)

    def sampling_times(self, steps, *, spacing="uniform"):
        return flow_sigmas(steps)[:-1].tolist()  # then t = 0: the data


def test_flow_trains_through_the_unchanged_loss_and_pipeline():
    flow = RectifiedFlow()
    torch.manual_seed(0)
    net = TinyNet()
    x0 = _data()[0]
    t, noise = flow.sample_time(len(x0), generator=_gen(1)), torch.randn(x0.shape)
    want = F.mse_loss(net((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise, t),
                      noise - x0)
    loss = diffusion_loss(net, flow, x0, prediction_type="velocity", t=t, noise=noise)
    torch.testing.assert_close(loss, want)
    assert net.seen_t[-1].dtype == torch.float32
    assert 0 < float(net.seen_t[-1].min())

    # the pipeline carries it: pipe.loss draws a float t in [0, 1) and one Adam step trains
    pipe = DiffusionPipeline(net, NoiseSchedule("cosine", 10), "velocity", (1, 8, 8),
                             noise_process=flow)
    assert pipe.process is flow
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    step_loss = pipe.loss(x0, generator=_gen(2))
    step_loss.backward()
    opt.step()
    t_seen = net.seen_t[-1]
    assert t_seen.dtype == torch.float32
    assert 0 <= float(t_seen.min()) < float(t_seen.max()) < 1
    assert torch.isfinite(step_loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    # what the VP-only parts say to it, by name
    with pytest.raises(ValueError, match="unknown prediction_type 'v' for the rectified"):
        diffusion_loss(net, flow, x0, prediction_type="v")
    with pytest.raises(ValueError, match="min_snr_gamma is not defined"):
        diffusion_loss(net, flow, x0, prediction_type="velocity", min_snr_gamma=5.0)
    with pytest.raises(ValueError, match="sampler 'ddim' steps the vp process, not "
                                         "'rectified-flow-test'"):
        pipe.sample(2, sampler="ddim", progress=False)
    with pytest.raises(ValueError, match="RePaint runs DDPM steps"):
        pipe.inpaint(x0[:1], torch.ones(1, 1, 8, 8), progress=False)


def test_flow_validation_grid_and_guidance_rescale():
    flow = RectifiedFlow()
    t, noise = flow.validation_draws((4, 1, 2, 2), seed=3)
    assert torch.equal(t, torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.equal(noise, torch.randn((4, 1, 2, 2), generator=_gen(3)))
    # rescale phi = 1 in x0 space: the guided x0 gets the conditional x0's spread (Lin et al.)
    def net(x, t, c):
        return x * (1 + c.view(-1, 1, 1, 1)) - 0.3 * c.view(-1, 1, 1, 1)

    x_t, t = torch.randn(3, 1, 8, 8, generator=_gen(4)), torch.full((3,), 0.6)
    cond, null = torch.full((3,), 0.8), torch.zeros(3)
    cfg = ClassifierFreeGuidance(net, cond, null, scale=4.0, rescale=1.0, process=flow,
                                 prediction_type="velocity")
    x0_out = flow.to_x0(cfg(x_t, t), x_t, t, prediction_type="velocity")
    x0_cond = flow.to_x0(net(x_t, t, cond), x_t, t, prediction_type="velocity")
    torch.testing.assert_close(x0_out.std(dim=(1, 2, 3)), x0_cond.std(dim=(1, 2, 3)))
    guided = net(x_t, t, null) + 4.0 * (net(x_t, t, cond) - net(x_t, t, null))
    x0_guided = flow.to_x0(guided, x_t, t, prediction_type="velocity")
    torch.testing.assert_close(x0_out, rescale_guidance(x0_guided, x0_cond, 1.0))


def test_flow_euler_over_sampling_times_reaches_the_gaussian_data():
    """Data N(mu, s^2): x_t = (1 - t) x0 + t eps is Gaussian, and the exact velocity
    E[eps - x0 | x_t] = -mu + c(t) (x - (1 - t) mu), c(t) = (t - (1 - t) s^2) / Var(x_t),
    Var(x_t) = (1 - t)^2 s^2 + t^2. Euler from the prior at t = 1 to t = 0 over
    ``sampling_times`` must land on mean mu and variance s^2."""
    flow, mu, s2, n, steps = RectifiedFlow(), 0.5, 0.09, 20_000, 100

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tt = t.to(torch.float64).view(-1, 1)
        c = (tt - (1 - tt) * s2) / ((1 - tt) ** 2 * s2 + tt**2)
        return -mu + c * (x - (1 - tt) * mu)

    x = flow.prior((n, 1), generator=_gen(6)).double()
    times = flow.sampling_times(steps)
    assert times[0] == 1.0
    assert all(a > b for a, b in zip(times, times[1:], strict=False))
    for i, t in enumerate(times):
        t_next = times[i + 1] if i + 1 < len(times) else 0.0
        tb = flow.time_batch(t, n, "cpu")
        assert tb.dtype == torch.float32
        x = euler_flow_step(velocity(x, tb), x, t, t_next)
    assert float(x.mean()) == pytest.approx(mu, abs=0.01)
    assert float(x.var()) == pytest.approx(s2, rel=0.05)
    # and with the true field, the x0 read off the output at t = 1 is the data mean
    x1 = flow.prior((n, 1), generator=_gen(7)).double()
    x0_hat = flow.to_x0(velocity(x1, torch.ones(n)), x1, torch.ones(n, dtype=torch.float64),
                        prediction_type="velocity")
    torch.testing.assert_close(x0_hat, torch.full_like(x1, mu))
    assert "rectified-flow-test" not in NOISE_PROCESS_REGISTRY  # defined here, not registered
