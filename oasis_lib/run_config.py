"""What every training run has, whatever it trains: optimisation, speed, bookkeeping
(:class:`RunConfig`, a typed dataclass with commented defaults), and the named choices it
validates. A field with a command-line flag or a resume rule is a
:func:`~oasis_lib.config_knobs.knob`: the CLI and the resume read them there.
:class:`oasis_lib.config.TrainConfig` (a diffusion model) and
:class:`oasis_lib.autoencoder_train_config.AutoencoderTrainConfig` (the latent autoencoder)
extend it; the Trainer reads only these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

from .config_knobs import DIFFUSION_ONLY, knob
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

    image_size: int = knob(64, flag=True, help="slice size in pixels (resized from 256)")
    data_root: str | None = knob(  # None: $OASIS_DATA, else the demo dataset in data/demo
        None, flag=True, resume="safe", help="OASIS root (default $OASIS_DATA or the demo)")
    train_splits: tuple[str, ...] = knob(  # ("train",) keeps test untouched for the final
        #   numbers (validate chooses best.pt); ("train", "test") is the starting DDPM's choice,
        #   which holds no split out
        DEFAULT_TRAIN_SPLITS, flag=True, parse=check_train_splits, metavar="SPLITS",
        help="comma-separated splits to train on: train (default; test stays held out for the "
             "final numbers, validate chooses) or train,test (the seed's choice: nothing held "
             "out)")
    hflip: bool = True  # random horizontal flips of training slices (drawn by the trainer)
    # --- optimisation
    epochs: int = knob(30, flag=True, resume="length", help="passes over the training split")
    max_steps: int | None = knob(  # None: run all epochs
        None, flag=True, resume="length", help="stop after this many optimiser steps")
    max_minutes: float | None = knob(  # summed over resumes (validation and sample grids not
        #   counted); None: no time limit
        None, flag=True, resume="length",
        help="stop after this much time in optimiser steps (a fair time budget)")
    budget_clock: str = knob(  # wall (seconds elapsed) | cpu (this process's CPU seconds, all
        #   threads: a fair budget on a machine shared with other jobs)
        "wall", flag=True, resume="free", choices=BUDGET_CLOCKS,
        help="what --max-minutes counts: wall or cpu (process CPU time, fair on a shared "
             "machine)")
    batch_size: int = knob(  # under torchrun each of N ranks takes batch_size / N of every
        #   batch, so the recipe does not change with N (must divide by N * grad_accum)
        16, flag=True, help="images per optimiser step, summed over all torchrun ranks")
    grad_accum: int = knob(  # gradient accumulation: micro-batches summed before one
        #   optimiser step (less memory, same maths)
        1, flag=True, runs=DIFFUSION_ONLY, metavar="K",
        help="split each rank's share into K micro-batches (gradient accumulation)")
    optimizer: str = knob("adamw", flag=True, runs=DIFFUSION_ONLY, choices=OPTIMIZERS)
    lr: float = knob(  # (the seed's 1e-3 is too high for diffusion)
        2e-4, flag=True, help="peak learning rate")
    adam_betas: tuple[float, float] = knob(  # torch's defaults (diffusers' example: (0.95, 0.999))
        (0.9, 0.999), flag=True, runs=DIFFUSION_ONLY, metavar=("B1", "B2"))
    adam_eps: float = knob(1e-8, flag=True, runs=DIFFUSION_ONLY)
    weight_decay: float = knob(0.0, flag=True, runs=DIFFUSION_ONLY)
    warmup_steps: int = knob(  # then lr_schedule
        200, flag=True, runs=DIFFUSION_ONLY, help="linear warm-up from 0 to --lr")
    lr_schedule: str = knob(  # constant | cosine (half a cosine from lr to 0 at step
        #   lr_decay_steps, counted from the start; diffusers' get_cosine_schedule_with_warmup)
        "constant", flag=True, runs=DIFFUSION_ONLY, choices=LR_SCHEDULES,
        help="after the linear warm-up; cosine needs --lr-decay-steps")
    lr_decay_steps: int | None = knob(  # cosine: its end (required); constant: None
        None, flag=True, runs=DIFFUSION_ONLY, metavar="N",
        help="cosine: the step where the LR reaches 0, counted from the start")
    grad_clip: float = knob(  # max global grad norm
        1.0, flag=True, runs=DIFFUSION_ONLY, help="max grad norm; 0 disables")
    ema_decay: float = knob(  # EMA of the weights; sampled and checkpointed as "best"
        0.999, flag=True, runs=DIFFUSION_ONLY, help="decay of the EMA of the weights")
    ema_warmup: bool = True  # decay ramps as (1+n)/(10+n) early on, capped at ema_decay
    ema_power: float | None = knob(  # a number: the ramp is 1 - (1 + n / ema_inv_gamma) **
        #   -ema_power instead (diffusers' EMAModel warm-up; its example uses 3/4, inv_gamma 1)
        None, flag=True, runs=DIFFUSION_ONLY,
        help="EMA warm-up 1 - (1 + n / inv_gamma) ** -power (diffusers' EMAModel; its example: "
             "0.75) instead of (1 + n) / (10 + n)")
    ema_inv_gamma: float = knob(1.0, flag=True, runs=DIFFUSION_ONLY)
    # --- speed
    device: str = knob(  # see oasis_lib.device.get_device
        "auto", flag=True, resume="free", help="auto | cpu | cuda | mps")
    # auto: on CUDA bf16 autocast (fp16 + grad scaler where bf16 is unsupported); on a CPU bf16
    # autocast only when the processor has native bf16 (AVX512-BF16/AMX, detected at run time
    # and confirmed by a tiny matmul timing), else fp32: emulated bf16 can be tens of times
    # slower than fp32 (oasis_lib.training.precision; the Trainer logs the choice and why).
    precision: str = knob(  # auto | fp32 | bf16 | fp16 (fp16 only on CUDA)
        "auto", flag=True, choices=PRECISIONS,
        help="fp16 only on CUDA; auto: bf16 where the device runs it natively, else fp32")
    channels_last: bool = knob(  # faster or slower depending on the model and CPU (measure
        #   with benchmarks/bench_models.py)
        False, flag=True, resume="free", runs=DIFFUSION_ONLY, help="NHWC memory format")
    compile: bool = knob(False, flag=True, resume="free", runs=DIFFUSION_ONLY,
                         help="torch.compile the model")
    fused_optimizer: bool = knob(  # torch's fused Adam/AdamW kernel where it has one for the
        #   device (one kernel for all parameters; same maths within float rounding; its speed-up
        #   on one CPU in benchmarks/results/profile_step.md); False: the foreach kernel
        True, flag="--no-fused-optimizer", resume="free", runs=DIFFUSION_ONLY,
        help="torch's foreach Adam/AdamW instead of the fused kernel")
    num_workers: int = knob(  # DataLoader workers (slices are cached in memory already)
        0, resume="free")
    dist_timeout_s: float = 1800.0  # under torchrun: seconds a rank waits for the others in a
    #   collective before it stops with an error (a dead or stuck rank never hangs the run)
    # --- bookkeeping
    seed: int = knob(  # seeds python, numpy and torch, and the trainer's own generator
        0, flag=True, help="seeds python, numpy, torch and the trainer's generator")
    out_dir: str = knob("runs/run", flag="--out", required=True, resume="free",
                        help="run folder, e.g. runs/NAME")
    checkpoint_every: int = knob(  # (the most work a crash loses)
        200, flag=True, resume="safe", help="steps between last.pt writes")
    log_every: int = knob(10, resume="safe")  # steps between metric lines
    validate_every: int = knob(  # (best.pt chosen by EMA val loss)
        1, flag=True, resume="safe", runs=DIFFUSION_ONLY, help="epochs between validations")
    val_size: int = 256  # validate slices used, each with a fixed t and fixed noise
    sample_every: int = knob(  # from the EMA model
        1, flag=True, resume="safe", runs=DIFFUSION_ONLY, help="epochs between sample grids")
    progress: bool = knob(True, flag="--no-progress", resume="free", help="no progress bars")

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
