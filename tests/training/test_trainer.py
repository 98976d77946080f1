import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from synthetic import BlobSlices

from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.config import TrainConfig
from oasis_lib.models.factory import build_model, build_schedule
from oasis_lib.pretrained import load_model
from oasis_lib.training import NonFiniteLossError, Trainer, train

TESTS = Path(__file__).resolve().parent


def tiny_config(out, **over):
    base = dict(out_dir=str(out), image_size=16, max_steps=12, epochs=100, batch_size=8,
                checkpoint_every=4, validate_every=2, val_size=16, sample_every=1000,
                progress=False, log_every=2)
    return TrainConfig.from_preset("tiny", **{**base, **over})


def data():
    return {"train_set": BlobSlices(40, 16, seed=0), "val_set": BlobSlices(16, 16, seed=1)}


def test_training_reduces_validation_loss_and_writes_its_files(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=60, lr=2e-3, warmup_steps=5), **data())
    before = trainer.validate()
    result = trainer.fit()
    after = trainer.validate()
    assert result.step == 60
    assert after["val_loss"] < 0.7 * before["val_loss"]
    for name in ("last.pt", "best.pt", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(2, 61, 2))
    assert any("val_loss_ema" in r for r in records)


def test_validation_number_is_fixed_between_calls(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), **data())
    assert trainer.validate() == trainer.validate()


def _assert_same_state(a: dict, b: dict, prefix=""):
    assert a.keys() == b.keys(), prefix
    for k in a:
        if isinstance(a[k], dict):
            _assert_same_state(a[k], b[k], f"{prefix}{k}.")
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), f"{prefix}{k} differs"
        elif k != "out_dir":
            assert a[k] == b[k], f"{prefix}{k}: {a[k]} != {b[k]}"


KILLABLE = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{tests!r}, {tests_root!r}]
    import oasis_lib.training.trainer as tr
    from test_trainer import tiny_config, data
    step = tr.Trainer.train_step
    def slow_step(self, x0):
        time.sleep(0.15)  # give the test time to kill us between checkpoints
        return step(self, x0)
    tr.Trainer.train_step = slow_step
    tr.train(tiny_config({out!r}, max_steps=24), **data())
""")


def test_sigkill_then_resume_equals_straight_run(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", max_steps=24), **data())
    straight.fit()

    out = tmp_path / "b"
    code = KILLABLE.format(tests=str(TESTS), tests_root=str(TESTS.parent), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": ""})
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        last = out / "last.pt"
        if last.exists() and load_checkpoint(last)["step"] >= 8:
            time.sleep(0.2)  # die between checkpoints, not right after one
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = load_checkpoint(last)["step"]
            break
        time.sleep(0.05)
    assert killed_at is not None, "the training subprocess finished before it could be killed"
    assert 8 <= killed_at < 24

    resumed = Trainer(tiny_config(out, max_steps=24), resume=True, **data())
    assert resumed.step == killed_at
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model", "ema", "optimizer", "lr_scheduler"):
        _assert_same_state(a[key], b[key], f"{key}.")
    assert a["step"] == b["step"] == 24


def test_interrupted_run_never_loses_more_than_one_interval(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=11, checkpoint_every=4)
    train(cfg, **data())
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 11  # final state always saved
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(cfg, **data())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=20, checkpoint_every=4), **data())
    real_forward = trainer.model.forward

    def poisoned(x, t):
        out = real_forward(x, t)
        return out * float("nan") if trainer.step >= 6 else out

    trainer.model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match="at step 7 .*last good checkpoint"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 5  # end of epoch 0: 40 slices / 8


def test_resume_requires_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*last.pt"):
        Trainer(tiny_config(tmp_path), resume=True, **data())


def test_load_model_uses_ema_and_matches_trainer(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=8), **data())
    trainer.fit()
    pipe = load_model(tmp_path / "last.pt", device="cpu")
    model, schedule, cfg = pipe.model, pipe.schedule, pipe.config
    assert cfg.preset == "tiny"
    assert schedule.T == cfg.diffusion.timesteps
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 500])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), trainer.ema.model(x, t))


def test_time_budget_stops_training_and_carries_over_a_resume(tmp_path):
    # A budget smaller than one step: exactly one optimiser step runs, and its time is saved.
    first = Trainer(tiny_config(tmp_path, max_minutes=1e-9), **data())
    first.fit()
    assert first.step == 1
    spent = load_checkpoint(tmp_path / "last.pt")["train_seconds"]
    assert spent == first.train_seconds > 0
    # Resumed with the same budget: already spent, so nothing more runs.
    again = Trainer(tiny_config(tmp_path, max_minutes=1e-9), resume=True, **data())
    again.fit()
    assert again.step == 1
    # A larger budget continues from the time already spent, up to the step limit.
    more = Trainer(tiny_config(tmp_path, max_minutes=10, max_steps=3), resume=True, **data())
    more.fit()
    assert more.step == 3
    assert more.train_seconds > spent


def test_cpu_clock_budget_counts_process_time(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_minutes=1e-9, budget_clock="cpu"), **data())
    assert trainer._clock is time.process_time
    trainer.fit()
    assert trainer.step == 1
    with pytest.raises(ValueError, match=r"unknown budget_clock 'gpu'; choose one of"):
        tiny_config(tmp_path, budget_clock="gpu")


def test_seed_recipe_builds_the_seed_baseline():
    from oasis_lib.config import SEED_RECIPE
    from oasis_lib.models.simple_unet import SimpleUNet

    cfg = TrainConfig.from_preset("cpu", **SEED_RECIPE)
    assert isinstance(build_model(cfg), SimpleUNet)
    schedule = build_schedule(cfg, warn=False)
    assert schedule.timesteps == 500
    assert float(schedule.alpha_bar[-1]) == pytest.approx(0.027, abs=0.001)  # the seed's pitfall
    recipe = (cfg.optimizer, cfg.lr, cfg.ema_decay, cfg.diffusion.loss_type)
    assert recipe == ("adam", 1e-3, 0, "l1")
