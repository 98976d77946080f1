"""Load trained weights as a ready-to-sample :class:`~oasis_lib.diffusion.DiffusionPipeline`.

``load_model`` accepts both a training checkpoint (``last.pt``/``best.pt``: the EMA weights
are used) and a shared safetensors file such as the shipped demo checkpoint
``checkpoints/demo_cpu64_ema.safetensors``::

    pipe = load_model()                      # the shipped demo checkpoint
    images = pipe.sample(16, sampler="dpm++2m", steps=25)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_state_strict
from .config import EXTERNAL_ARCH, TrainConfig
from .device import get_device
from .diffusion.pipeline import DiffusionPipeline, SamplingDefaults
from .file_layout import read_model_export, run_kind
from .models.autoencoder import AutoencoderKL
from .models.factory import build_model, build_pipeline, build_schedule
from .paths import DEMO_CHECKPOINT, REPO_URL, shipped_checkpoint
from .pretrained_autoencoder import (
    autoencoder_config,
    autoencoder_sha256,
    export_autoencoder,
    load_autoencoder,
    run_autoencoder,
)
from .pretrained_decoder import check_decoder, export_decoder, load_decoder

__all__ = ["DEMO_CHECKPOINT", "REPO_URL", "autoencoder_sha256", "build_model", "build_pipeline",
           "build_schedule", "export_autoencoder", "export_decoder", "load_autoencoder",
           "load_decoder", "load_model", "run_autoencoder", "shipped_checkpoint"]


def load_model(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               use_ema: bool = True, model: torch.nn.Module | None = None,
               autoencoder: str | os.PathLike | None = None,
               decoder: str | os.PathLike | None = None) -> DiffusionPipeline:
    """Load weights for sampling; returns a :class:`DiffusionPipeline` in eval mode.

    Args:
        path: a ``.pt`` training checkpoint or a ``.safetensors`` export; ``None`` means the
            shipped demo checkpoint.
        device: passed to :func:`oasis_lib.device.get_device`.
        use_ema: for ``.pt`` files, take the EMA weights (default) or the live ones.
        model: for a run trained with ``arch="external"``, a freshly built network of its
            layout to load the weights into (the library cannot build it).
        autoencoder: for a latent run's ``.pt`` whose autoencoder moved, its new place;
            accepted only if it holds the weights the run trained with (:func:`run_autoencoder`).
        decoder: a light decoder (``train-decoder``'s export or run) that decodes in place of
            the autoencoder's (``pipe.decoder``); refused unless distilled from this model's
            autoencoder (:func:`~oasis_lib.pretrained_decoder.check_decoder`).

    The pipeline's ``config`` is the run's :class:`~oasis_lib.config.TrainConfig`; its
    ``sampling_defaults`` are the export's default sampler and steps (checked against
    the model's noise process here: a bad value raises :class:`CheckpointError` naming them),
    None for a file without them and for a ``.pt`` training checkpoint.
    """
    path = Path(path) if path is not None else shipped_checkpoint(DEMO_CHECKPOINT.name)
    dev = get_device(device)
    moved, autoencoder, defaults = autoencoder, None, None
    if path.suffix == ".safetensors":
        state, cfg_dict, bundled, defaults = read_model_export(path)
        if bundled is not None:  # a latent model exported with its autoencoder
            autoencoder = AutoencoderKL(autoencoder_config(bundled[1]))
            load_state_strict(autoencoder, bundled[0], source=f"{path} (autoencoder)")
            autoencoder = autoencoder.float().to(dev).eval().requires_grad_(False)
    else:
        ckpt = load_checkpoint(path)
        cfg_dict = ckpt["config"]
        state = ckpt["ema"]["model"] if use_ema and "ema" in ckpt else ckpt["model"]
    try:
        config = TrainConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as err:  # e.g. a segmenter's weights, or a foreign config
        if cfg_dict.get("kind"):
            raise CheckpointError(f"{path} holds a {cfg_dict['kind']}, not a diffusion model; "
                                  "pass a checkpoint of `train` or its export") from err
        if run_kind(cfg_dict) == "autoencoder":  # an autoencoder run's checkpoint
            raise CheckpointError(f"{path} is an autoencoder run's checkpoint (made by "
                                  "`train-autoencoder`), not a diffusion model: pass it as "
                                  "`train --autoencoder`") from err
        raise CheckpointError(f"{path} is not an oasis_lib diffusion model: its config does "
                              f"not describe a run ({str(err)[:160]})") from err
    if moved is not None and (autoencoder is not None or config.autoencoder is None):
        raise CheckpointError(f"{path} is not a latent run that needs its autoencoder found: "
                              + ("it carries its own" if autoencoder is not None
                                 else "it is a pixel-space model") + "; drop --autoencoder")
    if autoencoder is not None and config.autoencoder_sha256 is not None:  # a bundled one
        found = autoencoder_sha256(autoencoder)
        if found != config.autoencoder_sha256:
            raise CheckpointError(f"{path}: its bundled autoencoder (sha256 {found[:12]}) is not "
                                  "the one its U-Net trained with "
                                  f"({config.autoencoder_sha256[:12]}); the file was modified: "
                                  "export the run again")
    if autoencoder is None and config.autoencoder is not None:
        autoencoder, found_at = run_autoencoder(cfg_dict, run_path=path, override=moved,
                                                device=dev)
        config.autoencoder = str(found_at)  # where it was found (e.g. read by init_from)
    if (model is not None) != (config.arch == EXTERNAL_ARCH):
        raise CheckpointError(
            f"{path} was trained with a network its caller built (arch 'external'): pass one "
            "of the same layout, load_model(path, model=net)" if model is None else
            f"{path} holds an arch {config.arch!r} model, which the library builds: drop model=")
    pipe = build_pipeline(config, autoencoder=autoencoder, warn=False, model=model)
    load_state_strict(pipe.model, state, source=str(path))
    if defaults is not None:
        try:
            pipe.sampling_defaults = SamplingDefaults.from_dict(defaults).check(pipe.process)
        except ValueError as err:
            raise CheckpointError(f"{path}: its sampling defaults {defaults} cannot run: "
                                  f"{err}") from err
    if decoder is not None:
        if pipe.autoencoder is None:
            raise CheckpointError(f"decoder {decoder} given, but {path} is a pixel-space model "
                                  "(it decodes nothing); drop it")
        pipe.decoder = load_decoder(decoder, device=dev)
        check_decoder(pipe.decoder, pipe.autoencoder, source=str(decoder))
    return pipe.to(dev).eval()
