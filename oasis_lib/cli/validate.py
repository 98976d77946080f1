"""The checks of flags that commands share: paths, numbers, sampler options, memory.

Each command's own checks (:mod:`.checks` and the command modules) are built from these.
Every check raises :class:`~oasis_lib.cli.errors.UsageError` (exit code 2) whose message
names the flag, the value and what to do. The commands call them first, so that a bad output
path or an impossible combination fails in a second, not after an hour of sampling or
training.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..diffusion.samplers import get_sampler, sampler_names, samplers_for
from ..diffusion.sampling_defaults import SamplingChoice, resolve_sampling
from .errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
#: The samplers that read ``eta`` (``uses_eta`` in the registry): DDIM (Song et al. 2021 eq. 16).
ETA_SAMPLERS = sampler_names(uses_eta=True)
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save zip archives; legacy pickles


# ------------------------------------------------------------------ paths
def looks_like_training_checkpoint(path: Path) -> bool:
    """True for a file ``torch.save`` wrote (a zip archive or a pickle), e.g. ``last.pt``."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return path.suffix in (".pt", ".pth") or head.startswith(TORCH_MAGIC)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | os.PathLike, *, flag: str, suffixes: tuple[str, ...],
                      inputs: tuple[str | os.PathLike | None, ...] = (),
                      protect_checkpoints: bool = True) -> Path:
    """An output file: a suffix the loaders read, writable, not an input, not a checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name ending in {suffixes[0]}")
    for source in inputs:
        if source is not None and (_same_file(path, Path(source))
                                   or path.resolve() == Path(source).resolve()):
            raise UsageError(f"{flag} {path} is the input file itself; refusing to overwrite "
                             "it: choose another output path")
    if protect_checkpoints and looks_like_training_checkpoint(path):
        raise UsageError(f"{flag} {path} is a training checkpoint; refusing to overwrite it "
                         "(a run could no longer resume): choose another output path")
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: unknown extension {path.suffix or '(none)'!r}; "
                         f"use one of {', '.join(suffixes)}")
    check_writable_parent(path, flag=flag)
    return path


def check_writable_parent(path: Path, *, flag: str) -> None:
    """The nearest existing ancestor of ``path`` is a folder we may write into."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: no permission to write in {parent}; choose a folder "
                         "you can write to")


def check_input_checkpoint(path: str | os.PathLike | None, *, flag: str = "--checkpoint") -> None:
    if path is None:
        return  # the shipped demo checkpoint
    path = Path(path)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UsageError(f"{flag} {path}: unknown extension {path.suffix or '(none)'!r}; "
                         f"expected a training checkpoint (.pt) or an export (.safetensors)")
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give the .pt or .safetensors file in it")
    if not path.is_file():
        raise UsageError(f"{flag} {path} does not exist")


