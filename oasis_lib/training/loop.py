"""The training loop every run shares: one optimiser step, readable on one screen.

:class:`TrainingLoop` knows nothing of what it trains: a subclass says that with its hooks
(``build``, ``step_inputs``, ``compute_loss``, ``_fixed_validation_batch``, ``validate``,
``sample_grid``; where the data come from: ``load_data``, ``latent_run``, ``encoded_sets``):
``training.trainer.Trainer`` (diffusion), ``training.autoencoder.AutoencoderTrainer`` and
``training.decoder_distill.DecoderTrainer`` (the light decoder). The loop body is
karpathy/nanoGPT's ``train.py``: lr, micro-steps, clip, step, EMA, log. Everything else sits
at its edges, in small helpers.

The map of one step (``fit`` -> ``train_step``), with the file and function of every edge:

0. the batch: ``fit`` walks the epochs; an epoch's order is a permutation seeded by (seed,
   epoch) (``batches.epoch_batches``), this rank's share of each global batch
   (``distributed.shard_batches``), resumed after the batches done
   (``batch_in_epoch``), loaded by ``batches.epoch_loader``; ``step_inputs`` (hook) picks the
   images (and extras); ``session.FitSession.timed`` counts the step's time for the budget.
1. lr: this step's ``lr * optim.lr_multiplier(step)`` (warm-up, then constant or cosine), set
   by ``self.sched`` when the previous step ended (``optim.build_lr_scheduler``).
2. micro-steps (``batches.micro_batches``: ``grad_accum`` of them): ``_micro_inputs`` keys the
   draws of each image by (seed, step, its slot in the global batch) (``draws.StepDraws``,
   ``distributed.slot_offset``), flips (``draws.flip_images``) and moves it to the device;
   forward and loss under autocast (``compute_loss``, hook; ``precision.resolve_precision``);
   backward of ``loss / grad_accum``; DDP all-reduces the gradients in the last micro-step's
   backward only (``distributed.no_sync`` on the others; a dead peer becomes ``RankFailure``,
   ``distributed.collective_guard``). ``_global_loss``: the mean over ranks
   (``distributed.all_reduce_mean``), stopped when non-finite (``guards.check_finite_loss``)
   or blown up (``guards.DivergenceGuard.update``), before any weight changes.
3. unscale (the fp16 grad scaler) and clip the gradient norm to ``grad_clip``.
4. optimiser step (``optim.build_optimizer``: Adam/AdamW); the schedule sets the next lr.
5. EMA update (``ema.EMA.update``: identical on every rank, from the all-reduced weights).
6. log, between steps (``session.FitSession.after_step``): ``metrics.jsonl`` every ``log_every``
   steps (``_log``, rank 0), the bar (``progress.TrainProgress``), ``last.pt`` every
   ``checkpoint_every`` steps (``state.RunState.save``: nothing while the guard is suspect, never
   non-finite weights); then the limits (``session.FitSession.limit_reached``: ``max_steps``,
   ``max_minutes``, ``progress.limit_reached``) and a SIGTERM/SIGINT on any rank
   (``session.FitSession.stop_if_asked``, ``signals.stopped``: save, raise ``TrainingStopped``).
7. at an epoch's end (``_end_of_epoch``): validation every ``validate_every`` epochs (rank 0,
   broadcast; ``best.pt`` by the EMA's loss, never a diverged one), a sample grid every
   ``sample_every``, then ``last.pt``.

Set up once, before the first step (``_init``): the run folder's lock (``run_dir.RunLock``),
the resume rules (``resume.merge_for_resume``) and restore (``state.RunState._restore``), the
process group (``distributed.init_distributed``), the latent cache of a latent run (rank 0
writes it: ``latents.rank_zero_latents``), compile and DDP (``_wrap``,
``distributed.wrap_ddp``).

Exact resume: the data order needs no state and every per-image draw of a step (flip, t,
noise, ...) is keyed (:mod:`.draws`), so on the CPU a killed-and-resumed run ends with the
weights of an uninterrupted one; N ranks end with the weights of one process to float
rounding (the order of the gradient all-reduce); rank 0 alone writes files. Dropout (off by
default) draws from each rank's own torch generator (seed * world_size + rank) and is not
rank-invariant.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..data import load_splits
from ..seeding import cpu_generator, seed_everything
from .batches import epoch_batches, epoch_loader, images, micro_batches
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
from .guards import DivergenceGuard, NonFiniteLossError, check_batches, check_finite_loss
from .latents import rank_zero_latents
from .optim import build_lr_scheduler, build_optimizer
from .precision import autocast_dtype, resolve_precision  # noqa: F401 (autocast_dtype: API)
from .resume import FREE, merge_for_resume
from .run_dir import RunLock, append_jsonl, tidy_run_dir
from .session import fit_session
from .state import RunState

__all__ = ["RESUME_OVERRIDES", "NonFiniteLossError", "TrainResult", "TrainingLoop"]

logger = logging.getLogger(__name__)

# Fields a resumed run takes from the new config instead of the checkpoint.
RESUME_OVERRIDES = FREE

_images = images  # (the name trainer.py and autoencoder.py import)


@dataclass
class TrainResult:
    step: int
    epoch: int
    best_val_loss: float | None
    out_dir: Path
    images_per_second: float


class TrainingLoop(RunState):
    """The loop; subclasses define what is trained (the hooks). Pass datasets to skip loading
    them from disk."""

    needs_masks = False  # load the tissue masks with the slices (a subclass's validation may)
    config_class: type | None = None  # the config a subclass trains (None: not checked)

    def __init__(self, config: TrainConfig, *, resume: bool = False, train_set=None,
                 val_set=None):
        if self.config_class is not None and not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} trains a {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
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
            train_set, val_set = self.load_data(cfg)
        check_batches(train_set, cfg.batch_size)
        self.train_set, self.val_set = train_set, val_set
        self.guard = DivergenceGuard()
        self.raw_model = self.build().to(self.device)
        self.encoded = self.latent_run()
        if self.encoded:  # latent diffusion: train on cached, scaled latents
            self.train_set, self.val_set = self.encoded_sets()
        self._wrap()
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

    def _wrap(self) -> None:
        """``self.eval_model`` (compiled if asked; unwrapped: validation runs on one rank) and
        ``self.model``, what a step calls: :meth:`forward_module` compiled and, under torchrun,
        DistributedDataParallel (``distributed.wrap_ddp``: rank 0's weights broadcast)."""
        cfg = self.cfg
        if cfg.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        compiled = torch.compile if cfg.compile else (lambda net: net)
        self.eval_model = compiled(self.raw_model)
        trained = self.forward_module(self.raw_model)  # the network, or a module around it
        self.model = self.eval_model if trained is self.raw_model else compiled(trained)
        if self.dist.enabled:  # dropout masks differ per rank; the weights come from rank 0
            torch.manual_seed(rank_seed(cfg.seed, self.dist))
        self.model = wrap_ddp(self.model, self.dist, self.device)

    # ------------------------------------------------------------------ what is trained
    def build(self) -> torch.nn.Module:
        """The network to optimise (set ``self.pipeline`` too, or None), before moving it."""
        raise NotImplementedError

    def load_data(self, cfg: TrainConfig):
        """``(train, validate)`` when the caller passed none: the run's slices from disk."""
        opts = {"with_masks": self.needs_masks, "train_splits": cfg.train_splits}
        return load_splits(cfg.data_root, cfg.image_size, augment=False, **opts)

    def latent_run(self) -> bool:
        """Whether the run trains on latents (:meth:`encoded_sets`) instead of the slices: a
        latent diffusion run (its pipeline has an autoencoder)."""
        return self.pipeline is not None and self.pipeline.autoencoder is not None

    def encoded_sets(self):
        """A latent run's ``(train, validate)`` in model space (after :meth:`build`): the
        slices' cached, scaled latents (rank 0 writes the cache: ``latents.rank_zero_latents``)."""
        self.pipeline.to(self.device)
        return rank_zero_latents(self.pipeline, self.cfg, self.train_set, self.val_set,
                                 self.dist, progress=self.cfg.progress)

    def forward_module(self, net: torch.nn.Module) -> torch.nn.Module:
        """What ``self.model`` calls in training (compiled, DDP-wrapped): the network itself,
        or a module around it sharing its parameters (called once, after :meth:`build`)."""
        return net

    def step_inputs(self, batch):
        """A loader batch -> :meth:`train_step`'s input: the images (or (images, *extras))."""
        return images(batch)

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

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train until the first limit (``max_steps``, ``epochs``, ``max_minutes``); a
        signal saves and raises ``TrainingStopped``. The map: the module docstring."""
        with fit_session(self) as run:  # lock, signal handlers, the bar (session.py)
            self.model.train()
            for epoch in range(self.epoch, self.cfg.epochs):
                if run.limit_reached():
                    break
                self.epoch = epoch  # the finished epochs; people read epochs from 1
                all_batches = self._rank_batches(epoch)
                for batch in self._loader(epoch, all_batches[self.batch_in_epoch:]):
                    loss = run.timed(self.train_step, self.step_inputs(batch))
                    self.batch_in_epoch += 1
                    run.after_step(loss, epoch)  # log, bar, last.pt every checkpoint_every
                    if run.limit_reached():
                        break
                    run.stop_if_asked()  # SIGTERM/SIGINT on any rank: save, stop
                # The epoch ran to its end (also when the budget ran out on its last batch):
                # validate and draw its grid before saving.
                if self.batch_in_epoch == len(all_batches):
                    self.epoch, self.batch_in_epoch = epoch + 1, 0
                    self._end_of_epoch(epoch)
                self.save()
        barrier(self.dist, "end of training")
        return TrainResult(self.step, self.epoch, self.best_val, self.out,
                           run.images_per_second())

    def train_step(self, x0) -> float:
        """One optimiser step on this rank's share ``x0`` of a global batch (or a tuple of
        :meth:`step_inputs`, extras flipped too if >= 3-d); returns the global mean loss.
        The steps 1-5 of the module docstring's map (``fit`` logs it: step 6)."""
        c = self.cfg
        # 1. lr: lr x optim.lr_multiplier(step), set by self.sched when the last step ended.
        # 2. micro-steps: forward, loss, backward; DDP syncs gradients in the last one only.
        self.opt.zero_grad(set_to_none=True)
        chunks, total = micro_batches(x0, c.grad_accum, self.micro_batch), 0.0
        for k, chunk in enumerate(chunks):
            xk, *extra = self._micro_inputs(k, chunk)  # keyed draws, flips, to the device
            with no_sync(self.model, k < len(chunks) - 1), \
                    collective_guard(self.dist, f"gradient all-reduce of step {self.step + 1}"):
                with self._autocast():
                    loss = self.compute_loss(xk, *extra)
                if not self.dist.enabled:
                    self._check_finite(loss)
                self.scaler.scale(loss / len(chunks) if len(chunks) > 1 else loss).backward()
            total += float(loss.detach()) / len(chunks)
        total = self._global_loss(total)  # every rank stops together on a bad loss anywhere
        # 3. unscale and clip the gradient norm.
        if c.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.grad_clip)
        # 4. optimiser step; the schedule sets the next step's lr.
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        # 5. EMA of the weights.
        self.ema.update(self.raw_model)
        self.step += 1
        return total

    # ------------------------------------------------------------------ the step's edges
    def _rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's share of each of the epoch's global batches (all of it at world 1)."""
        batches = epoch_batches(self.cfg.seed, epoch, len(self.train_set), self.cfg.batch_size)
        return shard_batches(batches, self.dist)

    def _loader(self, epoch: int, batches: list[list[int]]):
        return epoch_loader(self.train_set, batches, epoch=epoch,
                            num_workers=self.cfg.num_workers, device=self.device)

    def _draws(self, micro_step: int = 0) -> StepDraws:
        """The keyed draws of this rank's micro-batch ``micro_step`` of the current step."""
        first = slot_offset(self.cfg.batch_size, self.dist, self.micro_batch, micro_step)
        return StepDraws(self.cfg.seed, self.step, first)

    def _micro_inputs(self, k: int, chunk: tuple) -> list:
        """Micro-step ``k``'s inputs: its keyed draws set (``self.draws``: any number of ranks
        draws the same), flipped (pixel runs with ``hflip``), the images on the device."""
        self.draws = self._draws(k)
        xk, *extra = chunk
        if self.cfg.hflip and not self.encoded:
            xk, *extra = flip_images((xk, *extra), self.draws.flips(xk.shape[0]))
        return [self._to_device(xk), *extra]

    def _global_loss(self, total: float) -> float:
        """The step's loss averaged over ranks; a non-finite one (``guards.check_finite_loss``)
        or a blown-up finite one (``guards.DivergenceGuard``) stops every rank together."""
        total = all_reduce_mean(total, self.dist)
        self._check_finite(torch.tensor(total))
        self.guard.update(total, step=self.step + 1)
        return total

    def _check_finite(self, loss: torch.Tensor) -> None:
        check_finite_loss(loss, step=self.step + 1, epoch=self.epoch,
                          last_good=self.guard.good_text())

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _log(self, record: dict) -> None:
        """One line of ``metrics.jsonl`` (rank 0)."""
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.out / "metrics.jsonl", record)

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
