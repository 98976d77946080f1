"""The optimiser and LR schedule a config describes: closed forms, kernels, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oasis_lib.config import TrainConfig
from oasis_lib.training.optim import (
    build_lr_scheduler,
    build_optimizer,
    fused_available,
    lr_multiplier,
)


def _cfg(**over) -> TrainConfig:
    return TrainConfig.from_preset("tiny", **over)


def test_constant_schedule_is_the_linear_warmup_then_one():
    f = lr_multiplier(_cfg(warmup_steps=4))
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_schedule_closed_form():
    # warm-up (s + 1) / W for s < W, then 0.5 (1 + cos(pi (s - W) / (S - W))), 0 after S
    W, S = 10, 110
    f = lr_multiplier(_cfg(warmup_steps=W, lr_schedule="cosine", lr_decay_steps=S))
    assert f(0) == pytest.approx(0.1)
    assert f(W - 1) == pytest.approx(1.0)
    assert f(W) == pytest.approx(1.0)
    assert f(W + 25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(60) == pytest.approx(0.5)  # half way through the decay
    assert f(S) == pytest.approx(0.0, abs=1e-12)
    assert f(S + 50) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(W, S + 1)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay


def test_scheduler_sets_the_optimiser_lr_step_by_step():
    cfg = _cfg(lr=1e-3, warmup_steps=3, lr_schedule="cosine", lr_decay_steps=9)
    net = nn.Linear(2, 1)
    opt = build_optimizer(cfg, net.parameters(), "cpu")
    sched = build_lr_scheduler(cfg, opt)
    f = lr_multiplier(cfg)
    for step in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * f(step))
        opt.step()
        sched.step()


def test_optimiser_takes_betas_eps_decay_and_the_fused_kernel_on_cpu():
    net = nn.Linear(3, 2)
    cfg = _cfg(adam_betas=(0.95, 0.999), adam_eps=1e-6, weight_decay=1e-6)
    opt = build_optimizer(cfg, net.parameters(), "cpu")
    assert isinstance(opt, torch.optim.AdamW)
    d = opt.defaults
    assert (d["betas"], d["eps"], d["weight_decay"]) == ((0.95, 0.999), 1e-6, 1e-6)
    assert d["fused"] is fused_available("cpu")
    slow = build_optimizer(_cfg(fused_optimizer=False), net.parameters(), "cpu")
    assert slow.defaults["foreach"]
    assert not slow.defaults["fused"]
    assert isinstance(build_optimizer(_cfg(optimizer="adam"), net.parameters(), "cpu"),
                      torch.optim.Adam)


@pytest.mark.skipif(not fused_available("cpu"), reason="this torch has no fused CPU AdamW")
def test_fused_and_foreach_agree_within_float_rounding():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [build_optimizer(_cfg(weight_decay=0.01, fused_optimizer=fused), n.parameters(),
                            "cpu") for n, fused in zip(nets, (False, True), strict=True)]
    assert not opts[0].defaults["fused"]
    assert opts[1].defaults["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(32, 8, generator=g)
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("over", "match"), [
    ({"lr_schedule": "step"}, r"unknown lr_schedule 'step'; choose one of \('constant', "),
    ({"lr_schedule": "cosine"}, "needs lr_decay_steps"),
    ({"lr_schedule": "cosine", "lr_decay_steps": 10, "warmup_steps": 10}, "must exceed"),
    ({"lr_decay_steps": 100}, "read only by lr_schedule 'cosine'"),
    ({"adam_betas": (0.9,)}, "adam_betas must be two numbers"),
    ({"adam_betas": (0.9, 1.0)}, "adam_betas must be two numbers"),
    ({"adam_eps": 0.0}, "adam_eps must be > 0"),
    ({"ema_power": -1.0}, "ema_power must be > 0"),
    ({"ema_inv_gamma": 0.0}, "ema_inv_gamma must be > 0"),
])
def test_bad_optimiser_options_are_refused_by_name(over, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**over)


def test_betas_from_a_list_round_trip_as_a_tuple():
    cfg = TrainConfig.from_dict({**_cfg().to_dict(), "adam_betas": [0.95, 0.999]})
    assert cfg.adam_betas == (0.95, 0.999)
