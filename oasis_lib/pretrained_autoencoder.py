"""Trained autoencoders on disk: read (:func:`load_autoencoder`), written
(:func:`export_autoencoder`) and found by content (:func:`run_autoencoder`,
:func:`autoencoder_sha256`).

A latent diffusion run names its autoencoder's file and stores its content hash; the factory
(:func:`oasis_lib.models.factory.build_pipeline`), the Trainer and
:func:`oasis_lib.pretrained.load_model` read it through here. (``oasis_lib.pretrained``
re-exports these names.)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .autoencoder_train_config import AutoencoderTrainConfig
from .checkpoint import CheckpointError, load_checkpoint, load_state_strict, state_sha256
from .device import get_device
from .file_layout import read_autoencoder_export, run_kind, write_autoencoder_export
from .models.autoencoder import AutoencoderKL
from .models.autoencoder_config import AutoencoderConfig

__all__ = ["autoencoder_config", "autoencoder_sha256", "export_autoencoder", "load_autoencoder",
           "run_autoencoder"]


def autoencoder_config(d: dict) -> AutoencoderConfig:
    """The :class:`AutoencoderConfig` of a config dict read from a file (JSON lists back to
    tuples)."""
    return AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def load_autoencoder(path: str | os.PathLike, *, device: str | torch.device | None = None,
                     use_ema: bool = True) -> AutoencoderKL:
    """A trained :class:`~oasis_lib.models.autoencoder.AutoencoderKL`, frozen, in eval mode.

    ``path`` is an autoencoder training checkpoint (``runs/ae/best.pt``: its EMA weights), a
    safetensors export whose metadata has ``kind="autoencoder"``, or a latent diffusion export
    (its ``autoencoder.*`` weights: the autoencoder it was trained with).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = read_autoencoder_export(path)
        ae_config = autoencoder_config(meta)
    else:
        ckpt = load_checkpoint(path)
        try:
            run = AutoencoderTrainConfig.from_dict(ckpt["config"])
        except (ValueError, TypeError) as err:
            why = (": it is a diffusion run's (made by `train`); pass that as --init-from, and "
                   "an autoencoder run's best.pt as --autoencoder"
                   if run_kind(ckpt["config"]) == "diffusion" else f": {str(err)[:200]}")
            raise CheckpointError(f"{path} is not an autoencoder training checkpoint (made by "
                                  f"`train-autoencoder`){why}") from err
        ae_config = AutoencoderConfig.preset(run.preset, **run.autoencoder_overrides)
        state = ckpt["ema"]["model"] if use_ema and "ema" in ckpt else ckpt["model"]
    model = AutoencoderKL(ae_config)
    load_state_strict(model, state, source=str(path))
    return model.to(get_device(device)).eval().requires_grad_(False)


def export_autoencoder(model, path: str | os.PathLike, *, run_config: dict | None = None,
                       dtype: torch.dtype = torch.float16) -> Path:
    """Write an autoencoder's weights to a safetensors file that :func:`load_autoencoder`
    reads: metadata ``kind="autoencoder"``, its :class:`AutoencoderConfig` and, for the record,
    the training run's config (``run_config``): :mod:`oasis_lib.file_layout`."""
    return write_autoencoder_export(path, model, run_config=run_config, dtype=dtype)


def autoencoder_sha256(autoencoder) -> str:
    """The content hash a latent run stores of its autoencoder (``autoencoder_sha256``): its
    config and weights at fp16 (:func:`~oasis_lib.checkpoint.state_sha256`), ``scale_factor``
    excluded (it changes no weight the U-Net saw)."""
    return state_sha256(autoencoder.state_dict(), config=autoencoder.config.to_dict(),
                        exclude=("scale_factor",))


_UNVERIFIED: set[str] = set()  # runs already warned about (once each)


def _candidates(config: dict, run_path: Path | None) -> list[Path]:
    """Where a run's autoencoder may be: relative to the run folder as it was at training
    (the run's ``out_dir`` and ``autoencoder`` were given relative to the same folder), then
    the path as stored (relative to the current folder)."""
    stored, out_dir = Path(config["autoencoder"]), config.get("out_dir")
    found = []
    if run_path is not None and out_dir and not stored.is_absolute() \
            and not Path(out_dir).is_absolute():
        found.append(Path(os.path.normpath(Path(run_path).parent /
                                           os.path.relpath(stored, out_dir))))
    return list(dict.fromkeys([*found, stored]))  # (once each)


def run_autoencoder(config, *, run_path=None, override=None, device=None):
    """``(autoencoder, path)``: the autoencoder a latent run trained with, found by content.

    ``config`` is the run's config (a dict or TrainConfig); ``run_path`` its checkpoint (the
    run folder anchors the stored relative path); ``override`` the autoencoder's new place.
    A run stores the content hash of its autoencoder (``autoencoder_sha256``,
    :func:`autoencoder_sha256`) next to its path: a file whose weights differ (the autoencoder
    was retrained or replaced since) is refused with :class:`CheckpointError` naming the file,
    both hash prefixes and what to do. A run made before hashes were stored is used as before,
    with a warning (once per run) that it cannot be verified.
    """
    config = config if isinstance(config, dict) else config.to_dict()
    expected = config.get("autoencoder_sha256")
    where = f"the run {run_path}" if run_path is not None else "the run"
    mismatch = None
    for candidate in [Path(override)] if override is not None else _candidates(config, run_path):
        if not candidate.is_file():
            continue
        autoencoder = load_autoencoder(candidate, device=device)
        if expected is None:
            if str(run_path) not in _UNVERIFIED:
                _UNVERIFIED.add(str(run_path))
                warnings.warn(f"{where} predates autoencoder hashes: cannot verify that "
                              f"{candidate} is the autoencoder it trained with", UserWarning,
                              stacklevel=2)
            return autoencoder, candidate
        found = autoencoder_sha256(autoencoder)
        if found == expected:
            return autoencoder, candidate
        mismatch = mismatch or (candidate, found)
    if mismatch is not None:
        raise CheckpointError(
            f"the autoencoder changed since {where} was trained: {mismatch[0]} holds sha256 "
            f"{mismatch[1][:12]}, the run trained with {expected[:12]}; pass the autoencoder it "
            "trained with (--autoencoder FILE), or train a new run on this one")
    tried = " or ".join(str(p) for p in _candidates(config, run_path)) \
        if override is None else str(override)
    raise CheckpointError(f"{where} trained with the autoencoder {config['autoencoder']}, "
                          f"which is not at {tried}; if it moved, pass its new place with "
                          "--autoencoder FILE (checked by content)")
