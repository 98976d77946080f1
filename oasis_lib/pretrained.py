"""Build a model and its schedule from a config, and load trained weights for sampling.

``load_model`` accepts both a training checkpoint (``last.pt``/``best.pt``: the EMA weights
are used) and a shared safetensors file such as the shipped demo checkpoint
``checkpoints/demo_cpu64_ema.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, load_safetensors, load_state_strict
from .config import TrainConfig
from .device import get_device
from .schedule import NoiseSchedule
from .simple_unet import SimpleUNet
from .unet import UNet, UNetConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / "demo_cpu64_ema.safetensors"
REPO_URL = "https://github.com/oasis-ddpm/oasis-ddpm-tutorial"  # also in pyproject and notebooks


def shipped_checkpoint(name: str) -> Path:
    """The path of a weights file shipped in the repository's ``checkpoints/`` folder.

    The weights travel with the repository, not with a pip-installed package: a missing file
    raises :class:`CheckpointError` that says where it was looked for and how to get it.
    """
    path = REPO_ROOT / "checkpoints" / name
    if not path.is_file():
        raise CheckpointError(
            f"the shipped weights {path} are missing: they come with a clone of the repository "
            f"({REPO_URL}), not with a pip install of oasis_lib. Clone it and run "
            "`pip install -e .` there (the notebooks' setup cell does this on Colab), or pass "
            "the path of your own checkpoint")
    return path


def build_model(config: TrainConfig) -> nn.Module:
    """The network a config describes: our ``UNet`` preset, or the seed's ``SimpleUNet``."""
    if config.arch == "simple":
        return SimpleUNet()
    ucfg = UNetConfig.preset(config.preset, image_size=config.image_size,
                             **config.unet_overrides)
    return UNet(ucfg)


def build_schedule(config: TrainConfig, *, warn: bool = True) -> NoiseSchedule:
    d = config.diffusion
    return NoiseSchedule(d.schedule, d.timesteps, zero_terminal_snr=d.zero_terminal_snr,
                         warn=warn)


def load_model(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               use_ema: bool = True) -> tuple[nn.Module, NoiseSchedule, TrainConfig]:
    """Load weights for sampling; returns ``(model in eval mode, schedule, config)``.

    Args:
        path: a ``.pt`` training checkpoint or a ``.safetensors`` export; ``None`` means the
            shipped demo checkpoint.
        device: passed to :func:`oasis_lib.device.get_device`.
        use_ema: for ``.pt`` files, take the EMA weights (default) or the live ones.
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
    return model.to(dev).eval(), build_schedule(config, warn=False), config
