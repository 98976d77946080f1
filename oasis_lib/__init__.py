"""oasis_lib: denoising diffusion (DDPM) on 2D brain MRI slices of OASIS, for teaching.

The public names, each documented with the equation it implements::

    from oasis_lib import OASISDataset, NoiseSchedule, UNet, SimpleUNet, sample, train
"""

from .config import DiffusionConfig, TrainConfig
from .data import OASISDataset, load_split, load_splits, resolve_data_root
from .device import get_device
from .pretrained import DEMO_CHECKPOINT, build_model, build_schedule, load_model
from .sampling import SAMPLERS, SampleResult, sample
from .schedule import SCHEDULE_KINDS, NoiseSchedule
from .simple_unet import SimpleUNet
from .training import Trainer, train
from .unet import UNET_PRESETS, UNet, UNetConfig

__version__ = "0.1.0"

__all__ = [
    "DEMO_CHECKPOINT",
    "SAMPLERS",
    "SCHEDULE_KINDS",
    "UNET_PRESETS",
    "DiffusionConfig",
    "NoiseSchedule",
    "OASISDataset",
    "SampleResult",
    "SimpleUNet",
    "TrainConfig",
    "Trainer",
    "UNet",
    "UNetConfig",
    "build_model",
    "build_schedule",
    "get_device",
    "load_model",
    "load_split",
    "load_splits",
    "resolve_data_root",
    "sample",
    "train",
]
