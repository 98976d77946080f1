"""What one training step reads (training/batches.py) and the step's own shape (loop.py)."""

from __future__ import annotations

import inspect

import pytest
import torch

from oasis_lib.training.batches import epoch_batches, images, micro_batches
from oasis_lib.training.guards import NonFiniteLossError, check_finite_loss
from oasis_lib.training.loop import TrainingLoop


def test_epoch_batches_are_a_seeded_permutation_without_the_partial_batch():
    batches = epoch_batches(3, 2, 23, 5)
    assert [len(b) for b in batches] == [5, 5, 5, 5]  # 23 = 4 x 5 + 3: the 3 dropped
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 20
    assert set(flat) <= set(range(23))
    assert batches == epoch_batches(3, 2, 23, 5)  # no state: a resume finds the same order
    assert batches != epoch_batches(3, 3, 23, 5)  # another epoch, another order
    g = torch.Generator().manual_seed(3 * 1_000_003 + 2)
    assert flat == torch.randperm(23, generator=g).tolist()[:20]


@pytest.mark.parametrize("parts", [1, 3])
def test_micro_batches_split_every_part_and_join_back(parts):
    x = tuple(torch.arange(12.0).reshape(6, 2) + 100 * p for p in range(parts))
    chunks = micro_batches(x if parts > 1 else x[0], 3, 2)
    assert len(chunks) == 3
    assert all(len(c) == parts for c in chunks)
    for p in range(parts):
        assert torch.equal(torch.cat([c[p] for c in chunks]), x[p])
    whole = micro_batches(x[0], 1, 6)
    assert len(whole) == 1
    assert whole[0][0] is x[0]


def test_images_of_a_batch():
    x = torch.zeros(2, 1, 4, 4)
    assert images(x) is x
    assert images([x, torch.ones(2)]) is x
    assert images((x,)) is x


def test_check_finite_loss_names_the_step_and_the_last_good_checkpoint():
    check_finite_loss(torch.tensor(0.5), step=3, epoch=0, last_good="fine")
    with pytest.raises(NonFiniteLossError, match=r"\(nan\) at step 7 \(epoch 1\).*last good"):
        check_finite_loss(torch.tensor(float("nan")), step=7, epoch=1, last_good="last good")


def test_the_training_step_reads_on_one_screen_in_nanogpt_order():
    source = inspect.getsource(TrainingLoop.train_step)
    assert len(source.splitlines()) <= 40
    order = ["# 1. lr", "# 2. micro-steps", "self.compute_loss", ".backward()",
             "# 3. unscale", "clip_grad_norm_", "# 4. optimiser step", "self.scaler.step",
             "# 5. EMA", "self.ema.update"]
    positions = [source.index(marker) for marker in order]
    assert positions == sorted(positions)
