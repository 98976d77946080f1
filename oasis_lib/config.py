"""Typed training configuration with commented defaults and named presets.

A :class:`TrainConfig` holds everything a run needs, so a checkpoint that stores
``asdict(config)`` can rebuild the model, the schedule and the optimiser exactly. Presets
match the U-Net presets (``tiny`` for tests and CI, ``cpu`` for a laptop CPU at 64x64,
``gpu`` for 128x128 on a real GPU); any field can be overridden::

    cfg = TrainConfig.from_preset("cpu", epochs=5, out_dir="runs/try")

What every run has lives in :mod:`oasis_lib.run_config` (:class:`RunConfig`), the latent
autoencoder's run in :mod:`oasis_lib.autoencoder_train_config`, the light decoder's in
:mod:`oasis_lib.decoder_train_config`; all are importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .autoencoder_train_config import (  # noqa: F401 (re-exported: oasis_lib.config's names)
    AUTOENCODER_TRAIN_PRESETS,
    PERCEPTUAL_NETS,
    AutoencoderLossConfig,
    AutoencoderTrainConfig,
)
from .config_knobs import knob
from .decoder_train_config import DECODER_TRAIN_PRESETS, DecoderTrainConfig  # noqa: F401
from .diffusion.flow_matching import TIME_SAMPLINGS
from .diffusion.objectives import LOSS_TYPES
from .diffusion.processes import ALL_PREDICTION_TYPES, NOISE_PROCESSES, get_noise_process
from .diffusion.samplers import get_sampler, samplers_for
from .diffusion.schedule import SCHEDULE_KINDS
from .models.conditioning import CONDITIONS, DEFAULT_P_UNCOND, DROPOUT_MODES, parse_condition
from .models.unet_config import UNET_PRESETS
from .run_config import (  # noqa: F401 (re-exported)
    BUDGET_CLOCKS,
    LEGACY_DEFAULTS,
    LR_SCHEDULES,
    OPTIMIZERS,
    PRECISIONS,
    RunConfig,
    _choice,
    with_legacy_defaults,
)

ARCHS = ("unet", "simple")  # our UNet, or the seed's SimpleUNet baseline
EXTERNAL_ARCH = "external"  # a network the caller passes: Trainer(config, model=net)


@dataclass
class DiffusionConfig:
    """What is learned: the noise schedule and the prediction target."""

    schedule: str = knob(  # linear | quadratic (the seed's) | cosine | sigmoid
        "cosine", flag=True, choices=SCHEDULE_KINDS, help="noise schedule of the betas")
    timesteps: int = knob(1000, flag=True, help="T, the noising steps")  # the seed used 500
    zero_terminal_snr: bool = False  # rescale so alpha_bar_T = 0 (use with prediction "v")
    prediction_type: str = knob(  # eps | x0 | v (vp; v trained cleanest on the CPU budget) |
        #   velocity (rectified-flow)
        "v", flag="--prediction", choices=ALL_PREDICTION_TYPES, help="what the network predicts")
    loss_type: str = knob(  # mse (Ho et al.) | l1 (the seed's)
        "mse", flag="--loss", choices=LOSS_TYPES, help="the loss on the prediction")
    min_snr_gamma: float | None = knob(  # e.g. 5.0 (Hang et al.)
        None, flag=True, help="min-SNR-gamma loss weighting (e.g. 5); off by default")
    noise_process: str = knob(  # vp (DDPM) | rectified-flow (SD3): diffusion.processes
        "vp", flag=True, choices=NOISE_PROCESSES, help="the forward (noising) process")
    # --- rectified flow only (Esser et al. 2024, sec. 3.1 and 5.3.2)
    time_sampling: str = knob(  # uniform | logit-normal | u-shaped: how training draws t
        "uniform", flag=True, choices=TIME_SAMPLINGS, help="rectified flow: training times")
    logit_loc: float = knob(0.0, flag=True, help="rectified flow: logit-normal location m")
    logit_scale: float = knob(1.0, flag=True, help="rectified flow: logit-normal scale s")
    flow_shift: float = knob(  # s t / (1 + (s - 1) t) on training and sampling times; 1: none
        1.0, flag=True, help="rectified flow: SD3's timestep shift s")

    def validate(self) -> None:
        _choice("schedule", self.schedule, SCHEDULE_KINDS)
        _choice("noise_process", self.noise_process, NOISE_PROCESSES)
        process = get_noise_process(self.noise_process)
        _choice("prediction_type", self.prediction_type, ALL_PREDICTION_TYPES)
        if self.prediction_type not in process.prediction_types:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not one of the "
                             f"{self.noise_process} process's {process.prediction_types}")
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        _choice("time_sampling", self.time_sampling, TIME_SAMPLINGS)
        flow_knobs = {"time_sampling": "uniform", "logit_loc": 0.0, "logit_scale": 1.0,
                      "flow_shift": 1.0}
        if process.discrete_time:
            changed = [k for k, v in flow_knobs.items() if getattr(self, k) != v]
            if changed:
                raise ValueError(f"{', '.join(changed)} apply to noise_process='rectified-flow' "
                                 f"only, not {self.noise_process!r}; leave them at their defaults")
        elif self.min_snr_gamma is not None:
            raise ValueError(f"min_snr_gamma is a VP weighting; set it to None for "
                             f"noise_process={self.noise_process!r}")
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {self.timesteps}")


@dataclass
class TrainConfig(RunConfig):
    """One diffusion training run. Every cost knob is here; the CLI and notebooks override
    fields. Presets: :data:`TRAIN_PRESETS`."""

    # --- model and data
    preset: str = knob(  # U-Net preset: tiny | cpu | gpu
        "cpu", flag=True, choices=tuple(UNET_PRESETS),
        help="model and training preset (default cpu; on --resume: the run's)")
    arch: str = knob(  # unet | simple (the seed's 62.6M SimpleUNet, as a baseline) |
        #   external (a network the caller passes: Trainer(cfg, model=net), load_model(path,
        #   model=net); preset and unet_overrides are then not used; no flag)
        "unet", flag=True, choices=ARCHS)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    unet_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"dropout": 0.1}
    # --- latent diffusion (Rombach et al. 2022): set `autoencoder` to train in its latent space
    autoencoder: str | None = knob(  # a trained autoencoder (.pt run or .safetensors); None:
        #   pixel space. image_size stays the *pixel* size; the U-Net sees image_size / f.
        None, flag=True, help="a trained autoencoder (runs/ae/best.pt or .safetensors): train "
                              "a latent diffusion model in its latent space")
    latent_scale_factor: float | None = knob(  # 1 / std of the training latents (LDM's
        #   scale_by_std); None: computed once from the cached training latents when the run
        #   starts and stored in this config, so checkpoints and exports carry it
        None, resume="derived")
    autoencoder_sha256: str | None = knob(  # its content hash (pretrained.autoencoder_sha256),
        #   stored when the run starts; loading the run verifies the autoencoder against it
        None, resume="derived")
    latent_cache_dir: str = knob(  # latents of the data, keyed by autoencoder + data
        "runs/latent_cache", flag=True, resume="free", help="where the encoded data is cached")
    # --- warm start (training.init_from): None trains from a fresh initialisation
    init_from: str | None = knob(  # a model file (.safetensors export or a run's .pt: its
        #   EMA) whose U-Net weights a *fresh* run starts from (never re-applied on resume)
        None, flag=True, metavar="FILE",
        help="start a new run from the U-Net weights of FILE (a .safetensors export or a run's "
             ".pt: its EMA); a conditional run from an unconditional file starts as that model "
             "(zero condition weights); a latent file brings its autoencoder and scale factor. "
             "Never re-applied on --resume")
    # --- reflow (Liu et al. 2022 sec. 3; training.reflow): train on a teacher's pairs
    reflow_pairs: str | None = knob(  # a directory of (noise, sample) pairs (reflow-pairs);
        #   replaces the data: a pair's sample is x0, its noise eps (latent rectified flow,
        #   unconditional; with init_from = the teacher); the last shard validates
        None, flag=True, metavar="DIR",
        help="train one reflow round on the (noise, teacher sample) pairs in DIR (written by "
             "reflow-pairs) instead of the slices; latent rectified flow only, usually with "
             "--init-from TEACHER.safetensors")
    # --- conditional generation (issue 12; models.conditioning): none keeps the run unconditional
    condition: str = knob(  # none | mask | slice | mask+slice: what the U-Net is given (the
        #   mask as one-hot channels, the slice 0..31 as an embedding; unet_overrides
        #   mask_encoding / slice_embedding choose other encodings)
        "none", flag=True, choices=CONDITIONS,
        help="train a conditional model on the tissue mask and/or slice level")
    p_uncond: float = knob(  # condition dropout for classifier-free guidance: 0.1, the low
        #   end of Ho & Salimans' 0.1-0.2 (both gave their best FID), so 90% of a small CPU
        #   budget trains the conditional model while the null condition still gets ~1 batch
        #   in 10
        DEFAULT_P_UNCOND, flag=True, metavar="P",
        help="condition dropout for classifier-free guidance")
    condition_dropout: str = "joint"  # joint (mask and slice dropped together) | independent
    mask_ablation_p: float = knob(  # per-class mask ablation (Konz et al. 2024) so partial
        #   masks work; 0.1 (not their 0.5) keeps 0.9**3 = 73% of masks complete: full masks,
        #   the usual request, stay the main signal and "background" stays mostly non-brain
        0.1, flag=True, metavar="P", help="per-class mask ablation probability")
    # --- progress grids (changing them changes no number of the run: resume="safe")
    sample_n: int = knob(16, resume="safe")
    sampler: str | None = knob(  # sampler of the progress grids; None: the noise process's
        #   default_sampler (ddim for vp, flow-euler for rectified-flow)
        None, resume="safe")
    sample_steps: int | None = knob(  # network calls of the grid; None: the sampler's default
        #   (all T for ddpm, which accepts no other value; 50 for the fast samplers)
        None, resume="safe")

    def validate(self) -> None:
        super().validate()
        _choice("preset", self.preset, tuple(UNET_PRESETS))
        _choice("arch", self.arch, (*ARCHS, EXTERNAL_ARCH))
        self.diffusion.validate()
        if self.sampler is not None:
            _choice("sampler", self.sampler, samplers_for(self.diffusion.noise_process))
            if not get_sampler(self.sampler).accepts_steps(self.sample_steps,
                                                           self.diffusion.timesteps):
                raise ValueError(f"sampler {self.sampler!r} runs all "
                                 f"T={self.diffusion.timesteps} steps; sample_steps must be "
                                 f"None, got {self.sample_steps}")
        if self.autoencoder is not None and self.arch != "unet":
            raise ValueError("latent diffusion needs arch 'unet' (the seed's SimpleUNet is "
                             "1-channel only; an external network is sized by its caller)")
        if self.latent_scale_factor is not None and not self.latent_scale_factor > 0:
            raise ValueError(f"latent_scale_factor must be > 0, got {self.latent_scale_factor}")
        self._validate_condition()
        if self.reflow_pairs is not None:
            if self.condition != "none":
                raise ValueError(f"reflow_pairs trains an unconditional model; condition is "
                                 f"{self.condition!r} (drop --condition)")
            if self.diffusion.noise_process != "rectified-flow":
                raise ValueError(f"reflow_pairs straightens a rectified flow; noise_process is "
                                 f"{self.diffusion.noise_process!r} (--noise-process "
                                 "rectified-flow)")
            if self.autoencoder is None and self.init_from is None:
                raise ValueError("reflow_pairs trains a latent model: give init_from (the "
                                 "teacher, --init-from FILE) or autoencoder")

    def _validate_condition(self) -> None:
        fields = parse_condition(self.condition)  # split on "+", names from the registry
        _choice("condition_dropout", self.condition_dropout, DROPOUT_MODES)
        for name in ("p_uncond", "mask_ablation_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got "
                                 f"{getattr(self, name)}")
        if self.condition != "none" and self.arch != "unet":
            raise ValueError("conditional training needs arch 'unet' (the seed's SimpleUNet "
                             "and external networks take (x, t) only)")
        uses = {"mask_encoding": False, "slice_embedding": False}
        uses.update({f.unet_option: True for f in fields if f.unet_option is not None})
        for key, used in uses.items():
            value = self.unet_overrides.get(key)
            if value is not None and (value != "none") != used:
                raise ValueError(f"unet_overrides {key}={value!r} does not fit condition "
                                 f"{self.condition!r}; set condition to match, or drop {key}")

    @classmethod
    def presets(cls) -> dict[str, TrainConfig]:
        return TRAIN_PRESETS


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
