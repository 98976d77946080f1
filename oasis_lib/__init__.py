"""oasis_lib: denoising diffusion on 2D brain MRI slices of OASIS, for teaching.

The rooms (docs/INTERFACES.md has the map): ``data`` (the OASIS layout, datasets, the demo
build), ``diffusion`` (schedules, objectives, samplers and the pipeline that joins them to a
network), ``models`` (U-Nets and the factory that builds them from a config), ``training``
(the Trainer, EMA), ``evaluation`` (metrics, the tissue segmenter, reports), ``viz`` (every
figure and widget), ``cli`` (``python -m oasis_lib``). The names most used are here::

    from oasis_lib import OASISDataset, NoiseSchedule, UNet, SimpleUNet, load_model, train

Importing the package draws nothing: matplotlib is imported only by ``oasis_lib.viz``.
"""

from .config import DiffusionConfig, TrainConfig
from .data import OASISDataset, load_split, load_splits, resolve_data_root
from .device import get_device
from .diffusion.pipeline import DiffusionPipeline
from .diffusion.sampling import SAMPLERS, SampleResult, sample
from .diffusion.schedule import SCHEDULE_KINDS, NoiseSchedule
from .models.conditioning import Condition
from .models.factory import build_model, build_pipeline, build_schedule
from .models.simple_unet import SimpleUNet
from .models.unet import UNET_PRESETS, UNet, UNetConfig, count_parameters
from .paths import DEMO_CHECKPOINT
from .pretrained import load_model
from .training.trainer import Trainer, train

__version__ = "0.2.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = [
    "DEMO_CHECKPOINT",
    "SAMPLERS",
    "SCHEDULE_KINDS",
    "UNET_PRESETS",
    "Condition",
    "DiffusionConfig",
    "DiffusionPipeline",
    "NoiseSchedule",
    "OASISDataset",
    "SampleResult",
    "SimpleUNet",
    "TrainConfig",
    "Trainer",
    "UNet",
    "UNetConfig",
    "build_model",
    "build_pipeline",
    "build_schedule",
    "count_parameters",
    "get_device",
    "load_model",
    "load_split",
    "load_splits",
    "resolve_data_root",
    "sample",
    "train",
]
