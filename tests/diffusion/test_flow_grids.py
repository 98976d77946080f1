"""The rectified flow's two time grids (diffusers' ``linspace`` default and the evenly spaced
``trailing`` grid of few-step models), the U-shaped training times of Lee et al. 2024, and a
model file's default grid (``SamplingDefaults.spacing``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_rectified_flow import SHAPE, ToyVelocity, _gen

from oasis_lib.config import TrainConfig
from oasis_lib.diffusion.flow_matching import (
    flow_sigmas,
    sample_flow_time,
    u_shaped_density,
    u_shaped_quantile,
)
from oasis_lib.diffusion.processes import ALL_SPACINGS, RectifiedFlowProcess, VPProcess
from oasis_lib.diffusion.sampling import sample
from oasis_lib.diffusion.sampling_defaults import (
    SamplingChoice,
    SamplingDefaults,
    resolve_sampling,
)
from oasis_lib.diffusion.schedule import NoiseSchedule
from oasis_lib.models.factory import build_pipeline
from oasis_lib.pretrained import load_model


def test_the_trailing_grid_is_evenly_spaced_and_every_interval_is_a_step():
    assert flow_sigmas(2, spacing="trailing").tolist() == [1.0, 0.5, 0.0]
    assert flow_sigmas(4, spacing="trailing").tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    # diffusers' default puts its last call at t = 1 / 1000: two steps are one real step
    torch.testing.assert_close(flow_sigmas(2), torch.tensor([1.0, 0.001, 0.0],
                                                            dtype=torch.float64))
    assert flow_sigmas(1, spacing="trailing").tolist() == flow_sigmas(1).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"unknown spacing 'karras'; choose one of "
                                         r"\('linspace', 'trailing'\)"):
        flow_sigmas(4, spacing="karras")


@pytest.mark.parametrize(("steps", "shift"), [(2, 1.0), (4, 1.0), (4, 3.0), (7, 2.0)])
def test_the_trailing_grid_equals_diffusers_given_fluxs_sigmas(steps, shift):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps))  # FluxPipeline's
    torch.testing.assert_close(flow_sigmas(steps, shift=shift, spacing="trailing").float(),
                               scheduler.sigmas.float(), atol=1e-6, rtol=0)


def test_euler_on_the_trailing_grid_steps_exactly_there():
    """Euler with a velocity that knows t: each call sees the grid's time, and on a straight
    path (v constant along the line) any grid lands on the same point."""
    process = RectifiedFlowProcess()
    seen = []

    def model(x, t):
        seen.append(float(t[0]))
        return torch.ones_like(x)  # the straight path from x_T to x_T - 1

    x_T = torch.randn(SHAPE, generator=_gen(1))
    a = sample(model, process, SHAPE, sampler="flow-euler", steps=4, spacing="trailing",
               x_T=x_T, clip_x0=False, progress=False)
    assert seen == [1000.0, 750.0, 500.0, 250.0]
    b = sample(model, process, SHAPE, sampler="flow-euler", steps=4, x_T=x_T, clip_x0=False,
               progress=False)
    torch.testing.assert_close(a, x_T - 1)
    torch.testing.assert_close(b, x_T - 1)
    # Heun on the trailing grid calls at t_0, then twice at each inner time
    seen.clear()
    sample(model, process, SHAPE, sampler="flow-heun", steps=2, spacing="trailing", x_T=x_T,
           clip_x0=False, progress=False)
    assert seen == [1000.0, 500.0, 500.0]


def test_each_process_refuses_the_other_ones_grids():
    flow, vp = RectifiedFlowProcess(), VPProcess(NoiseSchedule("cosine", 100))
    assert set(flow.spacings) | set(vp.spacings) == set(ALL_SPACINGS)
    assert flow.sampling_times(2) == pytest.approx([1000.0, 1.0])  # None: diffusers' grid
    assert flow.sampling_times(2, spacing="trailing") == [1000.0, 500.0]
    assert vp.sampling_times(4) == vp.sampling_times(4, spacing="trailing")
    with pytest.raises(ValueError, match=r"unknown spacing 'karras' for the rectified-flow "
                                         r"process; choose one of \('linspace', 'trailing'\)"):
        flow.sampling_times(4, spacing="karras")
    with pytest.raises(ValueError, match=r"unknown spacing 'linspace' for the vp process"):
        vp.sampling_times(4, spacing="linspace")
    with pytest.raises(ValueError, match="unknown spacing 'linspace' for the vp"):
        sample(ToyVelocity(), vp, SHAPE, sampler="ddim", steps=4, spacing="linspace",
               progress=False)


def test_the_u_shaped_quantile_inverts_its_cdf_and_draws_its_density():
    a = 4.0
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    t = u_shaped_quantile(u)
    cdf = (torch.exp(a * t) - torch.exp(a * (1 - t)) + math.exp(a) - 1) / (2 * math.expm1(a))
    torch.testing.assert_close(cdf, u, atol=1e-12, rtol=0)
    torch.testing.assert_close(t + t.flip(0), torch.ones_like(t), atol=1e-12, rtol=0)  # symmetric
    grid = np.linspace(0, 1, 100_001)
    assert abs(np.trapezoid(u_shaped_density(grid), grid) - 1.0) < 1e-8
    draws = sample_flow_time(200_000, sampling="u-shaped", generator=_gen(0)).numpy()
    hist, edges = np.histogram(draws, bins=10, range=(0, 1))
    exact = np.diff((np.exp(a * edges) - np.exp(a * (1 - edges))) / (2 * math.expm1(a)))
    np.testing.assert_allclose(hist / draws.size, exact, atol=3e-3)
    assert hist[0] > 2.5 * hist[5]  # the ends of the path, not its middle
    process_draws = RectifiedFlowProcess(time_sampling="u-shaped").sample_time(
        50_000, generator=_gen(0)) / 1000
    assert abs(float((process_draws < 0.1).float().mean()) - exact[0]) < 5e-3


def _flow_pipe():
    cfg = TrainConfig.from_preset("tiny", image_size=16, diffusion={
        "noise_process": "rectified-flow", "prediction_type": "velocity",
        "min_snr_gamma": None})
    pipe = build_pipeline(cfg, warn=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return pipe


def test_a_file_carries_its_grid_and_it_follows_its_sampler(tmp_path):
    pipe = _flow_pipe()
    pipe.sampling_defaults = SamplingDefaults("flow-euler", 2, "trailing")
    path = pipe.save(tmp_path / "few.safetensors")
    loaded = load_model(path, device="cpu")
    assert loaded.sampling_defaults == SamplingDefaults("flow-euler", 2, "trailing")

    def draw(**kw):
        return loaded.sample(2, generator=torch.Generator().manual_seed(3), progress=False, **kw)

    torch.testing.assert_close(draw(), draw(sampler="flow-euler", steps=2, spacing="trailing"),
                               atol=0, rtol=0)
    assert not torch.equal(draw(), draw(spacing="linspace"))  # given wins
    p = loaded.process
    d = loaded.sampling_defaults
    assert resolve_sampling(d, p) == SamplingChoice("flow-euler", 2, "file", "file",
                                                    "trailing", "file")
    # another sampler takes neither the file's steps nor its grid
    assert resolve_sampling(d, p, "flow-heun") == SamplingChoice(
        "flow-heun", None, "given", "sampler default", None, "process default")
    assert resolve_sampling(d, p).describe(p) == (
        "sampler flow-euler (the file's default), 2 steps (the file's default), trailing "
        "spacing (the file's default)")
    assert SamplingDefaults.from_dict(d.to_dict()) == d
    assert SamplingDefaults("flow-euler", 2).to_dict() == {"sampler": "flow-euler", "steps": 2}


def test_a_grid_of_another_process_is_refused():
    pipe = _flow_pipe()
    with pytest.raises(ValueError, match=r"default spacing 'karras' is not one of the "
                                         r"rectified-flow process's spacings"):
        SamplingDefaults("flow-euler", 2, "karras").check(pipe.process)
    with pytest.raises(ValueError, match="default spacing must be a string or None"):
        SamplingDefaults.from_dict({"sampler": "flow-euler", "spacing": 3})


def test_straightness_is_zero_on_a_line_and_one_for_a_single_jump():
    from oasis_lib.diffusion.flow_matching import straightness

    x1, x0 = torch.randn(3, 2, 4, generator=_gen(1)), torch.randn(3, 2, 4, generator=_gen(2))
    ts = [1.0, 0.75, 0.5, 0.0]
    line = torch.stack([(1 - t) * x0 + t * x1 for t in ts])
    assert straightness(line, ts).abs().max() < 1e-12
    # all the way in the first interval, then still: (v - c) = c (1 / 0.25 - 1) there and -c after
    jump = torch.stack([x1, x0, x0, x0])
    torch.testing.assert_close(straightness(jump, ts),
                               torch.tensor([9.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(straightness(5 * jump, ts), straightness(jump, ts))  # scale-free
    assert straightness(torch.stack([x1, x0]), [1.0, 0.0]).item() == 0.0  # one step: straight
    with pytest.raises(ValueError, match=r"xs \[K \+ 1, B, ...\] and ts \[K \+ 1\] must match"):
        straightness(jump, [1.0, 0.0])
