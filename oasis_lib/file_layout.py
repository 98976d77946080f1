"""What the files of a run hold: which kind of run a saved config describes, and the layout
of an export. Written and read here only.

An **export** is one fp16 ``.safetensors`` file (:func:`~oasis_lib.checkpoint.
export_safetensors`: weights, and a JSON config in the metadata) of one of these kinds:

* a pixel diffusion model: the U-Net's weights and the run's :class:`~oasis_lib.config.
  TrainConfig` (``pipe.save``, ``python -m oasis_lib export``);
* a latent diffusion model: the same, plus its autoencoder carried inside (keys prefixed
  ``autoencoder.``, the autoencoder's config under ``autoencoder_config``; the run's
  ``autoencoder`` path set to None: the file needs no other);
* either of those may carry its default sampler and step count under ``sampling_defaults``
  (``{"sampler": NAME, "steps": K or null}``; checked by
  :class:`~oasis_lib.diffusion.sampling_defaults.SamplingDefaults` on export and on load); a
  file without the key samples with its noise process's default sampler, as before;
* an autoencoder: its weights, ``kind="autoencoder"``, its config under ``autoencoder`` and
  the training run's config under ``run``;
* a light decoder (``train-decoder``): its weights, ``kind="lite-decoder"``, its config under
  ``lite_decoder``, the content hash of the autoencoder it was distilled from under
  ``autoencoder_sha256`` and the run's config under ``run``.

:func:`write_model_export` / :func:`read_model_export` and :func:`write_autoencoder_export` /
:func:`read_autoencoder_export` are the two pairs; :func:`oasis_lib.pretrained.load_model` and
:func:`oasis_lib.pretrained_autoencoder.load_autoencoder` build networks from what they read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import CheckpointError, export_safetensors, load_safetensors

AUTOENCODER_KIND = "autoencoder"  # metadata "kind" of an exported autoencoder
DECODER_KIND = "lite-decoder"  # metadata "kind" of an exported light decoder
AUTOENCODER_PREFIX = "autoencoder."  # its keys inside a latent diffusion export
BUNDLED_CONFIG = "autoencoder_config"  # the bundled autoencoder's config, in a latent export
SAMPLING_DEFAULTS = "sampling_defaults"  # a diffusion export's default sampler and steps

#: What each kind of run's config has that the other's lacks.
RUN_MARKERS = {"diffusion": "diffusion", "autoencoder": "crop_size", "decoder": "lite_decoder"}


def run_kind(config: dict) -> str | None:
    """``"diffusion"`` (made by ``train``), ``"autoencoder"`` (``train-autoencoder``),
    ``"decoder"`` (``train-decoder``) or None:
    the kind of run a saved config (a checkpoint's or an export's) describes."""
    return next((kind for kind, marker in RUN_MARKERS.items() if marker in config), None)


def write_model_export(path: str | os.PathLike, state: dict[str, torch.Tensor], config: dict,
                       *, autoencoder: torch.nn.Module | None = None,
                       scale_factor: float | None = None,
                       dtype: torch.dtype = torch.float16,
                       sampling_defaults: dict | None = None) -> Path:
    """A diffusion model's export: ``state`` (the U-Net's) and the run's ``config`` (a dict);
    a latent model's ``autoencoder`` goes inside the same file (and ``scale_factor``, when
    given, replaces the config's ``latent_scale_factor``); ``sampling_defaults`` (a checked
    ``SamplingDefaults.to_dict()``), when given, beside the config."""
    state, config = dict(state), dict(config)
    config.pop(SAMPLING_DEFAULTS, None)
    if sampling_defaults is not None:
        config[SAMPLING_DEFAULTS] = dict(sampling_defaults)
    if autoencoder is not None:  # one file carries both networks
        state |= {AUTOENCODER_PREFIX + k: v for k, v in autoencoder.state_dict().items()}
        config |= {"autoencoder": None, BUNDLED_CONFIG: autoencoder.config.to_dict()}
        if scale_factor is not None:
            config["latent_scale_factor"] = scale_factor
    return export_safetensors(state, path, config=config, dtype=dtype)


def _bundled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(AUTOENCODER_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(AUTOENCODER_PREFIX)}


def read_model_export(path: str | os.PathLike) -> tuple[
        dict[str, torch.Tensor], dict, tuple[dict, dict] | None, dict | None]:
    """``(U-Net state, run config, bundled, sampling defaults)`` of a diffusion model's
    export, ``bundled`` being ``(autoencoder state, autoencoder config dict)`` for a latent
    model, else None; ``sampling defaults`` the dict under ``sampling_defaults`` (None for a
    file without). A file without a config, or an autoencoder's, raises
    :class:`CheckpointError`."""
    state, config = load_safetensors(path)
    if not config:
        raise CheckpointError(f"{path} carries no oasis_lib config in its metadata")
    if config.get("kind") == AUTOENCODER_KIND:
        raise CheckpointError(f"{path} is an autoencoder, not a diffusion model: pass it as "
                              "`train --autoencoder` or to load_autoencoder()")
    defaults = config.pop(SAMPLING_DEFAULTS, None)
    ae_config = config.pop(BUNDLED_CONFIG, None)
    if ae_config is None:
        return state, config, None, defaults
    unet = {k: v for k, v in state.items() if not k.startswith(AUTOENCODER_PREFIX)}
    return unet, config, (_bundled(state), ae_config), defaults


def write_autoencoder_export(path: str | os.PathLike, autoencoder: torch.nn.Module, *,
                             run_config: dict | None = None,
                             dtype: torch.dtype = torch.float16) -> Path:
    """An autoencoder's export: its weights, ``kind="autoencoder"``, its config and, for the
    record, the training run's config (``run_config``)."""
    config = {"kind": AUTOENCODER_KIND, "autoencoder": autoencoder.config.to_dict(),
              "run": run_config or {}}
    return export_safetensors(autoencoder.state_dict(), path, config=config, dtype=dtype)


