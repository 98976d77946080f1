"""The diffusion room: what holds no weights (noise schedules and processes, training
objectives, samplers) and the pipeline that joins them to a network. Imports only ``torch``
and ``tqdm``."""

from .._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "LOSS_TYPES": ".objectives",
    "PREDICTION_TYPES": ".objectives",
    "diffusion_loss": ".objectives",
    "DiffusionPipeline": ".pipeline",
    "NOISE_PROCESSES": ".processes.registry",
    "NoiseProcess": ".processes.base",
    "VPProcess": ".processes.vp",
    "get_noise_process": ".processes.registry",
    "SAMPLERS": ".sampling",
    "SPACINGS": ".sampling",
    "SampleResult": ".sampling",
    "sample": ".sampling",
    "SCHEDULE_KINDS": ".schedule",
    "NoiseSchedule": ".schedule",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
