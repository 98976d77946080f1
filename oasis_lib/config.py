"""Typed training configuration with commented defaults and named presets.

A :class:`TrainConfig` holds everything a run needs, so a checkpoint that stores
``asdict(config)`` can rebuild the model, the schedule and the optimiser exactly. Presets
match the U-Net presets (``tiny`` for tests and CI, ``cpu`` for a laptop CPU at 64x64,
``gpu`` for 128x128 on a real GPU); any field can be overridden::

    cfg = TrainConfig.from_preset("cpu", epochs=5, out_dir="runs/try")
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any

from .data.layout import DEFAULT_TRAIN_SPLITS, SEED_TRAIN_SPLITS, check_train_splits
from .diffusion.objectives import LOSS_TYPES, PREDICTION_TYPES
from .diffusion.samplers import SAMPLERS, get_sampler
from .diffusion.schedule import SCHEDULE_KINDS
from .models.autoencoder_config import AUTOENCODER_PRESETS, AutoencoderConfig
from .models.conditioning import CONDITIONS, DEFAULT_P_UNCOND, DROPOUT_MODES, condition_fields
from .models.discriminator import check_patch_size
from .models.unet_config import UNET_PRESETS

ARCHS = ("unet", "simple")  # our UNet, or the seed's SimpleUNet baseline
EXTERNAL_ARCH = "external"  # a network the caller passes: Trainer(config, model=net)
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("constant", "cosine")  # after the linear warm-up (oasis_lib.training.optim)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: see oasis_lib.training.precision
BUDGET_CLOCKS = ("wall", "cpu")
PERCEPTUAL_NETS = ("segmenter", "lpips", "none")


@dataclass
class DiffusionConfig:
    """What is learned: the noise schedule and the prediction target."""

    schedule: str = "cosine"  # linear | quadratic (the seed's) | cosine | sigmoid
    timesteps: int = 1000  # T; the seed used 500
    zero_terminal_snr: bool = False  # rescale so alpha_bar_T = 0 (use with prediction "v")
    prediction_type: str = "v"  # eps | x0 | v; v trained cleanest on the CPU budget
    loss_type: str = "mse"  # mse (Ho et al.) | l1 (the seed's)
    min_snr_gamma: float | None = None  # e.g. 5.0 for min-SNR-gamma weighting (Hang et al.)

    def validate(self) -> None:
        _choice("schedule", self.schedule, SCHEDULE_KINDS)
        _choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {self.timesteps}")


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


@dataclass
class TrainConfig(RunConfig):
    """One diffusion training run. Every cost knob is here; the CLI and notebooks override
    fields. Presets: :data:`TRAIN_PRESETS`."""

    # --- model and data
    preset: str = "cpu"  # U-Net preset: tiny | cpu | gpu
    arch: str = "unet"  # unet | simple (the seed's 62.6M SimpleUNet, as a baseline) |
    #   external (a network the caller passes: Trainer(cfg, model=net), load_model(path,
    #   model=net); preset and unet_overrides are then not used)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    unet_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"dropout": 0.1}
    # --- latent diffusion (Rombach et al. 2022): set `autoencoder` to train in its latent space
    autoencoder: str | None = None  # a trained autoencoder (.pt run or .safetensors); None:
    #   pixel space. image_size stays the *pixel* size; the U-Net sees image_size / f.
    latent_scale_factor: float | None = None  # 1 / std of the training latents (LDM's
    #   scale_by_std); None: computed once from the cached training latents when the run starts
    #   and stored in this config, so checkpoints and exports carry it
    autoencoder_sha256: str | None = None  # its content hash (pretrained.autoencoder_sha256),
    #   stored when the run starts; loading the run verifies the autoencoder against it
    latent_cache_dir: str = "runs/latent_cache"  # latents of the data, keyed by autoencoder+data
    # --- warm start (training.init_from): None trains from a fresh initialisation
    init_from: str | None = None  # a model file (.safetensors export or a run's .pt: its EMA)
    #   whose U-Net weights a *fresh* run starts from (never re-applied on resume); a
    #   conditional run from an unconditional file gets zero condition weights, so it starts
    #   as that model; a latent file brings its autoencoder and scale factor
    # --- conditional generation (issue 12; models.conditioning): none keeps the run unconditional
    condition: str = "none"  # none | mask | slice | mask+slice: what the U-Net is given (the
    #   mask as one-hot channels, the slice 0..31 as an embedding; unet_overrides mask_encoding /
    #   slice_embedding choose other encodings)
    p_uncond: float = DEFAULT_P_UNCOND  # condition dropout for classifier-free guidance: 0.1,
    #   the low end of Ho & Salimans' 0.1-0.2 (both gave their best FID), so 90% of a small CPU
    #   budget trains the conditional model while the null condition still gets ~1 batch in 10
    condition_dropout: str = "joint"  # joint (mask and slice dropped together) | independent
    mask_ablation_p: float = 0.1  # per-class mask ablation (Konz et al. 2024) so partial masks
    #   work; 0.1 (not their 0.5) keeps 0.9**3 = 73% of masks complete: full masks, the usual
    #   request, stay the main signal and "background" stays mostly non-brain
    # --- progress grids
    sample_n: int = 16
    sampler: str = "ddim"  # sampler of the progress grids
    sample_steps: int | None = None  # network calls of the grid; None: the sampler's default
    #   (all T for ddpm, which accepts no other value; 50 for the fast samplers)

    def validate(self) -> None:
        super().validate()
        _choice("preset", self.preset, tuple(UNET_PRESETS))
        _choice("arch", self.arch, (*ARCHS, EXTERNAL_ARCH))
        _choice("sampler", self.sampler, SAMPLERS)
        if not get_sampler(self.sampler).accepts_steps(self.sample_steps, self.diffusion.timesteps):
            raise ValueError(f"sampler {self.sampler!r} runs all T={self.diffusion.timesteps} "
                             f"steps; sample_steps must be None, got {self.sample_steps}")
        self.diffusion.validate()
        if self.autoencoder is not None and self.arch != "unet":
            raise ValueError("latent diffusion needs arch 'unet' (the seed's SimpleUNet is "
                             "1-channel only; an external network is sized by its caller)")
        if self.latent_scale_factor is not None and not self.latent_scale_factor > 0:
            raise ValueError(f"latent_scale_factor must be > 0, got {self.latent_scale_factor}")
        self._validate_condition()

    def _validate_condition(self) -> None:
        _choice("condition", self.condition, CONDITIONS)
        _choice("condition_dropout", self.condition_dropout, DROPOUT_MODES)
        for name in ("p_uncond", "mask_ablation_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got "
                                 f"{getattr(self, name)}")
        if self.condition != "none" and self.arch != "unet":
            raise ValueError("conditional training needs arch 'unet' (the seed's SimpleUNet "
                             "and external networks take (x, t) only)")
        uses = dict(zip(("mask_encoding", "slice_embedding"), condition_fields(self.condition),
                        strict=True))
        for key, used in uses.items():
            value = self.unet_overrides.get(key)
            if value is not None and (value != "none") != used:
                raise ValueError(f"unet_overrides {key}={value!r} does not fit condition "
                                 f"{self.condition!r}; set condition to match, or drop {key}")

    @classmethod
    def presets(cls) -> dict[str, TrainConfig]:
        return TRAIN_PRESETS


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """Weights of the terms of :func:`oasis_lib.training.ae_losses.autoencoder_loss` (0 switches
    a term off)."""

    l1: float = 1.0  # mean absolute error per pixel (LDM's reconstruction term)
    ssim: float = 0.2  # 1 - SSIM: local structure and contrast, which L1 underweights
    kl: float = 1e-6  # KL per pixel, as LDM's 1e-6 (only keeps the latent scale in check)
    perceptual: float = 0.1  # feature-space distance (segmenter features or LPIPS)
    adversarial: float = 0.0  # hinge GAN with a PatchDiscriminator; off on CPU

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"loss weight {f.name} must be a number >= 0, got {value!r}")


@dataclass
class AutoencoderTrainConfig(RunConfig):
    """Training the latent autoencoder (Rombach et al. 2022, sec. 3): random crops of the
    native slices (the network is convolutional, so crops make CPU training affordable),
    validated on whole slices. Presets: :data:`AUTOENCODER_TRAIN_PRESETS`."""

    preset: str = "cpu"  # autoencoder preset: tiny | cpu | gpu (models.autoencoder)
    autoencoder_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. latent_channels
    crop_size: int | None = 64  # side of the random training crops; None: whole slices
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    perceptual_net: str = "segmenter"  # segmenter (ours, shipped) | lpips (a local file) | none
    perceptual_weights: str | None = None  # None: the shipped segmenter; lpips: required
    sample_n: int = 8  # validate slices drawn over their reconstructions in the progress grids
    # The patch discriminator, used when loss.adversarial > 0 (models.discriminator):
    disc_start: int = 0  # optimiser step at which the adversarial term and D's training start
    disc_lr: float | None = None  # D's Adam learning rate (betas 0.5, 0.9 as LDM); None: lr
    disc_channels: int = 32  # channels of D's first conv (pix2pix: 64)
    disc_layers: int = 3  # D's stride-2 convs: 3 gives one logit per 70x70 patch
    init_from: str | None = None  # start from a trained autoencoder's (EMA) weights, e.g. to add D

    def validate(self) -> None:
        super().validate()
        _choice("preset", self.preset, tuple(AUTOENCODER_PRESETS))
        _choice("perceptual_net", self.perceptual_net, PERCEPTUAL_NETS)
        if self.perceptual_net == "lpips" and not self.perceptual_weights:
            raise ValueError("perceptual_net 'lpips' needs perceptual_weights (a local LPIPS "
                             "weights file); nothing is downloaded")
        if self.perceptual_net == "none" and self.loss.perceptual > 0:
            raise ValueError("perceptual_net 'none' needs loss.perceptual = 0")
        f = AutoencoderConfig.preset(self.preset, **self.autoencoder_overrides).downsampling_factor
        for name in ("image_size", "crop_size"):
            size = getattr(self, name)
            if size is not None and (size < f or size % f):
                raise ValueError(f"{name} must be a multiple of the downsampling factor f={f}, "
                                 f"got {size}")
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} exceeds image_size {self.image_size}")
        if not isinstance(self.disc_start, int) or self.disc_start < 0:
            raise ValueError(f"disc_start must be an int >= 0, got {self.disc_start!r}")
        if self.disc_lr is not None and not self.disc_lr > 0:
            raise ValueError(f"disc_lr must be > 0 (or None: the lr), got {self.disc_lr!r}")
        if self.loss.adversarial > 0:  # D sees the crops
            check_patch_size(self.crop_size or self.image_size, self.disc_layers)

    @classmethod
    def presets(cls) -> dict[str, AutoencoderTrainConfig]:
        return AUTOENCODER_TRAIN_PRESETS


# Fields added after checkpoints were shipped, with the value those checkpoints were trained
# with (every run before `train_splits` existed trained on train + test).
LEGACY_DEFAULTS: dict[str, Any] = {"train_splits": SEED_TRAIN_SPLITS}


def with_legacy_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored config dict with :data:`LEGACY_DEFAULTS` filled in where absent."""
    return {**LEGACY_DEFAULTS, **d}


