"""oasis_lib: denoising diffusion on 2D brain MRI slices of OASIS, for teaching.

The rooms (docs/INTERFACES.md has the map): ``data`` (the OASIS layout, datasets, the demo
build), ``diffusion`` (schedules, objectives, samplers and the pipeline that joins them to a
network), ``models`` (U-Nets and the factory that builds them from a config), ``training``
(the Trainer, EMA), ``evaluation`` (metrics, the tissue segmenter, reports), ``viz`` (every
figure and widget), ``cli`` (``python -m oasis_lib``). The names most used are here::

    from oasis_lib import OASISDataset, NoiseSchedule, UNet, SimpleUNet, load_model, train

Each is imported on first use (:mod:`oasis_lib._lazy`), so ``import oasis_lib.paths`` loads
only ``paths``. Importing the package draws nothing: matplotlib is imported only by
``oasis_lib.viz``.
"""

from ._lazy import lazy_exports

__version__ = "0.2.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "DEMO_CHECKPOINT": ".paths",
    "SAMPLERS": ".diffusion.sampling",
    "SCHEDULE_KINDS": ".diffusion.schedule",
    "UNET_PRESETS": ".models.unet",
    "Condition": ".models.conditioning",
    "DiffusionConfig": ".config",
    "DiffusionPipeline": ".diffusion.pipeline",
    "NoiseSchedule": ".diffusion.schedule",
    "OASISDataset": ".data.oasis",
    "SampleResult": ".diffusion.sampling",
    "SimpleUNet": ".models.simple_unet",
    "TrainConfig": ".config",
    "Trainer": ".training.trainer",
    "UNet": ".models.unet",
    "UNetConfig": ".models.unet",
    "build_model": ".models.factory",
    "build_pipeline": ".models.factory",
    "build_schedule": ".models.factory",
    "count_parameters": ".models.unet",
    "get_device": ".device",
    "load_model": ".pretrained",
    "load_split": ".data.oasis",
    "load_splits": ".data.oasis",
    "resolve_data_root": ".data.roots",
    "sample": ".diffusion.sampling",
    "train": ".training.trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
