"""The training loop every run shares: optimiser, EMA, checkpoints, resume, budget, DDP.

:class:`TrainingLoop` knows nothing of what it trains: a subclass says that with its hooks
(``build``, ``compute_loss``, ``_fixed_validation_batch``, ``validate``, ``sample_grid``):
``training.trainer.Trainer`` (diffusion) and ``training.autoencoder.AutoencoderTrainer``.

* AdamW, warm-up then constant or cosine LR (``training.optim``), clipping, EMA (``.ema``);
* validation every ``validate_every`` epochs; ``best.pt`` is chosen by the EMA's validation
  loss (metrics go to ``metrics.jsonl``; ``viz.plotting.plot_loss_curve`` draws them);
* ``last.pt`` written atomically every ``checkpoint_every`` steps and at each epoch end;
  ``--resume`` continues from it. The data order is a permutation seeded by (seed, epoch);
  every per-image draw of a step (flip, t, noise, ...) is keyed by (seed, step, the image's
  slot in the global batch) (:mod:`.draws`), so on the CPU a killed-and-resumed run ends with
  the same weights as an uninterrupted one;
* a non-finite loss stops training with the step named; the last good checkpoint stays;
  so does a blown-up finite loss (``training.guards``: a running median times 10), and no
  checkpoint is written with non-finite weights; the run folder is locked by one process
  (``training.run_dir``); SIGTERM/SIGINT save at the next step boundary and raise
  ``TrainingStopped`` (``training.signals``); a resume must use the checkpoint's recipe
  (``training.resume``);
* under torchrun, DistributedDataParallel (:mod:`oasis_lib.training.distributed`): every rank
  takes ``batch_size / world_size`` of each global batch and accumulates ``grad_accum``
  micro-batches with ``no_sync``; its images draw what they would draw in one process (keyed
  draws), so N ranks end with the weights of one process to float rounding (the order of the
  gradient all-reduce); the EMA is updated on every rank from the same all-reduced weights
  (identical, no communication); rank 0 alone writes files. Dropout (off by default) draws from
  each rank's own torch generator (seed * world_size + rank) and is not rank-invariant.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..data import load_splits
from ..seeding import cpu_generator, seed_everything
from .distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    check_batch_split,
    collective_guard,
    init_distributed,
    no_sync,
    rank_seed,
    shard_batches,
    slot_offset,
    wrap_ddp,
)
from .draws import StepDraws, flip_images
from .ema import EMA
from .guards import DivergenceGuard, check_batches
from .optim import build_lr_scheduler, build_optimizer
from .precision import autocast_dtype, resolve_precision  # noqa: F401 (autocast_dtype: API)
from .progress import TrainProgress, limit_reached
from .resume import FREE, merge_for_resume
from .run_dir import RunLock, append_jsonl, tidy_run_dir
from .signals import GracefulStop, TrainingStopped, stopped
from .state import RunState

logger = logging.getLogger(__name__)

# Fields a resumed run takes from the new config instead of the checkpoint.
RESUME_OVERRIDES = FREE


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; training stopped without overwriting the last checkpoint."""


@dataclass
class TrainResult:
    step: int
    epoch: int
    best_val_loss: float | None
    out_dir: Path
    images_per_second: float


def _images(batch):
    return batch[0] if isinstance(batch, list | tuple) else batch