def _choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {valid}")


# The seed project's recipe (docs in ../shared/seed) as TrainConfig overrides: its 62.6M
# SimpleUNet, quadratic betas at T = 500, eps-prediction with an L1 loss, Adam at a constant
# 1e-3, no warm-up, no clipping, no EMA (decay 0 keeps the live weights). The baseline that
# benchmarks/bench_recipes.py compares with DEMO_RECIPE at the same training-time budget.
SEED_RECIPE: dict[str, Any] = {
    "arch": "simple", "optimizer": "adam", "lr": 1e-3, "warmup_steps": 0, "grad_clip": 0.0,
    "ema_decay": 0.0, "diffusion": {"schedule": "quadratic", "timesteps": 500,
                                    "loss_type": "l1", "prediction_type": "eps"}}
# What trained the shipped demo checkpoint (checkpoints/README.md), as overrides of `cpu`.
DEMO_RECIPE: dict[str, Any] = {"lr": 3e-4, "diffusion": {"min_snr_gamma": 5.0}}


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # Seconds on a laptop CPU: for tests, CI and the notebooks' quick runs. fp32 pinned so
    # their numbers are the same on every CPU (auto would pick bf16 where the CPU has it).
    "tiny": TrainConfig(preset="tiny", image_size=32, epochs=1, batch_size=8, warmup_steps=10,
                        checkpoint_every=20, val_size=32, sample_n=8, sample_steps=10,
                        ema_decay=0.99, precision="fp32", out_dir="runs/tiny"),
    # The CPU-friendly default at 64x64. With DEMO_RECIPE it trained the shipped demo checkpoint:
    # brain-like samples after 2,880 steps (24 epochs), about 88 CPU-minutes on one thread
    # (checkpoints/README.md); its 30 epochs are 3,600 steps of the demo train split.
    "cpu": TrainConfig(preset="cpu", image_size=64, out_dir="runs/cpu"),
    # A real GPU at 128x128.
    "gpu": TrainConfig(preset="gpu", image_size=128, batch_size=32, epochs=200, lr=1e-4,
                       ema_decay=0.9999, warmup_steps=1000, checkpoint_every=1000,
                       out_dir="runs/gpu"),
}


