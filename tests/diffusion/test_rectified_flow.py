"""Rectified flow as a noise process: its maths, its samplers against diffusers' and a closed
form, what it refuses by name, and a run through the Trainer, export and load."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oasis_lib.config import TrainConfig
from oasis_lib.diffusion.pipeline import DiffusionPipeline
from oasis_lib.diffusion.processes import (
    NOISE_PROCESSES,
    RectifiedFlowProcess,
    get_noise_process,
)
from oasis_lib.diffusion.samplers import make_sampler, samplers_for
from oasis_lib.diffusion.sampling import sample
from oasis_lib.diffusion.schedule import NoiseSchedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthetic import BlobSlices  # noqa: E402

SHAPE = (3, 1, 4, 4)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ToyVelocity(torch.nn.Module):
    """A fixed, smooth (x, tau) -> v with no weights to train (for sampler equivalences)."""

    def forward(self, x, t):
        s = t.to(x.dtype).view(-1, 1, 1, 1) / 1000
        return 0.7 * x - 0.3 * torch.sin(3 * x) * s + 0.2 * (1 - s)


def test_registered_with_its_samplers():
    assert "rectified-flow" in NOISE_PROCESSES
    assert get_noise_process("rectified-flow") is RectifiedFlowProcess
    assert samplers_for("rectified-flow") == ("flow-euler", "flow-heun")
    flow = RectifiedFlowProcess()
    assert (flow.discrete_time, flow.supports_repaint) == (False, False)
    assert flow.default_sampler == "flow-euler"


def test_path_target_and_conversions_round_trip():
    flow = RectifiedFlowProcess()
    x0, eps = torch.randn(SHAPE, generator=_gen(1)), torch.randn(SHAPE, generator=_gen(2))
    tau = torch.tensor([0.0, 350.0, 1000.0])
    x_t = flow.forward(x0, tau, eps)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], eps[2])
    torch.testing.assert_close(x_t[1], 0.65 * x0[1] + 0.35 * eps[1])
    v = flow.training_target(x0, eps, tau, prediction_type="velocity")
    torch.testing.assert_close(v, eps - x0)
    got_x0, got_eps = flow.split_output(v, x_t, tau, prediction_type="velocity")
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps[1:], eps[1:])
    torch.testing.assert_close(flow.to_output(x0[1:], x_t[1:], tau[1:],
                                              prediction_type="velocity"), v[1:])


def test_training_times_uniform_logit_normal_and_shift():
    u = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(RectifiedFlowProcess().time_from_uniform(u),
                               torch.tensor([100.0, 500.0, 900.0]))
    ln = RectifiedFlowProcess(time_sampling="logit-normal", logit_loc=0.5, logit_scale=1.0)
    # the median of the logit-normal is sigmoid(m)
    assert float(ln.time_from_uniform(torch.tensor([0.5], dtype=torch.float64))) == \
        pytest.approx(1000 / (1 + np.exp(-0.5)), rel=1e-6)
    shifted = RectifiedFlowProcess(shift=3.0).time_from_uniform(torch.tensor([0.5]))
    assert float(shifted) == pytest.approx(750.0)  # 3 * 0.5 / (1 + 2 * 0.5)
    draws = ln.sample_time(50_000, generator=_gen(0)) / 1000
    logits = torch.log(draws / (1 - draws))
    assert float(logits.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(logits.std()) == pytest.approx(1.0, abs=0.02)
    t, noise = RectifiedFlowProcess().validation_draws((4, 1, 2, 2), seed=3)
    torch.testing.assert_close(t, torch.tensor([125.0, 375.0, 625.0, 875.0]))
    with pytest.raises(ValueError, match="unknown time sampling 'beta'; choose one of"):
        RectifiedFlowProcess(time_sampling="beta")
    with pytest.raises(ValueError, match="shift must be > 0"):
        RectifiedFlowProcess(shift=0)


def _diffusers_run(scheduler, steps: int, x_T: torch.Tensor, model) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    x = x_T.clone()
    for t in scheduler.timesteps:
        v = model(x, t.expand(x.shape[0]))
        x = scheduler.step(v, t, x).prev_sample
    return x


@pytest.mark.parametrize(("name", "cls_name", "steps", "shift"), [
    ("flow-euler", "FlowMatchEulerDiscreteScheduler", 1, 1.0),
    ("flow-euler", "FlowMatchEulerDiscreteScheduler", 8, 1.0),
    ("flow-euler", "FlowMatchEulerDiscreteScheduler", 10, 3.0),
    ("flow-heun", "FlowMatchHeunDiscreteScheduler", 1, 1.0),
    ("flow-heun", "FlowMatchHeunDiscreteScheduler", 4, 1.0),
    ("flow-heun", "FlowMatchHeunDiscreteScheduler", 6, 3.0)])
def test_samplers_equal_diffusers(name, cls_name, steps, shift):
    diffusers = pytest.importorskip("diffusers")
    model = ToyVelocity()
    x_T = torch.randn(SHAPE, generator=_gen(5))
    ref = _diffusers_run(getattr(diffusers, cls_name)(num_train_timesteps=1000, shift=shift),
                         steps, x_T, model)
    res = sample(model, RectifiedFlowProcess(shift=shift), SHAPE, sampler=name, steps=steps,
                 x_T=x_T, clip_x0=False, progress=False, return_intermediates=True)
    # diffusers' Heun recovers v as (x - (x - sigma v)) / sigma in float32, which loses digits
    # at its last grid time sigma = 0.001 (~1e-5 here); ours steps with v itself. So Heun
    # agrees to 2e-5, and ours is the closer of the two to the same run in float64.
    torch.testing.assert_close(res.images, ref, atol=2e-6 if name == "flow-euler" else 2e-5,
                               rtol=0)
    assert res.nfe == (steps if name == "flow-euler" else 2 * steps - 1)
    exact = sample(model, RectifiedFlowProcess(shift=shift), SHAPE, sampler=name, steps=steps,
                   x_T=x_T.double(), clip_x0=False, progress=False, dtype=torch.float64)
    assert (res.images.double() - exact).abs().max() <= (ref.double() - exact).abs().max() + 1e-7


def _gaussian_velocity(mu: float, std: float):
    """E[eps - x0 | x_t] for x0 ~ N(mu, std^2): linear in x (tests/diffusion/test_flow_matching)."""
    def v(x, tau):
        t = (tau.to(x.dtype) / 1000).view(-1, 1, 1, 1)
        a, b = 1 - t, t
        return -mu + (b - a * std**2) / (a**2 * std**2 + b**2) * (x - a * mu)
    return v


@pytest.mark.parametrize(("name", "order"), [("flow-euler", 1), ("flow-heun", 2)])
def test_samplers_converge_at_their_order_on_gaussian_data(name, order):
    """The exact velocity field of Gaussian data, integrated by the library's sampler from the
    prior: the end point is mu + std z; the error falls as steps^-order."""
    mu, std = 0.4, 0.3
    z = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64).view(11, 1, 1, 1)
    errors = []
    for steps in (8, 16, 32, 64):
        x = sample(_gaussian_velocity(mu, std), RectifiedFlowProcess(), z.shape, sampler=name,
                   steps=steps, x_T=z, clip_x0=False, progress=False, dtype=torch.float64,
                   device="cpu")
        errors.append(float((x - (mu + std * z)).abs().max()))
    rates = [float(np.log2(errors[i] / errors[i + 1])) for i in range(3)]
    assert all(abs(r - order) < 0.3 for r in rates[1:]), (errors, rates)


def test_what_it_cannot_do_is_refused_by_name():
    flow = RectifiedFlowProcess()
    with pytest.raises(ValueError, match=r"sampler 'ddim' steps the vp process, not "
                                         r"'rectified-flow'; choose one of \('flow-euler'"):
        make_sampler("ddim", flow)
    with pytest.raises(ValueError, match=r"sampler 'flow-euler' steps the rectified-flow "
                                         r"process, not 'vp'"):
        make_sampler("flow-euler", NoiseSchedule("cosine", 10))
    pipe = DiffusionPipeline(ToyVelocity(), NoiseSchedule("cosine", 10), "velocity", (1, 8, 8),
                             noise_process=flow)
    with pytest.raises(ValueError, match="RePaint"):
        pipe.inpaint(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), progress=False)
    with pytest.raises(ValueError, match="unknown prediction_type 'v' for the rectified-flow"):
        flow.training_target(torch.zeros(1), torch.zeros(1), torch.zeros(1), prediction_type="v")


def test_config_checks_the_flow_knobs():
    ok = TrainConfig.from_preset("tiny", diffusion={
        "noise_process": "rectified-flow", "prediction_type": "velocity", "min_snr_gamma": None,
        "time_sampling": "logit-normal", "flow_shift": 2.0})
    assert ok.diffusion.flow_shift == 2.0
    with pytest.raises(ValueError, match="time_sampling apply to noise_process='rectified-flow'"):
        TrainConfig.from_preset("tiny", diffusion={"time_sampling": "logit-normal"})
    with pytest.raises(ValueError, match=r"prediction_type 'v' is not one of the rectified-flow"):
        TrainConfig.from_preset("tiny", diffusion={"noise_process": "rectified-flow",
                                                    "min_snr_gamma": None})
    with pytest.raises(ValueError, match="min_snr_gamma is a VP weighting"):
        TrainConfig.from_preset("tiny", diffusion={"noise_process": "rectified-flow",
                                                    "prediction_type": "velocity",
                                                    "min_snr_gamma": 5.0})
    with pytest.raises(ValueError, match=r"unknown sampler 'ddim'; choose one of \('flow-euler'"):
        TrainConfig.from_preset("tiny", sampler="ddim", diffusion={
            "noise_process": "rectified-flow", "prediction_type": "velocity",
            "min_snr_gamma": None})


def test_trains_exports_and_samples_through_the_library(tmp_path):
    from oasis_lib.pretrained import load_model
    from oasis_lib.training import Trainer

    cfg = TrainConfig.from_preset(
        "tiny", out_dir=str(tmp_path), image_size=16, max_steps=40, epochs=100, batch_size=8,
        checkpoint_every=20, validate_every=2, val_size=16, sample_every=1000, progress=False,
        lr=2e-3, warmup_steps=5, diffusion={
            "noise_process": "rectified-flow", "prediction_type": "velocity",
            "min_snr_gamma": None, "time_sampling": "logit-normal"})
    trainer = Trainer(cfg, train_set=BlobSlices(40, 16, seed=0), val_set=BlobSlices(16, 16, seed=1))
    before = trainer.validate()["val_loss"]
    trainer.fit()
    assert trainer.validate()["val_loss"] < 0.8 * before
    pipe = load_model(tmp_path / "last.pt")
    assert isinstance(pipe.process, RectifiedFlowProcess)
    assert pipe.process.time_sampling == "logit-normal"
    x = pipe.sample(2, steps=4, generator=_gen(0), progress=False)
    assert x.shape == (2, 1, 16, 16)
    assert torch.isfinite(x).all()
    assert float(x.abs().max()) <= 1.0
    again = pipe.sample(2, sampler="flow-euler", steps=4, generator=_gen(0), progress=False)
    assert torch.equal(x, again)


def test_conditional_flow_trains_and_guides_like_the_vp_model(fake_root, tmp_path):
    """A mask+slice rectified flow through the Trainer, export and load: classifier-free guidance
    works unchanged on the velocity, u + s (c - u) (Ho & Salimans 2022 eq. 6 with s = 1 + w),
    and guided Euler sampling runs."""
    from oasis_lib import Condition
    from oasis_lib.pretrained import load_model
    from oasis_lib.training import Trainer

    cfg = TrainConfig.from_preset(
        "tiny", data_root=str(fake_root), image_size=32, condition="mask+slice",
        out_dir=str(tmp_path / "run"), progress=False, val_size=4, sample_n=2, sample_steps=2,
        batch_size=4, epochs=10, max_steps=3, diffusion={
            "noise_process": "rectified-flow", "prediction_type": "velocity",
            "min_snr_gamma": None, "time_sampling": "logit-normal"})
    Trainer(cfg).fit()
    pipe = load_model(tmp_path / "run" / "last.pt")
    assert isinstance(pipe.process, RectifiedFlowProcess)
    mask = torch.zeros(2, 32, 32, dtype=torch.long)
    mask[:, 8:24, 8:24] = 3
    cond = Condition(mask=mask, slice_index=torch.tensor([10, 20]))
    x = torch.randn(2, 1, 32, 32, generator=_gen(1))
    tau = torch.full((2,), 700.0)
    with torch.no_grad():
        c = pipe.denoiser(condition=cond, guidance_scale=1.0)(x, tau)
        u = pipe.denoiser(condition=Condition(), batch_size=2)(x, tau)
        guided = pipe.denoiser(condition=cond, guidance_scale=3.0)(x, tau)
    torch.testing.assert_close(guided, u + 3.0 * (c - u), atol=1e-5, rtol=1e-5)
    images = pipe.sample(2, steps=3, condition=cond, guidance_scale=2.0, generator=_gen(2),
                         progress=False)
    assert images.shape == (2, 1, 32, 32)
    assert torch.isfinite(images).all()