def read_autoencoder_export(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state, autoencoder config dict)`` of an autoencoder's export, or of the autoencoder
    a latent diffusion export carries; any other file raises :class:`CheckpointError`."""
    state, meta = load_safetensors(path)
    if BUNDLED_CONFIG in meta:  # a latent diffusion model with its autoencoder
        return _bundled(state), meta[BUNDLED_CONFIG]
    if meta.get("kind") != AUTOENCODER_KIND:
        raise CheckpointError(f"{path} is not an autoencoder export: expected metadata "
                              f"kind={AUTOENCODER_KIND!r}, found keys {sorted(meta)}")
    return state, meta["autoencoder"]


def write_decoder_export(path: str | os.PathLike, decoder: torch.nn.Module, *,
                         autoencoder_sha256: str, run_config: dict | None = None,
                         dtype: torch.dtype = torch.float16) -> Path:
    """A light decoder's export: its weights, ``kind="lite-decoder"``, its config, the hash of
    the autoencoder it reproduces and, for the record, the training run's config."""
    config = {"kind": DECODER_KIND, "lite_decoder": decoder.config.to_dict(),
              "autoencoder_sha256": autoencoder_sha256, "run": run_config or {}}
    return export_safetensors(decoder.state_dict(), path, config=config, dtype=dtype)


def read_decoder_export(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state, metadata)`` of a light decoder's export; another file raises
    :class:`CheckpointError`."""
    state, meta = load_safetensors(path)
    if meta.get("kind") != DECODER_KIND:
        raise CheckpointError(f"{path} is not a light decoder's export: expected metadata "
                              f"kind={DECODER_KIND!r}, found {meta.get('kind', 'no kind')!r} "
                              "(make one with `train-decoder`, then `export`)")
    return state, meta