AUTOENCODER_TRAIN_PRESETS: dict[str, AutoencoderTrainConfig] = {
    # Seconds: tests and CI (the tiny autoencoder on 32x32 slices, 16x16 crops); fp32 pinned
    # as for the diffusion tiny preset.
    "tiny": AutoencoderTrainConfig(preset="tiny", image_size=32, crop_size=16, epochs=1,
                                   batch_size=8, warmup_steps=10, checkpoint_every=20,
                                   val_size=16, sample_n=4, ema_decay=0.99, lr=1e-3,
                                   precision="fp32",
                                   loss=AutoencoderLossConfig(perceptual=0.0),
                                   perceptual_net="none", out_dir="runs/ae_tiny"),
    # A laptop CPU: native 256x256 slices, 64x64 crops, validated on 64 whole slices.
    "cpu": AutoencoderTrainConfig(preset="cpu", image_size=256, crop_size=64, epochs=20,
                                  batch_size=16, lr=1e-3, warmup_steps=100, val_size=64,
                                  ema_decay=0.999, out_dir="runs/ae"),
    # A real GPU: 128x128 crops, the larger autoencoder.
    "gpu": AutoencoderTrainConfig(preset="gpu", image_size=256, crop_size=128, epochs=100,
                                  batch_size=32, lr=4.5e-6 * 32, warmup_steps=1000,
                                  checkpoint_every=1000, val_size=256, ema_decay=0.9999,
                                  out_dir="runs/ae_gpu"),
}
