"""What every training run has, whatever it trains: optimisation, speed, bookkeeping
(:class:`RunConfig`, a typed dataclass with commented defaults), and the named choices it
validates. :class:`oasis_lib.config.TrainConfig` (a diffusion model) and
:class:`oasis_lib.autoencoder_train_config.AutoencoderTrainConfig` (the latent autoencoder)
extend it; the Trainer reads only these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

from .data.layout import DEFAULT_TRAIN_SPLITS, SEED_TRAIN_SPLITS, check_train_splits

OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("constant", "cosine")  # after the linear warm-up (oasis_lib.training.optim)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: see oasis_lib.training.precision
BUDGET_CLOCKS = ("wall", "cpu")


# Fields added after checkpoints were shipped, with the value those checkpoints were trained
# with (every run before `train_splits` existed trained on train + test).
LEGACY_DEFAULTS: dict[str, Any] = {"train_splits": SEED_TRAIN_SPLITS}


def with_legacy_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored config dict with :data:`LEGACY_DEFAULTS` filled in where absent."""
    return {**LEGACY_DEFAULTS, **d}


def _choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {valid}")


@dataclass
class RunConfig:
    """What every training run has, whatever it trains: optimisation, speed, bookkeeping.

    :class:`TrainConfig` (a diffusion model) and :class:`AutoencoderTrainConfig` (the latent
    autoencoder) add what their model needs; the Trainer reads only these fields."""

    image_size: int = 64  # slices are resized from 256 to this
    data_root: str | None = None  # None: $OASIS_DATA, else the demo dataset in data/demo
    train_splits: tuple[str, ...] = DEFAULT_TRAIN_SPLITS  # splits trained on: ("train",) keeps
    #   test untouched for the final numbers (validate chooses best.pt); ("train", "test") is
    #   the starting DDPM's choice, which holds no split out
    hflip: bool = True  # random horizontal flips of training slices (drawn by the trainer)
    # --- optimisation
    epochs: int = 30  # passes over the training split
    max_steps: int | None = None  # stop after this many optimiser steps (None: run all epochs)
    max_minutes: float | None = None  # stop after this much time in optimiser steps, summed
    #   over resumes (validation and sample grids not counted); None: no time limit
    budget_clock: str = "wall"  # what max_minutes counts: wall (seconds elapsed) | cpu (this
    #   process's CPU seconds, all threads: a fair budget on a machine shared with other jobs)
    batch_size: int = 16  # images per optimiser step, over all ranks and micro-steps: under
    #   torchrun each of N ranks takes batch_size / N of every batch, so the recipe does not
    #   change with N (must divide by N * grad_accum)
    grad_accum: int = 1  # gradient accumulation: each rank's share runs as this many
    #   micro-batches, summed before one optimiser step (less memory, same maths)
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 2e-4  # peak learning rate (the seed's 1e-3 is too high for diffusion)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # torch's defaults (diffusers' example:
    #   (0.95, 0.999))
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 200  # linear warm-up from 0 to lr, then lr_schedule
    lr_schedule: str = "constant"  # constant | cosine (half a cosine from lr to 0 at step
    #   lr_decay_steps, counted from the start; diffusers' get_cosine_schedule_with_warmup)
    lr_decay_steps: int | None = None  # cosine: its end (required); constant: None
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    ema_decay: float = 0.999  # EMA of the weights; sampled and checkpointed as "best"
    ema_warmup: bool = True  # decay ramps as (1+n)/(10+n) early on, capped at ema_decay
    ema_power: float | None = None  # a number: the ramp is 1 - (1 + n / ema_inv_gamma) **
    #   -ema_power instead (diffusers' EMAModel warm-up; its example uses 3/4, inv_gamma 1)
    ema_inv_gamma: float = 1.0
    # --- speed
    device: str = "auto"  # auto | cpu | cuda | mps (see oasis_lib.device.get_device)
    # auto: on CUDA bf16 autocast (fp16 + grad scaler where bf16 is unsupported); on a CPU bf16
    # autocast only when the processor has native bf16 (AVX512-BF16/AMX, detected at run time
    # and confirmed by a tiny matmul timing), else fp32: emulated bf16 can be tens of times
    # slower than fp32 (oasis_lib.training.precision; the Trainer logs the choice and why).
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16 only on CUDA)
    channels_last: bool = False  # NHWC memory format: faster or slower depending on the
    #   model and CPU (measure with benchmarks/bench_models.py)
    compile: bool = False  # torch.compile the model
    fused_optimizer: bool = True  # torch's fused Adam/AdamW kernel where it has one for the
    #   device (one kernel for all parameters; same maths within float rounding; its speed-up
    #   on one CPU in benchmarks/results/profile_step.md); False: the foreach kernel
    num_workers: int = 0  # DataLoader workers (slices are cached in memory already)
    dist_timeout_s: float = 1800.0  # under torchrun: seconds a rank waits for the others in a
    #   collective before it stops with an error (a dead or stuck rank never hangs the run)
    # --- bookkeeping
    seed: int = 0  # seeds python, numpy and torch, and the trainer's own generator
    out_dir: str = "runs/run"
    checkpoint_every: int = 200  # steps between `last.pt` writes (the most work a crash loses)
    log_every: int = 10  # steps between metric lines
    validate_every: int = 1  # epochs between validation passes (best.pt chosen by EMA val loss)
    val_size: int = 256  # validate slices used, each with a fixed t and fixed noise
    sample_every: int = 1  # epochs between sample grids from the EMA model
    progress: bool = True  # tqdm bars

    def validate(self) -> None:
        self.train_splits = check_train_splits(self.train_splits)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("budget_clock", self.budget_clock, BUDGET_CLOCKS)
        _choice("precision", self.precision, PRECISIONS)
        for name in ("epochs", "batch_size", "grad_accum", "checkpoint_every", "log_every",
                     "validate_every", "sample_every", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of grad_accum "
                             f"{self.grad_accum} (each micro-batch is batch_size / grad_accum "
                             "per process)")
        if self.dist_timeout_s <= 0:
            raise ValueError(f"dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        self._validate_optimiser()

    def _validate_optimiser(self) -> None:
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        betas = tuple(self.adam_betas)
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0.0 <= b < 1.0
                                      for b in betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        self.adam_betas = (float(betas[0]), float(betas[1]))
        for name in ("adam_eps", "ema_inv_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.ema_power is not None and not self.ema_power > 0:
            raise ValueError(f"ema_power must be > 0 or None, got {self.ema_power}")
        if self.lr_schedule == "cosine":  # (not max_steps: a resume may lengthen a run)
            if self.lr_decay_steps is None:
                raise ValueError("lr_schedule 'cosine' needs lr_decay_steps: the step where the "
                                 "learning rate reaches 0")
            if self.lr_decay_steps <= self.warmup_steps:
                raise ValueError(f"lr_decay_steps {self.lr_decay_steps} must exceed "
                                 f"warmup_steps {self.warmup_steps}")
        elif self.lr_decay_steps is not None:
            raise ValueError("lr_decay_steps is read only by lr_schedule 'cosine'; set "
                             f"lr_schedule='cosine' or drop it (got {self.lr_decay_steps})")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """A named preset of this class (``tiny``, ``cpu``, ``gpu``) with fields overridden;
        nested configs (e.g. ``diffusion``) are merged field by field."""
        presets = cls.presets()
        _choice("preset", name, tuple(presets))
        base = dataclasses.asdict(presets[name])
        for key, value in list(overrides.items()):
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            if isinstance(base.get(key), dict) and isinstance(value, dict):
                overrides[key] = {**base[key], **value}
        return cls.from_dict({**base, **overrides})

    @classmethod
    def presets(cls) -> dict[str, RunConfig]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Rebuild a config (e.g. from a checkpoint), refusing unknown fields by name."""
        d = with_legacy_defaults(d)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid fields: "
                             f"{sorted(fields)}")
        for name, f in fields.items():  # nested dataclasses arrive as dicts
            if name in d and isinstance(d[name], dict) and f.default_factory is not MISSING:
                nested = f.default_factory()
                if dataclasses.is_dataclass(nested):
                    known = {g.name for g in dataclasses.fields(nested)}
                    bad = sorted(set(d[name]) - known)
                    if bad:
                        raise ValueError(f"unknown {type(nested).__name__} fields {bad}; "
                                         f"valid: {sorted(known)}")
                    d[name] = type(nested)(**d[name])
        cfg = cls(**d)
        cfg.validate()
        return cfg
