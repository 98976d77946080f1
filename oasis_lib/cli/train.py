"""``train``: validate the flags and resolve a resume against its checkpoint, before training.

Before any data is read or any step is taken: numbers in range (``--max-steps 0`` refused),
``--out`` a folder, the batch against the available memory (:func:`validate.check_memory`).
:func:`prepare_train` returns the config for the command to train. With ``--resume`` only the
flags actually given are compared with the checkpoint
(:func:`oasis_lib.training.resume.merge_for_resume`): a flag that changes the maths is refused
with both values named, the run's length comes from the checkpoint unless given, and a run that
already reached its length says so (exit 0) instead of training on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..file_layout import run_kind
from .errors import UsageError, usage_phase
from .validate import (
    add_train_splits_flag,
    check_input_checkpoint,
    check_memory,
    check_positive_float,
    check_positive_int,
    check_writable_parent,
)

#: argparse dest -> TrainConfig field (``diffusion.x`` for the nested ones).
ARG_FIELDS = {
    "preset": "preset", "arch": "arch", "image_size": "image_size", "epochs": "epochs",
    "max_steps": "max_steps", "max_minutes": "max_minutes", "budget_clock": "budget_clock",
    "grad_accum": "grad_accum",
    "optimizer": "optimizer",
    "grad_clip": "grad_clip", "batch_size": "batch_size", "lr": "lr", "precision": "precision",
    "device": "device", "seed": "seed", "data_root": "data_root",
    "checkpoint_every": "checkpoint_every", "ema_decay": "ema_decay",
    "warmup_steps": "warmup_steps", "validate_every": "validate_every",
    "sample_every": "sample_every", "prediction": "diffusion.prediction_type",
    "schedule": "diffusion.schedule", "timesteps": "diffusion.timesteps",
    "loss": "diffusion.loss_type", "min_snr_gamma": "diffusion.min_snr_gamma",
    "autoencoder": "autoencoder", "latent_cache_dir": "latent_cache_dir",
    "condition": "condition", "p_uncond": "p_uncond", "mask_ablation_p": "mask_ablation_p",
    "train_splits": "train_splits", "init_from": "init_from",
}
#: The optimiser, LR-schedule and EMA flags (argparse dest -> TrainConfig field), added by
#: :func:`add_train_flags` and passed to the config by :func:`optimizer_overrides`.
OPTIMIZER_FIELDS = {
    "weight_decay": "weight_decay", "adam_betas": "adam_betas", "adam_eps": "adam_eps",
    "lr_schedule": "lr_schedule", "lr_decay_steps": "lr_decay_steps", "ema_power": "ema_power",
    "ema_inv_gamma": "ema_inv_gamma",
}
ARG_FIELDS.update(OPTIMIZER_FIELDS)
FLAG_FIELDS = {"channels_last": "channels_last", "compile": "compile", "no_progress": "progress",
               "no_fused_optimizer": "fused_optimizer"}
DEFAULT_PRESET = "cpu"


def field_flags(fields: dict[str, str]) -> dict[str, str]:
    """{config field (and its last part, ``timesteps`` of ``diffusion.timesteps``): flag} of an
    ``{argparse dest: field}`` map, for :func:`~oasis_lib.cli.errors.usage_phase` messages."""
    out = {}
    for dest, field in fields.items():
        out[field] = out[field.rsplit(".", 1)[-1]] = "--" + dest.replace("_", "-")
    return out


#: The ``train`` flags by config field; ``train-autoencoder``'s (same names, two of its model).
TRAIN_FLAGS = field_flags(ARG_FIELDS)
AUTOENCODER_FLAGS = {f: "--" + f.replace("_", "-") for f in (
    "image_size", "crop_size", "latent_channels", "channel_mult", "epochs", "max_steps",
    "max_minutes", "batch_size", "lr", "checkpoint_every", "train_splits")}


def add_train_flags(parser) -> None:
    """The ``train`` flags defined here rather than in ``main.py``: ``--train-splits``,
    ``--init-from`` and the optimiser / LR-schedule / EMA details (:data:`OPTIMIZER_FIELDS`)."""
    from ..config import LR_SCHEDULES

    g = parser.add_argument_group("optimiser, LR schedule and EMA (default: the preset's)")
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--adam-betas", type=float, nargs=2, default=None, metavar=("B1", "B2"))
    g.add_argument("--adam-eps", type=float, default=None)
    g.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                   help="after the linear warm-up; cosine needs --lr-decay-steps")
    g.add_argument("--lr-decay-steps", type=int, default=None, metavar="N",
                   help="cosine: the step where the LR reaches 0, counted from the start")
    g.add_argument("--ema-power", type=float, default=None,
                   help="EMA warm-up 1 - (1 + n / inv_gamma) ** -power (diffusers' EMAModel; "
                        "its example: 0.75) instead of (1 + n) / (10 + n)")
    g.add_argument("--ema-inv-gamma", type=float, default=None)
    g.add_argument("--no-fused-optimizer", action="store_true",
                   help="torch's foreach Adam/AdamW instead of the fused kernel")
    add_train_splits_flag(parser)
    parser.add_argument(
        "--init-from", default=None, metavar="FILE",
        help="start a new run from the U-Net weights of FILE (a .safetensors export or a run's "
             ".pt: its EMA); a conditional run from an unconditional file starts as that model "
             "(zero condition weights); a latent file brings its autoencoder and scale factor. "
             "Never re-applied on --resume")


def optimizer_overrides(args) -> dict:
    """The TrainConfig overrides of the optimiser flags that were given."""
    over = {field: getattr(args, dest) for dest, field in OPTIMIZER_FIELDS.items()
            if getattr(args, dest, None) is not None}
    if "adam_betas" in over:
        over["adam_betas"] = tuple(over["adam_betas"])
    if getattr(args, "no_fused_optimizer", False):
        over["fused_optimizer"] = False
    return over


def explicit_fields(args) -> set[str]:
    """The config fields the user set on the command line."""
    given = {field for dest, field in ARG_FIELDS.items() if getattr(args, dest, None) is not None}
    return given | {field for dest, field in FLAG_FIELDS.items() if getattr(args, dest, False)}


def check_train_args(args) -> None:
    """Numbers and paths, before anything is read."""
    for dest in ("max_steps", "epochs", "batch_size", "image_size", "checkpoint_every",
                 "validate_every", "sample_every"):
        check_positive_int(getattr(args, dest), flag="--" + dest.replace("_", "-"))
    check_positive_int(args.timesteps, flag="--timesteps", minimum=2)
    check_positive_int(args.warmup_steps, flag="--warmup-steps", minimum=0)
    check_positive_int(getattr(args, "lr_decay_steps", None), flag="--lr-decay-steps")
    check_positive_float(getattr(args, "weight_decay", None), flag="--weight-decay",
                         allow_zero=True)
    for dest in ("lr", "max_minutes", "min_snr_gamma", "adam_eps", "ema_power", "ema_inv_gamma"):
        check_positive_float(getattr(args, dest, None), flag="--" + dest.replace("_", "-"))
    for dest in ("p_uncond", "mask_ablation_p"):
        value = getattr(args, dest, None)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"--{dest.replace('_', '-')} must be a probability in [0, 1], "
                             f"got {value}")
    check_positive_float(args.grad_clip, flag="--grad-clip", allow_zero=True)
    if args.ema_decay is not None and not 0.0 <= args.ema_decay < 1.0:
        raise UsageError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if getattr(args, "autoencoder", None) is not None:
        check_input_checkpoint(args.autoencoder, flag="--autoencoder")
    init = getattr(args, "init_from", None)
    if init is not None and not Path(init).is_file():
        raise UsageError(f"--init-from {init} does not exist; give a model file (.safetensors "
                         "export or a run's best.pt)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a run folder, e.g. runs/NAME")
    check_writable_parent(out / "last.pt", flag="--out")
    if getattr(args, "override", None) and not args.resume:
        raise UsageError("--override only applies with --resume")


def resume_config(cfg, *, explicit: set[str], allow: tuple[str, ...] = ()):
    """``cfg`` (built from the flags) merged with ``OUT/last.pt``: the flags in ``explicit``
    must match it (or be allowed), the rest come from it. None, after saying so, when the run
    is already finished."""
    from ..checkpoint import load_checkpoint
    from ..training.resume import finished, merge_for_resume

    out = Path(cfg.out_dir)
    last = out / "last.pt"
    if not last.is_file():
        raise UsageError(f"--resume: no checkpoint at {last}; start the run without "
                         "--resume, or check --out")
    ckpt = load_checkpoint(last)
    check_run_kind(ckpt["config"], cfg, last)
    with usage_phase():
        merged = merge_for_resume(ckpt["config"], cfg.to_dict(), checkpoint=str(last),
                                  explicit=explicit, allow=allow)
        cfg = type(cfg).from_dict(merged)
    root = merged.get("data_root")
    if root is not None and "data_root" not in explicit and not Path(root).expanduser().is_dir():
        raise UsageError(f"the run's data root {root} (stored in {last}) no longer exists; if "
                         "the data moved, resume with --data-root NEW_FOLDER --override "
                         "data_root")
    reason = finished(ckpt, merged)
    if reason:
        print(f"{out} is already finished: {reason}. Nothing to do; pass a larger "
              "--max-steps, --epochs or --max-minutes with --resume to train on")
        return None
    return cfg


#: The command that trains each kind of run (:func:`oasis_lib.file_layout.run_kind`).
RUN_COMMANDS = {"diffusion": "train", "autoencoder": "train-autoencoder"}


def check_run_kind(saved: dict, cfg, last: Path) -> None:
    """Refuse to resume a run of the other kind (a diffusion run with ``train-autoencoder``,
    or the reverse), naming what the folder holds and the command that resumes it."""
    from ..config import AutoencoderTrainConfig

    want = "autoencoder" if isinstance(cfg, AutoencoderTrainConfig) else "diffusion"
    found = run_kind(saved)
    if found is None or found == want:
        return
    command, asked = RUN_COMMANDS[found], RUN_COMMANDS[want]
    raise UsageError(
        f"--out {last.parent} holds {'an' if found[0] in 'aeiou' else 'a'} {found} run "
        f"({last} was written by `{command}`), not {'an' if want[0] in 'aeiou' else 'a'} "
        f"{want} run: resume it with `python -m oasis_lib {command} --out {last.parent} "
        f"--resume`, or give `{asked}` another --out")


def prepare_train(args, config_from_args: Callable):
    """The TrainConfig to train, or None when a resumed run is already finished (said so)."""
    check_train_args(args)
    explicit = explicit_fields(args)
    if args.preset is None:
        args.preset = DEFAULT_PRESET
    with usage_phase(TRAIN_FLAGS):
        cfg = config_from_args(args)
    if args.resume:
        cfg = resume_config(cfg, explicit=explicit, allow=tuple(args.override or ()))
        if cfg is None:
            return None
    elif getattr(cfg, "init_from", None) is not None:  # a latent file's autoencoder and scale
        from ..training.init_from import read_init_source, resolve_init_config

        with usage_phase():  # (the Trainer resolves again: the same values, accepted)
            resolve_init_config(cfg, read_init_source(cfg.init_from))
    with usage_phase(TRAIN_FLAGS):
        check_rank_split(cfg)
        if getattr(cfg, "autoencoder", None) is not None:
            check_latent_size(cfg)  # (the Trainer would refuse it only after loading the data)
        # /proc/meminfo says nothing of GPU memory; a latent run's shape is known only later.
        elif cfg.device in ("auto", "cpu"):
            check_memory(cfg, shape=(1, cfg.image_size, cfg.image_size), batch=cfg.batch_size,
                         training=True, flag="--batch-size")
    return cfg


def check_rank_split(cfg) -> None:
    """Under torchrun, ``--batch-size`` must split evenly over the ranks and micro-steps
    (checked from the environment, before the process group is joined)."""
    from ..training.distributed import env_ranks

    _, world, _ = env_ranks()
    parts = world * cfg.grad_accum
    if world > 1 and cfg.batch_size % parts:
        below = cfg.batch_size // parts * parts
        near = " or ".join(str(n) for n in (below, below + parts) if n > 0)
        raise UsageError(
            f"--batch-size {cfg.batch_size} must be a multiple of {parts} = {world} torchrun "
            f"ranks x --grad-accum {cfg.grad_accum} (every rank takes an equal share of each "
            f"optimiser step); e.g. --batch-size {near}")


def check_latent_size(cfg) -> None:
    """A latent run's ``--image-size`` must be a multiple of its autoencoder's factor f."""
    from ..pretrained_autoencoder import load_autoencoder

    f = load_autoencoder(cfg.autoencoder).config.downsampling_factor
    if cfg.image_size % f:
        below = cfg.image_size // f * f
        near = " or ".join(str(n) for n in (below, below + f) if n >= f)
        raise UsageError(
            f"--image-size {cfg.image_size} must be a multiple of the autoencoder's "
            f"downsampling factor f={f} ({cfg.autoencoder}); e.g. --image-size {near}")
