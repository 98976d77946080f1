"""One rank of a test run: ``python ddp_worker.py SPEC.json`` with torchrun's variables set.

SPEC holds ``mode`` ("step": one optimiser step on the first global batch, then the rank's
gradients and weights go to ``results/rank{r}.pt``; "train": ``oasis_lib.training.train``),
``config`` (TrainConfig overrides of the tiny preset), ``results`` (a folder outside the run's
out_dir) and ``step_sleep`` (seconds per step, to give a test time to kill a rank). A
``condition`` in the config trains on ``CondBlobs`` (named image, mask, slice index), and "step"
mode also saves the conditions each micro-step saw (after ablation and dropout, recorded
without changing them). ``steps``: how many steps "step" mode takes (default 1; the gradients
saved are the last step's). The trainer's draws are its own (keyed by step and slot): nothing
here replaces them. Every file or folder
the rank creates or writes under ``out_dir`` is recorded (``sys.addaudithook``) and written to
``results/writes_rank{r}.json`` at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: synthetic.py
from synthetic import BlobSlices, CondBlobs  # noqa: E402

from oasis_lib.config import TrainConfig  # noqa: E402
from oasis_lib.training import Trainer, train  # noqa: E402
from oasis_lib.training.distributed import RankFailure  # noqa: E402

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def record_writes(root: Path, log: Path) -> None:
    root, writes = str(root.resolve()), set()

    def hook(event, args):
        path = None
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            mode, flags = args[1], args[2] or 0
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & _WRITE_FLAGS:
                path = args[0]
        elif event in ("os.mkdir", "os.remove"):
            path = args[0]
        elif event in ("os.rename", "os.replace"):
            path = args[1]  # the destination
        if path is not None:
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(root):
                writes.add(f"{event} {path}")

    sys.addaudithook(hook)
    atexit.register(lambda: log.write_text(json.dumps(sorted(writes))))


def record_conditions(seen: list) -> None:
    """Append each micro-step's training condition (``Trainer.keyed_condition``'s result,
    unchanged) to ``seen``."""
    real = Trainer.keyed_condition

    def keyed_condition(self, cond):
        out = real(self, cond)
        seen.append({"mask": out.mask.clone(), "mask_present": out.present("mask").clone(),
                     "slice_present": out.present("slice").clone()})
        return out

    Trainer.keyed_condition = keyed_condition


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    results = Path(spec["results"])
    results.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.from_preset("tiny", **spec["config"])
    record_writes(Path(cfg.out_dir), results / f"writes_rank{rank}.json")
    conditional = cfg.condition != "none"
    seen: list = []
    if conditional:
        record_conditions(seen)
    if spec.get("step_sleep"):
        real_step = Trainer.train_step

        def slow_step(self, x0):
            time.sleep(spec["step_sleep"])
            return real_step(self, x0)
        Trainer.train_step = slow_step
    kind = CondBlobs if conditional else BlobSlices
    data = {"train_set": kind(40, 16, seed=0), "val_set": kind(16, 16, seed=1)}
    try:
        if spec["mode"] == "step":
            tr = Trainer(cfg, **data)
            indices = tr._rank_batches(0)[:spec.get("steps", 1)]
            for idx in indices:
                batch = default_collate([tr.train_set[i] for i in idx])
                tr.train_step(tr.step_inputs(batch))
            torch.save({"grads": {n: p.grad.clone() for n, p in tr.raw_model.named_parameters()},
                        "weights": {n: p.detach().clone()
                                    for n, p in tr.raw_model.named_parameters()},
                        "ema": tr.ema.state_dict()["model"], "indices": indices[0],
                        "all_indices": indices, "conditions": seen},
                       results / f"rank{rank}.pt")
        else:
            train(cfg, resume=spec.get("resume", False), **data)
    except RankFailure as e:
        print(e, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
