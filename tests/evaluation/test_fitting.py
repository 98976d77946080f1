"""The evaluation networks' shared loop: the learning-rate factor in closed form, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oasis_lib.evaluation.fitting import check_counts, fit_epochs, fp16_state, warmup_cosine


def test_warmup_cosine_is_linear_for_one_epoch_then_a_half_cosine_to_zero():
    f = warmup_cosine(per_epoch=4, total=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0  # the cosine starts at its top
    assert f(8) == pytest.approx(0.5)  # half way through the 8 decay steps
    assert f(12) == pytest.approx(0.0, abs=1e-12)
    assert f(6) == pytest.approx((1 + math.cos(math.pi * 2 / 8)) / 2)


def test_counts_and_batch_size_are_checked():
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        check_counts(epochs=0, batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got True"):
        check_counts(epochs=1, batch_size=True)
    net = nn.Linear(2, 1)
    data = torch.utils.data.TensorDataset(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"batch_size=4 is larger than the training set \(3"):
        fit_epochs(net, lambda x: net(x).sum(), data, epochs=1, batch_size=4, lr=1e-3,
                   weight_decay=0.0, seed=0, device=torch.device("cpu"), measure=dict,
                   progress=False)


def test_fp16_state_is_what_the_model_now_computes():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    state = fp16_state(net)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert torch.equal(net.weight, state["weight"].float())
