"""The diffusion room: what holds no weights (noise schedules, training objectives, samplers)
and the pipeline that joins them to a network. Imports only ``torch`` and ``tqdm``."""

from .objectives import LOSS_TYPES, PREDICTION_TYPES, diffusion_loss
from .pipeline import DiffusionPipeline
from .sampling import SAMPLERS, SPACINGS, SampleResult, sample
from .schedule import SCHEDULE_KINDS, NoiseSchedule

__all__ = ["LOSS_TYPES", "PREDICTION_TYPES", "SAMPLERS", "SCHEDULE_KINDS", "SPACINGS",
           "DiffusionPipeline", "NoiseSchedule", "SampleResult", "diffusion_loss", "sample"]
