"""DDP on the CPU: 2 gloo processes launched as torchrun would (RANK, WORLD_SIZE, ...).

Each test bounds every process it starts by a timeout, so a hang fails the test instead of
blocking CI. The runs are the tiny preset on 16x16 synthetic slices (tests/synthetic.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synthetic import CondBlobs

from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.training.distributed import (
    DistContext,
    RankFailure,
    check_batch_split,
    collective_guard,
    env_ranks,
    rank_seed,
    shard_batches,
    slot_offset,
)

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]
LIMIT = 180  # seconds any one launch may take before the test kills it and fails


def config(out, **over):
    base = dict(out_dir=str(out), image_size=16, max_steps=6, epochs=100, batch_size=8,
                checkpoint_every=2, validate_every=1, val_size=8, sample_every=1, sample_n=4,
                sample_steps=2, progress=False, log_every=1, hflip=True, dist_timeout_s=30.0)
    return {**base, **over}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, name: str, spec: dict, world: int) -> list[subprocess.Popen]:
    """Start ``world`` worker processes with the environment torchrun gives its ranks."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    procs = []
    for r in range(world):
        if world > 1:
            env.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(path)], env=dict(env),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], limit: float = LIMIT) -> list[tuple[int, str]]:
    """Wait for every process (killing all of them past ``limit``); (returncode, stderr)."""
    deadline, out = time.time() + limit, []
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(deadline - time.time(), 1))
            out.append((p.returncode, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rank did not finish within {limit} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def run(tmp: Path, name: str, spec: dict, world: int) -> None:
    for rank, (code, err) in enumerate(finish(launch(tmp, name, spec, world))):
        assert code == 0, f"rank {rank} of {name} failed:\n{err[-3000:]}"


def one_step(tmp: Path, name: str, world: int, *, steps: int = 1, **over) -> dict:
    res = tmp / name
    run(tmp, name, {"mode": "step", "results": str(res), "steps": steps,
                    "config": config(tmp / f"{name}_run", **over)}, world)  # (flips on)
    return {r: torch.load(res / f"rank{r}.pt", weights_only=True) for r in range(world)}


def assert_close_dicts(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


def assert_same(a, b, where: str = "") -> None:
    """Bit-identical nested checkpoint entries (dicts, lists, tensors, numbers)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}{k}.")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}{i}.")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a} != {b}"


# ---------------------------------------------------------------- in-process, no processes
def test_env_ranks_reads_torchrun_variables_and_rejects_nonsense():
    assert env_ranks({}) == (0, 1, 0)
    assert env_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(ValueError, match="inconsistent torchrun environment: RANK=4"):
        env_ranks({"RANK": "4", "WORLD_SIZE": "4"})


def test_sharding_covers_each_global_batch_once_and_seeds_per_rank():
    batches = [list(range(i, i + 8)) for i in range(0, 24, 8)]
    shards = [shard_batches(batches, DistContext(rank=r, world_size=2)) for r in range(2)]
    for b, s0, s1 in zip(batches, *shards, strict=True):
        assert s0 + s1 == b
        assert len(s0) == 4
    assert shard_batches(batches, DistContext()) is batches
    assert [rank_seed(5, DistContext(rank=r, world_size=2)) for r in range(2)] == [10, 11]
    assert rank_seed(5, DistContext()) == 5  # world size 1: today's stream
    # the slot (position in the global batch) of each rank's first image of each micro-step
    assert [slot_offset(8, DistContext(rank=r, world_size=2), 2, k)
            for r in range(2) for k in range(2)] == [0, 2, 4, 6]
    assert slot_offset(8, DistContext(), 8) == 0
    assert check_batch_split(8, DistContext(world_size=2), 2) == 2
    with pytest.raises(ValueError, match="multiple of world_size x grad_accum = 2 x 3 = 6"):
        check_batch_split(8, DistContext(world_size=2), 3)


def test_collective_guard_names_the_failure_and_lets_other_errors_through():
    ctx = DistContext(rank=1, world_size=2, backend="gloo", timeout_s=5)
    with pytest.raises(RankFailure, match=r"rank 1 of 2: barrier failed: another rank died .*5 s"):
        with collective_guard(ctx, "barrier"):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:545] Connection reset by peer")
    with pytest.raises(RuntimeError, match="shape mismatch") as info:
        with collective_guard(ctx, "barrier"):
            raise RuntimeError("shape mismatch")
    assert not isinstance(info.value, RankFailure)


# ---------------------------------------------------------------- 2 processes, gloo
@pytest.mark.slow
def test_two_ranks_of_b_equal_one_process_of_2b(tmp_path):
    # (a) batch_size is the global batch: 1 x 8 and 2 ranks x 4 see the same 8 slices.
    single = one_step(tmp_path, "single", world=1)[0]
    ddp = one_step(tmp_path, "ddp", world=2)
    assert sorted(ddp[0]["indices"] + ddp[1]["indices"]) == sorted(single["indices"])
    for r in range(2):
        assert_close_dicts(ddp[r]["grads"], single["grads"], rtol=1e-4, atol=1e-6)
        assert_close_dicts(ddp[r]["weights"], single["weights"], rtol=1e-5, atol=1e-6)
    assert_close_dicts(ddp[0]["ema"], ddp[1]["ema"], rtol=0, atol=0)  # identical on every rank
    grads = torch.cat([g.flatten() for g in single["grads"].values()])
    assert grads.abs().max() > 1e-3  # a real step, not zeros compared with zeros


@pytest.mark.slow
def test_two_ranks_accumulating_two_equal_one_rank_of_4b(tmp_path):
    # (b) 2 ranks x 2 micro-batches of 2 == 1 process x 8 (batch_size 8 = 4B with B = 2).
    single = one_step(tmp_path, "single", world=1)[0]
    accum = one_step(tmp_path, "accum", world=2, grad_accum=2)
    for r in range(2):
        assert_close_dicts(accum[r]["grads"], single["grads"], rtol=1e-4, atol=1e-6)
        assert_close_dicts(accum[r]["weights"], single["weights"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_conditional_two_ranks_equal_one_process(tmp_path, grad_accum):
    # (f) mask+slice with condition dropout and mask ablation, three steps (the zero-initialised
    # output layers pass no gradient to the slice embedding before step 3): each rank's share of
    # the masks and slice indices travels with its images (flipped with them), and the
    # conditions (drawn per image, keyed by step and slot like the flips, t and the noise) are
    # those of the one-process run.
    over = dict(condition="mask+slice", p_uncond=0.5, mask_ablation_p=0.5)
    single = one_step(tmp_path, "single", world=1, steps=3, **over)[0]
    ddp = one_step(tmp_path, "ddp", world=2, steps=3, grad_accum=grad_accum, **over)
    for k, seen in enumerate(single["conditions"]):  # (one per micro-step on the ranks)
        for name, value in seen.items():
            both = torch.cat([c[name] for r in range(2) for c in
                              ddp[r]["conditions"][k * grad_accum:(k + 1) * grad_accum]])
            assert torch.equal(both, value), f"step {k + 1}: {name}"
    seen = single["conditions"]
    present = torch.cat([c["mask_present"] for c in seen])
    assert present.any()
    assert not present.all()  # some samples dropped to the null condition
    masks = CondBlobs(40, 16, seed=0).masks
    full = torch.cat([masks[idx] for idx in single["all_indices"]])
    assert (torch.cat([c["mask"] for c in seen]) != full).any()  # some classes ablated
    for r in range(2):
        assert_close_dicts(ddp[r]["grads"], single["grads"], rtol=1e-4, atol=1e-6)
        assert_close_dicts(ddp[r]["weights"], single["weights"], rtol=1e-5, atol=1e-6)
    # both conditions reach the gradient: the slice table, and conv_in's mask channels
    assert single["grads"]["slice_embed.table.weight"].abs().max() > 0
    assert single["grads"]["conv_in.weight"][:, 1:].abs().max() > 0


def _train_spec(tmp: Path, name: str, **over) -> dict:
    return {"mode": "train", "results": str(tmp / f"{name}_results"),
            "config": config(tmp / name, **over)}


@pytest.mark.slow
def test_only_rank_0_writes_files(tmp_path):
    # (d) checkpoints, metrics and the sample grids: rank 0 alone.
    run(tmp_path, "a", _train_spec(tmp_path, "a"), world=2)
    res = tmp_path / "a_results"
    w0 = json.loads((res / "writes_rank0.json").read_text())
    w1 = json.loads((res / "writes_rank1.json").read_text())
    assert w1 == []
    names = {Path(w.split(" ", 1)[1]).name for w in w0}
    assert {"metrics.jsonl", "last.pt", "best.pt", "epoch_0001.png"} <= names
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"last.pt", "best.pt", "samples"}
    ckpt = load_checkpoint(tmp_path / "a" / "last.pt")
    assert ckpt["step"] == 6
    assert len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["generator"], ckpt["rng_ranks"][1]["generator"])


def _wait_for_checkpoint(path: Path, step: int, procs, limit: float = LIMIT) -> int:
    deadline = time.time() + limit
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if path.exists() and load_checkpoint(path)["step"] >= step:
            return load_checkpoint(path)["step"]
        time.sleep(0.05)
    for p in procs:
        p.kill()
    pytest.fail(f"no checkpoint at step >= {step} within {limit} s")


@pytest.mark.slow
def test_sigkill_of_one_rank_then_resume_equals_straight_run(tmp_path):
    # (c) kill -9 rank 1 between checkpoints; rank 0 stops with the clear message; a 2-rank
    # --resume ends with the same weights, EMA, optimiser and RNG as an uninterrupted run.
    over = dict(max_steps=10, checkpoint_every=3, validate_every=1000, sample_every=1000)
    run(tmp_path, "straight", _train_spec(tmp_path, "straight", **over), world=2)

    spec = {**_train_spec(tmp_path, "b", **over), "step_sleep": 0.3}
    procs = launch(tmp_path, "b", spec, world=2)
    _wait_for_checkpoint(tmp_path / "b" / "last.pt", 3, procs)
    time.sleep(0.45)  # between checkpoints, not right after one
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    (code0, err0), _ = finish(procs, limit=60)
    assert code0 == 1, err0[-2000:]
    assert "error: rank 0 of 2" in err0, err0[-2000:]
    assert "--resume" in err0
    assert time.time() - t0 < 30  # well within the process-group timeout (30 s)
    killed_at = load_checkpoint(tmp_path / "b" / "last.pt")["step"]
    assert 3 <= killed_at < 10

    run(tmp_path, "b_resume", {**_train_spec(tmp_path, "b", **over), "resume": True}, world=2)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 10
    for key in ("model", "ema", "optimizer", "lr_scheduler"):
        assert_same(a[key], b[key], f"{key}.")
    for r in range(2):
        assert torch.equal(a["rng_ranks"][r]["generator"], b["rng_ranks"][r]["generator"])


@pytest.mark.slow
def test_a_stuck_rank_makes_the_other_stop_within_the_timeout(tmp_path):
    # (e) rank 1 frozen (SIGSTOP: alive but silent); rank 0 gives up after dist_timeout_s.
    over = dict(max_steps=50, checkpoint_every=2, validate_every=1000, sample_every=1000,
                dist_timeout_s=4.0)
    procs = launch(tmp_path, "e", {**_train_spec(tmp_path, "e", **over), "step_sleep": 0.2},
                   world=2)
    try:
        _wait_for_checkpoint(tmp_path / "e" / "last.pt", 2, procs)
        procs[1].send_signal(signal.SIGSTOP)
        t0 = time.time()
        _, err0 = procs[0].communicate(timeout=40)
        waited = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 1, err0[-2000:]
    assert "error: rank 0 of 2" in err0, err0[-2000:]
    assert "4 s timeout" in err0
    assert waited < 25  # the 4 s timeout plus start-up noise on a loaded machine


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (
    Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
def test_torchrun_cli_trains_on_two_ranks(tmp_path, fake_root):
    # The real launcher and the real command line, on the fake OASIS tree (6 train slices).
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "run"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "oasis_lib", "train",
           "--data-root", str(fake_root), "--preset", "tiny", "--image-size", "16",
           "--batch-size", "4", "--grad-accum", "2", "--max-steps", "2", "--epochs", "2",
           "--sample-every", "100", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("precision: fp32 as configured; 2 ranks (gloo), 1 images per "
                             "rank and micro-step") == 1
    assert proc.stdout.count("trained to step 2") == 1  # printed by rank 0 only
    assert (out / "loss_curve.png").is_file()  # drawn by rank 0's command line
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["grad_accum"] == 2
    assert ckpt["step"] == 2
    assert len(ckpt["rng_ranks"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (
    Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
@pytest.mark.parametrize("condition", [None, "mask+slice"])
def test_torchrun_two_ranks_end_with_the_weights_of_one_process(tmp_path, fake_root, condition):
    # Rank invariance through the real command line, flips on: torchrun with 2 ranks and one
    # plain process, same global batch (4), three steps; each image draws its flip, t, noise
    # (and condition ablation / dropout) from (seed, step, slot), so the runs differ only by
    # the order of the gradient all-reduce: float32 rounding, ~1e-7 relative in a gradient.
    # AdamW divides each gradient by its running RMS (+ eps 1e-8), so where a gradient is
    # near eps that rounding reaches its update: up to ~1e-3 of a step (measured: 1.8e-6 on
    # one weight in 6,912 at lr 1e-3). Tolerance: every weight within 1% of one step (1e-5 at
    # lr 1e-3), and the mean difference below 1e-8; draws that differ (the old per-rank
    # streams, seed * world + rank) move nearly every weight by ~lr (1e-3).
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = ["train", "--data-root", str(fake_root), "--preset", "tiny", "--image-size", "16",
            "--batch-size", "4", "--max-steps", "3", "--epochs", "3", "--validate-every", "100",
            "--sample-every", "100", "--seed", "3", "--lr", "1e-3", "--warmup-steps", "0",
            "--no-progress"]  # (full-size steps from the first: runs that drew apart differ)
    if condition:
        args += ["--condition", condition, "--p-uncond", "0.5", "--mask-ablation-p", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = {"one": [sys.executable, "-m", "oasis_lib"],
            "two": [torchrun, "--standalone", "--nproc_per_node=2", "-m", "oasis_lib"]}
    ckpts = {}
    for name, cmd in runs.items():
        proc = subprocess.run([*cmd, *args, "--out", str(tmp_path / name)], env=env,
                              capture_output=True, text=True, timeout=LIMIT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ckpts[name] = load_checkpoint(tmp_path / name / "last.pt")
    one, two = ckpts["one"], ckpts["two"]
    assert one["step"] == two["step"] == 3
    assert one["config"]["hflip"]
    assert two["config"]["hflip"]
    assert len(two["rng_ranks"]) == 2  # (the 2-rank run really had two ranks)
    for key in ("model", "ema"):
        a, b = (ckpt[key]["model"] if key == "ema" else ckpt[key] for ckpt in (one, two))
        diff = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])
        print(f"{condition} {key}: max {diff.max():.3g}, mean {diff.mean():.3g}")
        assert diff.max() < 1e-5, key
        assert diff.mean() < 1e-8, key
    moved = max(float((one["model"][k] - one["ema"]["model"][k]).abs().max())
                for k in one["model"] if one["model"][k].is_floating_point())
    assert moved > 1e-4  # the weights trained away from the EMA's: real steps were compared
