"""The EMA of the weights: the update formula, its warm-up, buffers, and a resume round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib.training.ema import EMA


def _net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


def test_warmup_decay_is_one_plus_n_over_ten_plus_n_capped():
    ema = EMA(_net(0.0), decay=0.9)
    seen = []
    for _ in range(120):
        seen.append(ema.current_decay())
        ema.update(_net(0.0))
    assert seen[:3] == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    assert seen[-1] == 0.9  # (1 + n) / (10 + n) passes 0.9 at n = 80, then the cap holds
    assert max(seen) == 0.9
    assert EMA(_net(0.0), decay=0.9, warmup=False).current_decay() == 0.9


def test_update_is_the_exponential_moving_average():
    # theta_ema <- d * theta_ema + (1 - d) * theta, with the live weights held at 1.0:
    # after k updates from 0 without warm-up, theta_ema = 1 - d**k.
    ema = EMA(_net(0.0), decay=0.8, warmup=False)
    live = _net(1.0)
    for _ in range(5):
        ema.update(live)
    for p in ema.model.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1 - 0.8 ** 5))
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_buffers_are_copied_not_averaged():
    ema = EMA(_net(0.0), decay=0.99, warmup=False)
    live = _net(0.0)
    live[1].running_mean.fill_(3.0)
    ema.update(live)
    torch.testing.assert_close(ema.model[1].running_mean, torch.full((2,), 3.0))


def test_state_dict_round_trip_continues_identically():
    a = EMA(_net(0.0), decay=0.9)
    for v in (1.0, 2.0, 3.0):
        a.update(_net(v))
    b = EMA(_net(5.0), decay=0.9)
    b.load_state_dict(a.state_dict())
    a.update(_net(4.0))
    b.update(_net(4.0))
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert a.num_updates == b.num_updates == 4


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        EMA(_net(0.0), decay=1.0)


def test_power_warmup_is_diffusers_ema_warmup_closed_form():
    # diffusers' EMAModel(use_ema_warmup=True): decay = 1 - (1 + n / inv_gamma) ** -power at
    # its n-th update (n = updates before it), capped at the max decay; 0 at the first, so the
    # average starts as the live weights.
    ema = EMA(_net(0.0), decay=0.9, power=0.75, inv_gamma=2.0)
    seen = []
    for _ in range(200):
        seen.append(ema.current_decay())
        ema.update(_net(1.0))
    expected = [min(0.9, 1 - (1 + n / 2.0) ** -0.75) for n in range(200)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == 0.0
    assert seen[-1] == 0.9
    first = EMA(_net(0.0), decay=0.9999, power=0.75)
    first.update(_net(3.0))
    for p in first.model.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 3.0))


@pytest.mark.parametrize(("kwargs", "match"), [({"power": 0.0}, "power and inv_gamma"),
                                                ({"inv_gamma": -1.0}, "power and inv_gamma")])
def test_bad_power_warmup_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EMA(_net(0.0), decay=0.9, **kwargs)
