"""``train``: validate the flags and resolve a resume against its checkpoint, before training.

The flags themselves are the configs' knobs (:mod:`.config_flags`); here: ``--resume``,
``--override`` and the checks.

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

from ..config import AutoencoderTrainConfig, TrainConfig
from ..file_layout import run_kind
from .config_flags import DEFAULT_PRESET, add_config_flags, config_from_args, flag_names
from .config_flags import explicit_fields as config_explicit_fields
from .config_flags import run_kind as config_run_kind
from .errors import UsageError, usage_phase
from .reflow import check_reflow_train
from .validate import (
    check_input_checkpoint,
    check_memory,
    check_positive_float,
    check_positive_int,
    check_writable_parent,
)

#: The ``train`` flags by config field (from the config's knobs; the other commands' are
#: ``flag_names(config)``).
TRAIN_FLAGS = flag_names(TrainConfig)


def add_train_flags(parser, config: type = TrainConfig) -> None:
    """The flags of a training command: one per knob of ``config`` that has a flag
    (:func:`.config_flags.add_config_flags`), then ``--resume`` and ``--override``."""
    from ..training.resume import SAFE_OVERRIDES

    add_config_flags(parser, config)
    g = parser.add_argument_group("resuming")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    g.add_argument("--override", action="append", default=None, metavar="FIELD",
                   help="with --resume: allow FIELD to differ from the checkpoint (data_root "
                        "after moving the data, or a bookkeeping interval): one of "
                        f"{', '.join(SAFE_OVERRIDES)}; repeatable")


def explicit_fields(args, config: type = TrainConfig) -> set[str]:
    """The config fields the user set on the command line."""
    return config_explicit_fields(config, args)


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
RUN_COMMANDS = {"diffusion": "train", "autoencoder": "train-autoencoder",
                "decoder": "train-decoder"}


def check_run_kind(saved: dict, cfg, last: Path) -> None:
    """Refuse to resume a run of the other kind (a diffusion run with ``train-autoencoder``,
    or the reverse), naming what the folder holds and the command that resumes it."""
    want = config_run_kind(type(cfg))
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
        check_reflow_train(cfg)  # a pair directory, written by reflow-pairs
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


def prepare_train_autoencoder(args, config: type = AutoencoderTrainConfig):
    """``train-autoencoder``'s config (or ``train-decoder``'s: ``config``), or None when a
    resumed run is already finished (said so): the flags given over the preset, a resume
    matched to ``last.pt``."""
    if args.override and not args.resume:
        raise UsageError("--override only applies with --resume")
    explicit = explicit_fields(args, config)
    with usage_phase(flag_names(config)):  # "--latent-channels must be ...": exit 2
        cfg = config_from_args(config, args)
    if args.resume:  # flags given must match last.pt; the others (and the length) come from it
        return resume_config(cfg, explicit=explicit, allow=tuple(args.override or ()))
    return cfg
