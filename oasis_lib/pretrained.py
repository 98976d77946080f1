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

from .checkpoint import CheckpointError, load_checkpoint, load_safetensors, load_state_strict
from .config import TrainConfig
from .device import get_device
from .diffusion.pipeline import DiffusionPipeline
from .models.factory import build_model, build_pipeline, build_schedule
from .paths import DEMO_CHECKPOINT, REPO_URL, shipped_checkpoint

__all__ = ["DEMO_CHECKPOINT", "REPO_URL", "build_model", "build_pipeline", "build_schedule",
           "load_model", "shipped_checkpoint"]


def load_model(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               use_ema: bool = True) -> DiffusionPipeline:
    """Load weights for sampling; returns a :class:`DiffusionPipeline` in eval mode.

    Args:
        path: a ``.pt`` training checkpoint or a ``.safetensors`` export; ``None`` means the
            shipped demo checkpoint.
        device: passed to :func:`oasis_lib.device.get_device`.
        use_ema: for ``.pt`` files, take the EMA weights (default) or the live ones.

    The pipeline's ``config`` is the run's :class:`~oasis_lib.config.TrainConfig`.
    """
    path = Path(path) if path is not None else shipped_checkpoint(DEMO_CHECKPOINT.name)
    dev = get_device(device)
    if path.suffix == ".safetensors":
        state, cfg_dict = load_safetensors(path)
        if not cfg_dict:
            raise CheckpointError(f"{path} carries no oasis_lib config in its metadata")
    else:
        ckpt = load_checkpoint(path)
        cfg_dict = ckpt["config"]
        state = ckpt["ema"]["model"] if use_ema and "ema" in ckpt else ckpt["model"]
    config = TrainConfig.from_dict(cfg_dict)
    model = build_model(config)
    load_state_strict(model, state, source=str(path))
    return build_pipeline(config, model=model.to(dev), warn=False).eval()
