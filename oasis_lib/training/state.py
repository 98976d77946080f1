"""What a training run's checkpoint holds and how a run is restored from it.

:class:`RunState` is the part of :class:`~oasis_lib.training.loop.TrainingLoop` that reads and
writes ``last.pt`` / ``best.pt``: the weights, EMA, optimiser, LR schedule, grad scaler, the
position in the data (step, epoch, batch in the epoch), the best validation loss, the time
spent, the divergence guard and the generator ``self.gen`` of every rank (a subclass's own
draws; the per-image draws of a step are keyed by the step and need no state, ``.draws``).
A subclass that trains more (the autoencoder's discriminator) extends :meth:`state_dict` and
:meth:`_restore`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import (
    atomic_save,
    get_rng_state,
    load_state_strict,
    run_checkpoint,
    set_rng_state,
)
from .distributed import gather_to_main, rank_seed
from .guards import check_finite_weights
from .run_dir import read_jsonl, write_text_atomic


class RunState:
    """Checkpoint writing and restoring of the loop (a mixin of ``TrainingLoop``: it uses the
    loop's attributes, set in ``TrainingLoop._init``)."""

    def state_dict(self) -> dict:
        return {"model": self.raw_model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(), "lr_scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "best_val_loss": self.best_val,
                "train_seconds": self.train_seconds,
                "rng": get_rng_state(self.gen), "config": self.cfg.to_dict(),
                "guard": self.guard.state_dict(), **self._rank_rng_states()}

    def _rank_rng_states(self) -> dict:
        """Every rank's RNG states, gathered to rank 0 (a collective: all ranks call it)."""
        if not self.dist.enabled:
            return {}
        return {"rng_ranks": gather_to_main(get_rng_state(self.gen), self.dist)}

    def _restore(self, ckpt: dict) -> None:
        load_state_strict(self.raw_model, ckpt["model"], source=str(self.last_path))
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["lr_scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch, self.best_val = int(ckpt["batch_in_epoch"]), ckpt["best_val_loss"]
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))  # older checkpoints: 0
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank], self.gen)
        else:  # another world size: the keyed draws are the same, self.gen is reseeded
            self.gen.manual_seed(rank_seed(self.cfg.seed, self.dist) + 7919 * self.step)
        self.guard.load_state_dict(ckpt.get("guard", {}))
        self.guard.saved(self.last_path, self.step)
        # Metric lines written after this checkpoint belong to lost work: drop them (and a
        # torn last line of a killed run).
        log = self.out / "metrics.jsonl"
        if log.exists() and self.dist.is_main:
            keep = [r for r in read_jsonl(log) if r.get("step", 0) <= self.step]
            write_text_atomic(log, "".join(json.dumps(r) + "\n" for r in keep))

    def save(self, path: Path | None = None) -> Path:
        """Write the training state (rank 0 writes; every rank must call it under torchrun).
        While the loss is suspect (``training.guards``) nothing is written and the last good
        file is returned; non-finite weights raise instead of being saved."""
        path = Path(path or self.last_path)
        if self.guard.suspect:  # (the same on every rank: the guard sees the all-reduced loss)
            return Path(self.guard.last_good[0]) if self.guard.last_good else path
        check_finite_weights({"model": self.raw_model, "EMA": self.ema.model}, step=self.step,
                             last_good=self.guard.good_text())
        state = self.state_dict()
        if self.dist.is_main:
            with run_checkpoint(self.guard.last_good):  # a full disk names the last good one
                atomic_save(state, path)
        if path == self.last_path:
            self.guard.saved(path, self.step)
        return path
