"""The trainer's safety parts (issue 15): run lock, divergence guard, resume checks, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch
from synthetic import BlobSlices

from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.config import TrainConfig
from oasis_lib.training.guards import (
    DivergenceError,
    DivergenceGuard,
    NonFiniteWeightsError,
    check_finite_weights,
)
from oasis_lib.training.resume import ResumeMismatchError, finished, merge_for_resume
from oasis_lib.training.run_dir import (
    RunLock,
    RunLockedError,
    append_jsonl,
    read_jsonl,
    tidy_run_dir,
)
from oasis_lib.training.signals import TrainingStopped
from oasis_lib.training.trainer import Trainer


def tiny_config(out, **over):
    base = dict(out_dir=str(out), image_size=16, max_steps=12, epochs=100, batch_size=8,
                checkpoint_every=4, validate_every=1, val_size=16, sample_every=1000,
                progress=False, log_every=1)
    return TrainConfig.from_preset("tiny", **{**base, **over})


def data():
    return {"train_set": BlobSlices(40, 16, seed=0), "val_set": BlobSlices(16, 16, seed=1)}


# ------------------------------------------------------------------ divergence guard
def test_guard_fires_after_patience_excesses_over_the_running_median():
    guard = DivergenceGuard(factor=10, window=4, patience=3)
    for step, loss in enumerate([1.0, 0.5, 0.4, 0.3, 0.2], start=1):
        guard.update(loss, step=step)  # falling losses never fire
    assert guard.median() == pytest.approx(0.35)  # window of 4: 0.5, 0.4, 0.3, 0.2
    guard.update(3.6, step=6)  # > 10 x 0.35: suspect, not added to the window
    assert guard.suspect
    guard.update(0.3, step=7)  # one lone spike: the streak ends
    assert not guard.suspect
    guard.update(100.0, step=8)
    guard.update(1e20, step=9)
    with pytest.raises(DivergenceError, match=r"diverged at step 10: .*10 x its running median "
                                              r"\(0\.3\) for 3 steps"):
        guard.update(1e30, step=10)


def test_guard_state_round_trips_and_plausible_rejects_blown_up_validation():
    guard = DivergenceGuard()
    for step in range(1, 20):
        guard.update(0.1, step=step)
    guard.saved("run/last.pt", 19)
    again = DivergenceGuard()
    again.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert again.state_dict() == guard.state_dict()
    assert again.plausible(0.2)
    assert not again.plausible(2.0)  # > 10 x median 0.1
    assert not again.plausible(float("nan"))
    assert "run/last.pt (step 19)" in again.good_text()


def test_finite_check_names_the_tensor():
    net = torch.nn.Linear(2, 2)
    check_finite_weights({"model": net}, step=3, last_good="x")
    with torch.no_grad():
        net.bias[0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"model weights hold NaN/inf at step 3 "
                                                    r"\(bias\)"):
        check_finite_weights({"model": net}, step=3, last_good="x")


def test_a_blown_up_loss_keeps_last_and_best_from_before(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=40, checkpoint_every=2), **data())
    real_forward = trainer.model.forward

    def hot(x, t):  # from step 8 on the network output is 1e4 times too large: finite, huge
        out = real_forward(x, t)
        return out * 1e4 if trainer.step >= 7 else out

    trainer.model.forward = hot
    with pytest.raises(DivergenceError, match=r"diverged at step 12.*last good checkpoint is "
                                              r".*last\.pt \(step 6\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6  # saved at 8, 10: suspect, skipped
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 5  # end of epoch 1; epoch 2 (step 10) was not plausible
    assert not (tmp_path / ".lock").exists()


# ------------------------------------------------------------------ resume
def test_resume_refuses_a_changed_recipe_and_names_both_values(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=4), **data()).fit()
    with pytest.raises(ResumeMismatchError, match=r"diffusion\.timesteps: checkpoint 1000, "
                                                  r"now 500; lr: checkpoint 0\.0002, now 0\.001"):
        Trainer(tiny_config(tmp_path, max_steps=8, lr=1e-3, diffusion={"timesteps": 500}),
                resume=True, **data())
    resumed = Trainer(tiny_config(tmp_path, max_steps=8, device="cpu"), resume=True, **data())
    assert resumed.step == 4  # length and speed knobs may change


def test_merge_uses_the_checkpoint_for_what_was_not_given():
    saved = tiny_config("a", lr=1e-3, max_steps=50).to_dict()
    new = TrainConfig.from_preset("cpu", out_dir="a").to_dict()  # the CLI's defaults
    merged = merge_for_resume(saved, new, checkpoint="a/last.pt", explicit=set())
    assert merged == {**saved, "out_dir": "a", "progress": True}
    assert finished({"step": 50}, merged) == "it reached max_steps=50 (step 50)"
    assert finished({"step": 49, "epoch": 1, "batch_in_epoch": 3}, merged) is None
    with pytest.raises(ResumeMismatchError, match="--override data_root"):
        merge_for_resume(saved, {**saved, "data_root": "/b"}, checkpoint="a/last.pt",
                         explicit={"data_root"})


# ------------------------------------------------------------------ run folder
def test_lock_refuses_a_live_process_and_takes_over_a_dead_ones(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": holder.pid,
                                                    "host": os.uname().nodename}))
        with pytest.raises(RunLockedError, match=rf"in use by pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=rf"left by pid {holder.pid} .*no longer running"):
        lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    RunLock(tmp_path).acquire()  # the same process may take it again
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_two_trainers_in_two_processes_cannot_share_a_folder(tmp_path):
    tests, out = os.path.dirname(__file__), str(tmp_path)
    code = (f"import sys, time; sys.path.insert(0, {tests!r}); from test_run_safety import *; "
            f"t = Trainer(tiny_config({out!r}), **data()); print('locked', flush=True); "
            "time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by pid {other.pid}"):
            Trainer(tiny_config(tmp_path), **data())
        assert not (tmp_path / "last.pt").exists()
    finally:
        other.kill()
        other.wait()


def test_torn_log_lines_are_skipped_and_ended(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    append_jsonl(log, {"step": 3})
    assert read_jsonl(log) == [{"step": 1}, {"step": 3}]
    (tmp_path / ".last.pt.x1.tmp").write_bytes(b"partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved = tidy_run_dir(tmp_path, fresh=True)
    assert not (tmp_path / ".last.pt.x1.tmp").exists()
    assert any(p.name == "metrics.jsonl" and "orphaned-" in str(p) for p in moved)


# ------------------------------------------------------------------ signals
def test_sigterm_saves_at_the_next_step_boundary(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=40, checkpoint_every=100), **data())
    step = trainer.train_step

    def step_then_signal(x0):
        loss = step(x0)
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` and Slurm send
        return loss

    trainer.train_step = step_then_signal
    with pytest.raises(TrainingStopped, match=r"SIGTERM received: saved step 3 to .*last\.pt; "
                                              r"continue with .*--resume") as info:
        trainer.fit()
    assert info.value.signum == signal.SIGTERM
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    assert not (tmp_path / ".lock").exists()
