"""The stopping rule and the one progress bar that follows it (oasis_lib.training.progress)."""

import re

import pytest
from synthetic import BlobSlices

from oasis_lib.config import TrainConfig
from oasis_lib.training import Trainer
from oasis_lib.training.progress import (
    SWITCH_MARGIN,
    TrainProgress,
    binding_limit,
    limit_reached,
    step_limit,
)


def config(**over):
    return TrainConfig.from_preset("tiny", **{"epochs": 10, **over})


@pytest.mark.parametrize(("over", "want"), [
    ({}, (1000, "epochs")),
    ({"max_steps": 300}, (300, "max_steps")),
    ({"max_steps": 1000}, (1000, "max_steps")),  # a tie: max_steps named
    ({"max_steps": 5000}, (1000, "epochs")),
    ({"max_minutes": 1.0}, (1000, "epochs")),  # the time budget is not a step limit
])
def test_step_limit_is_the_smaller_of_max_steps_and_the_epochs(over, want):
    assert step_limit(config(**over), steps_per_epoch=100) == want


def test_limit_reached_by_steps_or_by_budget_seconds():
    assert not limit_reached(config(), 10**6, 10**6)  # only the epochs end such a run
    assert limit_reached(config(max_steps=5), 5, 0.0)
    assert not limit_reached(config(max_steps=5), 4, 0.0)
    assert limit_reached(config(max_minutes=0.5), 0, 30.0)
    assert not limit_reached(config(max_minutes=0.5), 0, 29.9)


def test_binding_limit_is_the_limit_further_along():
    # 100 of 1000 steps (10%) in 60 s of a 30-minute budget (3.3%): the steps end the run first.
    assert binding_limit(100, 1000, 60.0, 1800.0) == "steps"
    # 10 steps (1%) in the same 60 s: at that pace 1000 steps take 100 minutes: time binds.
    assert binding_limit(10, 1000, 60.0, 1800.0) == "minutes"
    assert binding_limit(10, 1000, 60.0, None) == "steps"  # no budget
    assert binding_limit(0, 1000, 5.0, 1800.0) == "steps"  # no pace yet
    # Within the margin the current limit stays: no flicker when both end at about the same time.
    near = 1000 * (1 + SWITCH_MARGIN / 2) * 60.0 / 1800.0
    assert binding_limit(round(near), 1000, 60.0, 1800.0, current="minutes") == "minutes"
    assert binding_limit(round(near), 1000, 60.0, 1800.0, current="steps") == "steps"


def test_the_bar_switches_to_the_limit_that_binds():
    progress = TrainProgress(config(max_minutes=30), steps_per_epoch=100)
    assert (progress.mode, progress.bar.total) == ("steps", 1000)
    progress.update(10, 60.0, epoch=1, loss=0.5)  # 1% of the steps, 3.3% of the budget
    assert (progress.mode, progress.bar.total, progress.bar.n) == ("minutes", 30, 1.0)
    assert progress.postfix(10, 60.0, 1, 0.5) == "step 10/1000, epoch 1/10, loss 0.5000"
    progress.update(600, 600.0, epoch=6)  # 60% of the steps, 33% of the budget
    assert (progress.mode, progress.bar.total, progress.bar.n) == ("steps", 1000, 600)
    assert progress.postfix(600, 600.0, 6, None) == "time 10.0/30 min, epoch 6/10"
    progress.close()


def fit_and_read_bar(tmp_path, capsys, **over):
    """Train on 40 blobs (5 steps per epoch) with the bar on; the bar's last line."""
    cfg = TrainConfig.from_preset("tiny", **{
        "out_dir": str(tmp_path), "image_size": 16, "epochs": 100, "batch_size": 8,
        "checkpoint_every": 1000, "validate_every": 1000, "sample_every": 1000,
        "val_size": 8, "progress": True, **over})
    result = Trainer(cfg, train_set=BlobSlices(40, 16, seed=0),
                     val_set=BlobSlices(8, 16, seed=1)).fit()
    lines = [s for s in re.split(r"[\r\n]+", capsys.readouterr().err) if s.startswith("train:")]
    return result, lines[-1]


def test_a_max_steps_run_counts_to_max_steps_not_to_the_epochs(tmp_path, capsys):
    """max_steps=7 < 100 epochs x 5 steps: the bar's total is 7 (the demo's bug: 2/1000 epochs)."""
    result, bar = fit_and_read_bar(tmp_path, capsys, max_steps=7)
    assert result.step == 7
    assert re.search(r"100%\|.*\| 7/7 \[.*, epoch 2, loss", bar), bar
    assert "/100" not in bar, bar
    assert "/500" not in bar, bar


def test_a_run_ended_by_its_time_budget_counts_minutes(tmp_path, capsys):
    """A 0.3-second budget ends the run long before 100 epochs: the bar counts the budget's
    minutes and shows the steps as a postfix."""
    result, bar = fit_and_read_bar(tmp_path, capsys, max_minutes=0.005)
    assert 0 < result.step < 500
    assert re.search(r"100%\|.*\| [0-9.e-]+/0.005 min \[", bar), bar
    assert f"step {result.step}/500, epoch {(result.step - 1) // 5 + 1}/100" in bar, bar