# ------------------------------------------------------------------ numbers
def _train_splits(text: str) -> tuple[str, ...]:
    from ..data.layout import check_train_splits

    try:
        return check_train_splits(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_train_splits_flag(parser, *, default=None) -> None:
    """``--train-splits SPLITS`` (comma-separated, checked by name as it is parsed)."""
    parser.add_argument(
        "--train-splits", type=_train_splits, default=default, metavar="SPLITS",
        help="comma-separated splits to train on: train (default; test stays held out for the "
             "final numbers, validate chooses) or train,test (the seed's choice: nothing held "
             "out)")


def check_positive_int(value, *, flag: str, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}, got {value}")


def check_positive_float(value, *, flag: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"{flag} must be a finite number {bound}, got {value}")


def check_sampler_for_model(sampler: str | None, pipe) -> str:
    """The sampler a loaded model runs: ``--sampler``, or its noise process's default; a
    sampler that does not step the model's process is a usage error naming the ones that do."""
    process = pipe.process
    if sampler is None:
        return process.default_sampler
    if process.name not in get_sampler(sampler).processes:
        choices = " or ".join(f"--sampler {n}" for n in samplers_for(process.name))
        steps = " or ".join(get_sampler(sampler).processes)
        raise UsageError(f"--sampler {sampler} steps the {steps} process, but this model is "
                         f"{process.name}: use {choices}")
    return sampler


def check_sampling_for_model(args, pipe) -> SamplingChoice:
    """``--sampler``/``--steps`` of ``sample`` and ``evaluate`` against a loaded model: a given
    sampler must step its process (:func:`check_sampler_for_model`); then the flags win, else
    the file's ``sampling_defaults`` (its steps only with its own sampler), else the process's
    default sampler (:func:`~oasis_lib.diffusion.sampling_defaults.resolve_sampling`). Sets
    ``args.sampler`` and ``args.steps`` (and ``args.spacing``, checked against the process's
    ``spacings``) to the choice and returns it (``describe`` says where each came from)."""
    check_sampler_for_model(args.sampler, pipe)
    spacing = getattr(args, "spacing", None)
    if spacing is not None and spacing not in pipe.process.spacings:
        raise UsageError(f"--spacing {spacing}: the {pipe.process.name} model's time grids are "
                         f"{', '.join(pipe.process.spacings)}")
    choice = resolve_sampling(getattr(pipe, "sampling_defaults", None), pipe.process,
                              args.sampler, args.steps, spacing)
    args.sampler, args.steps = choice.sampler, choice.steps
    if hasattr(args, "spacing"):
        args.spacing = choice.spacing
    return choice


def check_sampler_flags(*, sampler: str, steps: int | None, eta: float | None,
                        timesteps: int | None = None) -> None:
    """Reject combinations a sampler would otherwise ignore without a word (the rules are the
    registry's: ``accepts_steps`` and ``uses_eta``)."""
    if not get_sampler(sampler).accepts_steps(steps, timesteps):
        total = f"all T={timesteps}" if timesteps else "all T"
        raise UsageError(f"--sampler {sampler} always runs {total} steps, so --steps {steps} "
                         "would be ignored; drop --steps, or use --sampler ddim or dpm++2m for "
                         "fewer steps")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    if timesteps is not None and steps is not None and steps > timesteps:
        raise UsageError(f"--steps {steps} is more than the model's T={timesteps} timesteps")
    if eta is not None:
        if sampler not in ETA_SAMPLERS:
            readers = " or ".join(ETA_SAMPLERS)
            raise UsageError(f"--eta is only read by --sampler {readers}; {sampler} would ignore "
                             f"--eta {eta}: drop it or use --sampler {readers}")
        if not 0.0 <= eta <= 1.0:
            raise UsageError(f"--eta must be in [0, 1] (0 deterministic DDIM, 1 DDPM-like), "
                             f"got {eta}")


# ------------------------------------------------------------------ memory
def available_memory() -> int | None:
    """Bytes the kernel reports as available (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def activation_bytes(model_or_config, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(parameter bytes, sum of all leaf-module output bytes, largest output) for one input of
    ``shape`` (C, H, W): the slice, or its latent in a latent run.

    Measured by running a copy of the model once on the ``meta`` device: no memory, no compute.
    """
    import copy

    import torch

    if isinstance(model_or_config, torch.nn.Module):
        model = copy.deepcopy(model_or_config).to("meta")
    else:
        from ..models.factory import build_model

        with torch.device("meta"):
            model = build_model(model_or_config)
    total, largest = [0], [0]

    def hook(module, _inputs, out):
        if isinstance(out, torch.Tensor) and next(module.children(), None) is None:
            total[0] += out.numel() * 4
            largest[0] = max(largest[0], out.numel() * 4)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty(1, *shape, device="meta"),
                  torch.zeros(1, dtype=torch.long, device="meta"))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters()) * 4
    return params, total[0], largest[0]


def check_memory(model_or_config, *, shape: tuple[int, int, int], batch: int, training: bool,
                 flag: str, available: int | None = None) -> None:
    """Refuse a batch whose lower-bound memory need exceeds the available (CPU) memory.

    Training keeps every activation for the backward pass: at least ``batch x (sum of leaf
    outputs)`` plus weights, gradients, two Adam moments and the EMA (5 x parameters).
    Sampling needs at least a few of the largest activations per image (4 x largest) plus
    the weights. Both are lower bounds, so a refusal is certain, never a guess.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    try:
        params, total, largest = activation_bytes(model_or_config, shape)
    except (RuntimeError, NotImplementedError):  # the meta device cannot run it: no estimate
        return  # (a ValueError, e.g. an image size the U-Net refuses, is bad usage: raised)
    per_image = total if training else 4 * largest
    fixed = (5 if training else 1) * params
    need = fixed + batch * per_image
    if need > available:
        fit = max(0, (available - fixed) // per_image)
        raise UsageError(
            f"{flag} {batch} at {shape[-2]}x{shape[-1]} needs at least "
            f"{need / 2**30:.1f} GiB of memory but {available / 2**30:.1f} GiB are available; "
            f"use {flag} {fit} or less" + (" (or a smaller --image-size)" if training else ""))
