"""Checkpoints that survive a crash: atomic writes, safe loads, clear mismatch errors.

A training checkpoint is a plain dict of tensors and Python primitives (model, EMA,
optimiser, LR scheduler, step, epoch, RNG states, config), so it loads with
``torch.load(..., weights_only=True)``: loading never executes pickled code. Writes go to a
temporary file in the same folder, are flushed and fsynced, then renamed over the target, so
a crash mid-write leaves the previous checkpoint intact. EMA weights can be exported to
safetensors (fp16) for sharing; that is the format of the shipped demo checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the model."""


# What a full disk looks like: the OSError, torch's zip writer ("[enforce fail at
# inline_container.cc:672] . unexpected pos ..."), safetensors' Rust IoError (os error 28).
_DISK_FULL = re.compile(r"unexpected pos|file write failed|no space left|os error 28|"
                        r"code: 28|storagefull|quota exceeded", re.IGNORECASE)


class DiskFullError(OSError):
    """Writing ``path`` failed because the disk is full. ``str()`` says which file, that the
    file it would have replaced is intact (atomic writes), and the last good checkpoint."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | None = None, *,
                 last_good: tuple[str, int] | None = None, resume_hint: bool = False):
        super().__init__(errno.ENOSPC, "no space left on device", str(path))
        self.path, self.cause = Path(path), cause
        free = ""
        with contextlib.suppress(OSError):
            parent = next(p for p in (self.path, *self.path.parents) if p.exists())
            free = f", {shutil.disk_usage(parent).free / 2**20:.0f} MiB free there"
        detail = str(cause).strip().splitlines()[0][:120] if cause is not None else ""
        text = (f"the disk is full: writing {self.path} failed"
                f"{f' ({detail})' if detail else ''}{free}; nothing was half-written")
        if resume_hint:
            text += (f". The last good checkpoint is {last_good[0]} (step {last_good[1]}): "
                     "free some space, then continue the run with --resume"
                     if last_good else ". No checkpoint of this run was saved yet: free some "
                     "space and start it again")
        else:
            text += ": free some space and run again"
        self.message = text

    def __str__(self) -> str:
        return self.message


def is_disk_full(err: BaseException) -> bool:
    """Whether a write failed for lack of space (the OSError or a writer's own text)."""
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return bool(_DISK_FULL.search(str(err)))


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Within the block, a write that fails for lack of space raises :class:`DiskFullError`
    naming ``path`` (the file meant, not its temporary name)."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err):
            raise
        cause = err.cause if isinstance(err, DiskFullError) else err
        raise DiskFullError(path, cause) from err


@contextlib.contextmanager
def run_checkpoint(last_good: tuple[str, int] | None):
    """Around a training run's checkpoint write: a :class:`DiskFullError` also names the run's
    last good checkpoint ``(path, step)`` (None: none yet) and how to continue."""
    try:
        yield
    except DiskFullError as err:
        raise DiskFullError(err.path, err.cause, last_good=last_good, resume_hint=True) from err


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, flush, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with writing(path), os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True``; errors name the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not an oasis_lib training checkpoint "
                              "(expected a dict with 'model' and 'config')")
    return ckpt


def safe_torch_load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)``; a failure raises :class:`CheckpointError` naming
    the path and the cause in words that never suggest unsafe loading."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, unsafe pickle ...
        raise CheckpointError(f"cannot read {what} {path}: {_load_failure(path, e)}") from e


def _load_failure(path: Path, err: Exception) -> str:
    """Why ``torch.load`` failed, in our words: torch's own text for a pickle it refuses
    suggests unsafe loading, which we never do, nor suggest."""
    text = str(err)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes); it was never written completely"
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        return ("it holds pickled Python objects besides tensors, and such a file can run code "
                "when loaded; it was not written by oasis_lib (or was modified), so it is "
                "refused. Use a checkpoint written by `train` or a .safetensors export")
    if "central directory" in text or "zip archive" in text or "EOF" in text:
        return (f"the file is truncated or not a torch checkpoint ({size} bytes); a copy or "
                "a write stopped early: copy it again, or resume from another checkpoint")
    return text.splitlines()[0] if text else type(err).__name__


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor],
                      source: str = "checkpoint") -> None:
    """``load_state_dict`` that names missing, unexpected and mis-shaped keys on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        parts = [f"{source} does not match the model architecture of the config"]
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def state_sha256(state: dict[str, torch.Tensor], *, config: dict | None = None,
                 exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 of a model's content: its ``config`` (JSON) and every tensor of ``state`` but
    ``exclude`` (name, shape, bytes), floating-point tensors **at fp16**, the precision exports
    store: a run's ``.pt`` and its ``.safetensors`` export hash alike, while any trained change
    (retraining moves nearly every weight far beyond fp16's rounding) gives another hash."""
    h = hashlib.sha256(json.dumps(config or {}, sort_keys=True).encode())
    for name in sorted(state):
        if name in exclude:
            continue
        t = state[name].detach().cpu()
        t = (t.half() if t.is_floating_point() else t).contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state[name].shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------- RNG state, weights_only-safe
def get_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The RNG states of python, numpy, torch (CPU, and CUDA if used) and the trainer."""
    py = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global stream users seed)
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


# ---------------------------------------------------------------- shareable EMA weights
def export_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike, *,
                       config: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write weights (e.g. the EMA) to safetensors, cast to ``dtype``, with the config as
    JSON metadata so :func:`load_safetensors` can rebuild the model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state.items()}
    meta = {"format": "oasis_lib", "config": json.dumps(config or {})}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with writing(path):
            save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise
    return path


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights and the config stored by :func:`export_safetensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # every .safetensors read of the library comes through here
        raise CheckpointError(f"cannot read {path}: {_safetensors_failure(path, e)}") from e
    try:
        return tensors, json.loads(meta.get("config", "{}"))
    except ValueError as e:
        raise CheckpointError(f"cannot read {path}: its config metadata is not valid JSON "
                              f"({e}); it was not written by oasis_lib, or was modified") from e


def _safetensors_failure(path: Path, err: Exception) -> str:
    """Why a safetensors read failed, in words: the deserialiser's "incomplete metadata, file
    not fully covered" means a file cut short by a copy or a download that stopped early."""
    text = str(err)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes); it was never written completely"
    if any(k in text for k in ("not fully covered", "header too small", "HeaderTooSmall",
                               "MetadataIncompleteBuffer", "incomplete")):
        return (f"the file is truncated ({size:,} bytes; its header promises more); a copy "
                "or a download stopped early: copy or download it again, or export it again "
                "from its run (`python -m oasis_lib export`)")
    if any(k in text.lower() for k in ("header", "deserializ", "invalid")):
        return (f"the file is corrupt or not a safetensors file ({size:,} bytes: "
                f"{text.splitlines()[0][:120]}); copy or download it again, or export it again "
                "from its run (`python -m oasis_lib export`)")
    return text.splitlines()[0] if text else type(err).__name__