class TrainingLoop(RunState):
    """The loop; subclasses define what is trained (the hooks). Pass datasets to skip loading
    them from disk."""

    needs_masks = False  # load the tissue masks with the slices (a subclass's validation may)

    def __init__(self, config: TrainConfig, *, resume: bool = False, train_set=None,
                 val_set=None):
        config.validate()
        self.out = Path(config.out_dir)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        ckpt = None
        if resume:
            if not self.last_path.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint at {self.last_path}")
            ckpt = load_checkpoint(self.last_path)
            # The run's recipe comes from the checkpoint and must match the caller's; its
            # length and the speed knobs (which do not change the maths) come from the caller.
            saved = type(config).from_dict(ckpt["config"]).to_dict()  # newer fields: defaults
            config = type(config).from_dict(merge_for_resume(
                saved, config.to_dict(), checkpoint=str(self.last_path),
                allow=("data_root",), check_data_root=train_set is None))  # moved data: warns
        self.cfg = cfg = config
        seed_everything(cfg.seed)
        self.dist, self.device = init_distributed(cfg.device, timeout_s=cfg.dist_timeout_s)
        self.lock = RunLock(self.out)  # held by rank 0, before anything in the folder is written
        self.lock.acquire_on_main(self.dist)  # (taken: every rank stops, not only rank 0)
        try:
            self._init(cfg, ckpt, train_set, val_set)
        except BaseException:
            self.lock.release()
            raise

    def _init(self, cfg: TrainConfig, ckpt: dict | None, train_set, val_set) -> None:
        self.micro_batch = check_batch_split(cfg.batch_size, self.dist, cfg.grad_accum)
        self.amp_dtype, self.precision_reason = resolve_precision(cfg.precision, self.device)
        logger.info("precision: %s", self.precision_reason)
        if train_set is None or val_set is None:
            opts = {"with_masks": self.needs_masks, "train_splits": cfg.train_splits}
            train_set, val_set = load_splits(cfg.data_root, cfg.image_size, augment=False, **opts)
        check_batches(train_set, cfg.batch_size)
        self.train_set, self.val_set = train_set, val_set
        self.guard = DivergenceGuard()
        self.raw_model = self.build().to(self.device)
        self.encoded = self.pipeline is not None and self.pipeline.autoencoder is not None
        if self.encoded:  # latent diffusion: train on cached, scaled latents
            from .latents import latent_datasets

            self.pipeline.to(self.device)
            # Rank 0 encodes and writes the latent cache; the other ranks then read it.
            if not self.dist.is_main:
                barrier(self.dist, "waiting for rank 0's latent cache")
            self.train_set, self.val_set, _ = latent_datasets(
                self.pipeline, cfg, self.train_set, self.val_set,
                progress=cfg.progress and self.dist.is_main)
            if self.dist.is_main:
                barrier(self.dist, "latent cache written")
        if cfg.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        compiled = torch.compile if cfg.compile else (lambda net: net)
        self.eval_model = compiled(self.raw_model)  # unwrapped: validation runs on one rank
        trained = self.forward_module(self.raw_model)  # the network, or a module around it
        self.model = self.eval_model if trained is self.raw_model else compiled(trained)
        if self.dist.enabled:  # dropout masks differ per rank; the weights come from rank 0
            torch.manual_seed(rank_seed(cfg.seed, self.dist))
        self.model = wrap_ddp(self.model, self.dist, self.device)
        self.ema = EMA(self.raw_model, cfg.ema_decay, warmup=cfg.ema_warmup,
                       power=cfg.ema_power, inv_gamma=cfg.ema_inv_gamma)
        self.opt = build_optimizer(cfg, self.raw_model.parameters(), self.device)
        self.sched = build_lr_scheduler(cfg, self.opt)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.gen = cpu_generator(rank_seed(cfg.seed, self.dist))  # a subclass's own draws
        self.step = self.epoch = self.batch_in_epoch = 0
        self.draws = self._draws()  # the keyed draws of this rank's images (.draws)
        self.best_val: float | None = None
        self.train_seconds = 0.0  # time spent in optimiser steps (max_minutes counts this)
        self._clock = time.process_time if cfg.budget_clock == "cpu" else time.perf_counter
        self._fixed_validation_batch()
        if ckpt is not None:
            self._restore(ckpt)
        elif self.out.exists() and self.last_path.exists():
            raise FileExistsError(f"{self.out} already holds a run (last.pt); pass resume=True "
                                  "(--resume) to continue it or choose another out_dir")
        if self.dist.is_main:
            tidy_run_dir(self.out, fresh=ckpt is None)
        barrier(self.dist, "start-up barrier (every rank has read the checkpoint)")

    # ------------------------------------------------------------------ what is trained
    def build(self) -> torch.nn.Module:
        """The network to optimise (set ``self.pipeline`` too, or None), before moving it."""
        raise NotImplementedError

    def forward_module(self, net: torch.nn.Module) -> torch.nn.Module:
        """What ``self.model`` calls in training (compiled, DDP-wrapped): the network itself,
        or a module around it sharing its parameters (called once, after :meth:`build`)."""
        return net

    def compute_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (on the device); its random draws come from
        ``self.draws`` (keyed by step and slot, :class:`.draws.StepDraws`)."""
        raise NotImplementedError

    def _fixed_validation_batch(self) -> None:
        """Fix what :meth:`validate` scores (called once, after :meth:`build`)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """``{"val_loss": live weights, "val_loss_ema": EMA weights, ...}``."""
        raise NotImplementedError

    def sample_grid(self, path: Path) -> Path:
        """A PNG showing what the EMA weights do now."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.out / "metrics.jsonl", record)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches: a permutation seeded by (seed, epoch), last partial dropped."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.train_set), generator=g).tolist()
        bs = self.cfg.batch_size
        return [perm[i:i + bs] for i in range(0, len(perm) - bs + 1, bs)]

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's share of each of the epoch's global batches (all of it at world 1)."""
        return shard_batches(self._epoch_batches(epoch), self.dist)

    # ------------------------------------------------------------------ the loop
    def _draws(self, micro_step: int = 0) -> StepDraws:
        """The keyed draws of this rank's micro-batch ``micro_step`` of the current step."""
        first = slot_offset(self.cfg.batch_size, self.dist, self.micro_batch, micro_step)
        return StepDraws(self.cfg.seed, self.step, first)

    def step_inputs(self, batch):
        """A loader batch -> :meth:`train_step`'s input: the images (or (images, *extras))."""
        return _images(batch)

    def train_step(self, x0) -> float:
        """One optimiser step on this rank's share ``x0`` of a global batch (or a tuple of
        :meth:`step_inputs`, extras flipped too if >= 3-d); returns the global mean loss."""
        c = self.cfg
        self.opt.zero_grad(set_to_none=True)
        total, parts = 0.0, (tuple(x0) if isinstance(x0, list | tuple) else (x0,))
        chunks = [parts] if c.grad_accum == 1 else list(
            zip(*(p.split(self.micro_batch) for p in parts), strict=True))
        for k, (xk, *extra) in enumerate(chunks):
            self.draws = self._draws(k)  # keyed by (seed, step, slot): any number of ranks
            if c.hflip and not self.encoded:
                xk, *extra = flip_images((xk, *extra), self.draws.flips(xk.shape[0]))
            xk = self._to_device(xk)
            # DDP all-reduces the gradients in the backward of the last micro-step only.
            with no_sync(self.model, k < len(chunks) - 1), \
                    collective_guard(self.dist, f"gradient all-reduce of step {self.step + 1}"):
                with self._autocast():
                    loss = self.compute_loss(xk, *extra)
                if not self.dist.enabled:
                    self._check_finite(loss)
                self.scaler.scale(loss / len(chunks) if len(chunks) > 1 else loss).backward()
            total += float(loss.detach()) / len(chunks)
        # Every rank stops together on a non-finite loss anywhere (before any weight changes).
        total = all_reduce_mean(total, self.dist)
        self._check_finite(torch.tensor(total))
        self.guard.update(total, step=self.step + 1)  # a blown-up finite loss (guards.py)
        if c.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.ema.update(self.raw_model)
        self.step += 1
        return total

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {self.step + 1} (epoch {self.epoch}); "
                f"stopped without saving. {self.guard.good_text()}")

    def _done(self) -> bool:
        """The stopping rule (``training.progress.limit_reached``; the epochs end the loop)."""
        done = limit_reached(self.cfg, self.step, self.train_seconds)
        if self.cfg.max_minutes is not None and self.dist.enabled:  # rank 0's clock decides
            done = bool(broadcast_object(done, self.dist))
        return done

    def fit(self) -> TrainResult:
        c = self.cfg
        self.model.train()
        t0, images = time.perf_counter(), 0
        t_log = t0
        if self.dist.is_main:
            self.lock.acquire()  # again, if an earlier fit() released it
        signals = contextlib.ExitStack()
        stop = signals.enter_context(GracefulStop())  # SIGTERM/SIGINT: stop at a step boundary
        # One bar, counting the limit that ends the run first (training.progress).
        progress = TrainProgress(c, len(self.train_set) // c.batch_size, step=self.step,
                                 spent_s=self.train_seconds, show=c.progress and self.dist.is_main)
        try:
            for epoch in range(self.epoch, c.epochs):
                if self._done():
                    break
                self.epoch = epoch
                all_batches = self._rank_batches(epoch)
                batches = all_batches[self.batch_in_epoch:]
                loader = DataLoader(self.train_set, batch_sampler=batches,
                                    num_workers=c.num_workers,
                                    pin_memory=self.device.type == "cuda",  # async H2D copies
                                    generator=torch.Generator().manual_seed(epoch))
                # Epochs are counted from 1 in everything a person reads (bars, logs, files);
                # self.epoch is the number of finished epochs.
                for batch in loader:
                    t_step = self._clock()
                    loss = self.train_step(self.step_inputs(batch))
                    self.train_seconds += self._clock() - t_step
                    self.batch_in_epoch += 1
                    images += c.batch_size
                    if self.step % c.log_every == 0:
                        now = time.perf_counter()
                        rate = c.log_every * c.batch_size / max(now - t_log, 1e-9)
                        t_log = now
                        self._log({"step": self.step, "epoch": epoch + 1, "loss": loss,
                                   "lr": self.sched.get_last_lr()[0],
                                   "images_per_s": round(rate, 2)})
                    progress.update(self.step, self.train_seconds, epoch + 1, loss)
                    if self.step % c.checkpoint_every == 0:
                        self.save()
                    if self._done():
                        break
                    asked = stop.requested
                    if self.dist.enabled:  # every rank stops at the same step (save is collective)
                        anyone = all_reduce_mean(float(bool(asked)), self.dist) > 0
                        asked = (asked or signal.SIGTERM) if anyone else None
                    if asked:
                        raise stopped(self, asked)
                # The epoch ran to its end (also when the budget ran out on its last batch):
                # validate and draw its grid before saving.
                if self.batch_in_epoch == len(all_batches):
                    self.epoch, self.batch_in_epoch = epoch + 1, 0
                    self._end_of_epoch(epoch)
                self.save()
        except KeyboardInterrupt:  # a second Ctrl-C: the state may be mid-step, do not save
            raise TrainingStopped(f"interrupted twice during step {self.step + 1}; nothing "
                                  f"saved since: {self.guard.good_text()}", signum=2) from None
        finally:
            progress.close()
            signals.close()
            self.lock.release()
        barrier(self.dist, "end of training")
        seconds = time.perf_counter() - t0
        return TrainResult(self.step, self.epoch, self.best_val, self.out,
                           images / seconds if seconds > 0 else 0.0)

    def _end_of_epoch(self, epoch: int) -> None:
        c = self.cfg
        if (epoch + 1) % c.validate_every == 0:
            # Rank 0 validates; every rank takes its numbers, so all make the same decisions.
            val = broadcast_object(self.validate() if self.dist.is_main else None, self.dist)
            self._log({"step": self.step, "epoch": epoch + 1, **val})
            if ((self.best_val is None or val["val_loss_ema"] < self.best_val)
                    and self.guard.plausible(val["val_loss_ema"])):  # never a diverged best
                self.best_val = val["val_loss_ema"]
                self.save(self.best_path)
        if (epoch + 1) % c.sample_every == 0 and self.dist.is_main:
            self.sample_grid(self.out / "samples" / f"epoch_{epoch + 1:04d}.png")
