"""One rank of a test run: ``python ddp_worker.py SPEC.json`` with torchrun's variables set.

SPEC holds ``mode`` ("step": one optimiser step on the first global batch, then the rank's
gradients and weights go to ``results/rank{r}.pt``; "train": ``oasis_lib.training.train``),
``config`` (TrainConfig overrides of the tiny preset), ``results`` (a folder outside the run's
out_dir), ``keyed_draws`` (t and noise drawn from each image's content instead of the trainer's
generator, so runs that split the same batch differently see the same draws) and
``step_sleep`` (seconds per step, to give a test time to kill a rank). A ``condition`` in the
config trains on ``CondBlobs`` (image, mask, slice index); with ``keyed_draws`` the mask
ablation and condition dropout are keyed by each image's content too (``keyed_condition``),
and "step" mode also saves the conditions each step saw. ``steps``: how many steps "step"
mode takes (default 1; the gradients saved are the last step's). Every file or folder
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
from oasis_lib.diffusion.pipeline import DiffusionPipeline  # noqa: E402
from oasis_lib.models.conditioning import Condition  # noqa: E402
from oasis_lib.training import Trainer, train  # noqa: E402
from oasis_lib.training import trainer as trainer_module  # noqa: E402
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


def image_keys(x0) -> list[int]:
    """One integer per image of a batch, fixed by its content."""
    return [int((x.double().sum() * 1e4).round()) % 2**31 for x in x0.cpu()]


def keyed_loss(real):
    """``DiffusionPipeline.loss`` whose training draws (t, noise) are fixed by each image's
    content, not by the rank's generator (validation passes its own t and noise)."""
    def loss(self, x0, *, t=None, noise=None, generator=None, **kw):
        if t is None:
            keys = image_keys(x0)
            t = torch.tensor([k % self.schedule.T for k in keys])
            noise = torch.stack([torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
                                 for k, x in zip(keys, x0.cpu(), strict=True)])
        return real(self, x0, t=t.to(x0.device), noise=noise.to(x0.device), **kw)
    return loss


def keyed_condition(seen: list) -> None:
    """``Trainer.compute_loss`` (unchanged) with ``training_condition``'s ablation and dropout
    draws made per image from its content key (+1, apart from the noise's) instead of the
    rank's generator; each step's conditions are appended to ``seen``."""
    real_compute, real_condition = Trainer.compute_loss, trainer_module.training_condition
    keys: list[int] = []

    def compute_loss(self, x0, *extra):
        keys[:] = image_keys(x0)
        return real_compute(self, x0, *extra)

    def training_condition(cond, *, generator=None, **kw):
        rows = [real_condition(cond.select(slice(i, i + 1)), **kw,
                               generator=torch.Generator().manual_seed((k + 1) % 2**31))
                for i, k in enumerate(keys)]
        out = Condition.cat(rows)
        seen.append({"mask": out.mask.clone(), "mask_present": out.present("mask").clone(),
                     "slice_present": out.present("slice").clone()})
        return out

    Trainer.compute_loss = compute_loss
    trainer_module.training_condition = training_condition


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    results = Path(spec["results"])
    results.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.from_preset("tiny", **spec["config"])
    record_writes(Path(cfg.out_dir), results / f"writes_rank{rank}.json")
    conditional = cfg.condition != "none"
    seen: list = []
    if spec.get("keyed_draws"):
        DiffusionPipeline.loss = keyed_loss(DiffusionPipeline.loss)
        if conditional and spec.get("keyed_condition", True):
            keyed_condition(seen)
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
