"""Tests for oasis_lib.models.simple_unet (the seed's architecture, kept as a baseline)."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.models.simple_unet import SimpleUNet
from oasis_lib.models.unet import count_parameters

SEED_PARAMS = 62_624_385


@pytest.fixture(scope="module")
def model() -> SimpleUNet:
    torch.manual_seed(0)
    return SimpleUNet()


def test_parameter_count_matches_seed(model):
    assert count_parameters(model) == SEED_PARAMS


def test_shape_round_trip_64(model):
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        out = model.eval()(x, torch.tensor([0, 499]))
    assert out.shape == x.shape


def test_size_not_divisible_by_32(model):
    with pytest.raises(ValueError, match=r"divisible by 32.*\(48, 48\)"):
        model(torch.randn(1, 1, 48, 48), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        model(torch.randn(1, 3, 64, 64), torch.tensor([1]))


def test_uses_t(model):
    x = torch.randn(1, 1, 32, 32).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = model.eval()(x, torch.tensor([0, 400]))
    assert not torch.allclose(out[0], out[1], atol=1e-5)


def test_batchnorm_train_mode_at_batch_1_is_a_different_function():
    """Seed bug 2: sampling in train mode normalises one image by its own statistics (and
    overwrites the running statistics); in eval mode the running statistics are used."""
    torch.manual_seed(0)
    small = SimpleUNet(down_channels=(8, 16, 32))  # same blocks, cheap
    x, t = torch.randn(1, 1, 32, 32), torch.tensor([10])
    before = {k: v.clone() for k, v in small.state_dict().items() if "running" in k}
    with torch.no_grad():
        train_out = small.train()(x, t)
        eval_out = small.eval()(x, t)
    assert not torch.allclose(train_out, eval_out, atol=1e-3)
    after = {k: v for k, v in small.state_dict().items() if "running" in k}
    assert any(not torch.equal(before[k], after[k]) for k in before)  # stats were overwritten
