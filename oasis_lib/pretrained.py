"""Load trained weights as a ready-to-sample :class:`~oasis_lib.diffusion.DiffusionPipeline`.

``load_model`` accepts both a training checkpoint (``last.pt``/``best.pt``: the EMA weights
are used) and a shared safetensors file such as the shipped demo checkpoint
``checkpoints/demo_cpu64_ema.safetensors``::

    pipe = load_model()                      # the shipped demo checkpoint
    images = pipe.sample(16, sampler="dpm++2m", steps=25)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_safetensors,
    load_state_strict,
    state_sha256,
)
from .config import EXTERNAL_ARCH, TrainConfig
from .device import get_device
from .diffusion.pipeline import DiffusionPipeline
from .models.factory import build_model, build_pipeline, build_schedule  # noqa: F401
from .paths import DEMO_CHECKPOINT, REPO_URL, shipped_checkpoint

__all__ = ["DEMO_CHECKPOINT", "REPO_URL", "autoencoder_sha256", "build_model", "build_pipeline",
           "build_schedule", "export_autoencoder", "load_autoencoder", "load_model",
           "run_autoencoder", "shipped_checkpoint"]

AUTOENCODER_KIND = "autoencoder"  # metadata "kind" of an exported autoencoder
AUTOENCODER_PREFIX = "autoencoder."  # its keys inside a latent diffusion export


def load_model(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               use_ema: bool = True, model: torch.nn.Module | None = None,
               autoencoder: str | os.PathLike | None = None) -> DiffusionPipeline:
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

    The pipeline's ``config`` is the run's :class:`~oasis_lib.config.TrainConfig`.
    """
    path = Path(path) if path is not None else shipped_checkpoint(DEMO_CHECKPOINT.name)
    dev = get_device(device)
    moved, autoencoder = autoencoder, None
    if path.suffix == ".safetensors":
        state, cfg_dict = load_safetensors(path)
        if not cfg_dict:
            raise CheckpointError(f"{path} carries no oasis_lib config in its metadata")
        if cfg_dict.get("kind") == AUTOENCODER_KIND:
            raise CheckpointError(f"{path} is an autoencoder, not a diffusion model: pass it as "
                                  "`train --autoencoder` or to load_autoencoder()")
        ae_cfg = cfg_dict.pop("autoencoder_config", None)
        if ae_cfg is not None:  # a latent model exported with its autoencoder
            from .models.autoencoder import AutoencoderConfig, AutoencoderKL

            autoencoder = AutoencoderKL(AutoencoderConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in ae_cfg.items()}))
            n = len(AUTOENCODER_PREFIX)
            load_state_strict(autoencoder, {k[n:]: v for k, v in state.items()
                                            if k.startswith(AUTOENCODER_PREFIX)},
                              source=f"{path} (autoencoder)")
            autoencoder = autoencoder.float().to(dev).eval().requires_grad_(False)
            state = {k: v for k, v in state.items() if not k.startswith(AUTOENCODER_PREFIX)}
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
        if "crop_size" in cfg_dict:  # an autoencoder run's checkpoint
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
    return pipe.to(dev).eval()


def load_autoencoder(path: str | os.PathLike, *, device: str | torch.device | None = None,
                     use_ema: bool = True):
    """A trained :class:`~oasis_lib.models.autoencoder.AutoencoderKL`, frozen, in eval mode.

    ``path`` is an autoencoder training checkpoint (``runs/ae/best.pt``: its EMA weights), a
    safetensors export whose metadata has ``kind="autoencoder"``, or a latent diffusion export
    (its ``autoencoder.*`` weights: the autoencoder it was trained with).
    """
    from .config import AutoencoderTrainConfig
    from .models.autoencoder import AutoencoderConfig, AutoencoderKL

    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = load_safetensors(path)
        if "autoencoder_config" in meta:  # a latent diffusion model with its autoencoder
            n = len(AUTOENCODER_PREFIX)
            meta = {"kind": AUTOENCODER_KIND, "autoencoder": meta["autoencoder_config"]}
            state = {k[n:]: v for k, v in state.items() if k.startswith(AUTOENCODER_PREFIX)}
        if meta.get("kind") != AUTOENCODER_KIND:
            raise CheckpointError(f"{path} is not an autoencoder export: expected metadata "
                                  f"kind={AUTOENCODER_KIND!r}, found keys {sorted(meta)}")
        ae_config = AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in meta["autoencoder"].items()})
    else:
        ckpt = load_checkpoint(path)
        try:
            run = AutoencoderTrainConfig.from_dict(ckpt["config"])
        except (ValueError, TypeError) as err:
            why = (": it is a diffusion run's (made by `train`); pass that as --init-from, and "
                   "an autoencoder run's best.pt as --autoencoder"
                   if "diffusion" in ckpt["config"] else f": {str(err)[:200]}")
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
    the training run's config (``run_config``)."""
    from .checkpoint import export_safetensors

    config = {"kind": AUTOENCODER_KIND, "autoencoder": model.config.to_dict(),
              "run": run_config or {}}
    return export_safetensors(model.state_dict(), path, config=config, dtype=dtype)


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
