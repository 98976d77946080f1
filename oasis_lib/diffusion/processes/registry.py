"""The noise-process registry: every process by name.

``NOISE_PROCESSES`` (the names) is what ``DiffusionConfig.noise_process`` accepts. Adding a
process: one file with its :class:`~oasis_lib.diffusion.processes.base.NoiseProcess` subclass
and one line in ``BUILTIN_PROCESSES`` below (or ``register_noise_process(MyProcess)`` from
outside the library).
"""

from __future__ import annotations

from .base import NoiseProcess
from .rectified_flow import RectifiedFlowProcess
from .vp import VPProcess

#: The library's processes, in the order of ``NOISE_PROCESSES``.
BUILTIN_PROCESSES: tuple[type[NoiseProcess], ...] = (VPProcess, RectifiedFlowProcess)

NOISE_PROCESS_REGISTRY: dict[str, type[NoiseProcess]] = {}


def register_noise_process(cls: type[NoiseProcess]) -> type[NoiseProcess]:
    """Add a :class:`NoiseProcess` subclass under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, NoiseProcess)):
        raise TypeError(f"register_noise_process takes a NoiseProcess subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    if NOISE_PROCESS_REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"noise process {cls.name!r} is already registered "
                         f"({NOISE_PROCESS_REGISTRY[cls.name].__name__})")
    NOISE_PROCESS_REGISTRY[cls.name] = cls
    return cls


for _cls in BUILTIN_PROCESSES:
    register_noise_process(_cls)

#: The names ``DiffusionConfig.noise_process`` accepts (the built-in processes).
NOISE_PROCESSES: tuple[str, ...] = tuple(NOISE_PROCESS_REGISTRY)
#: Every time grid of the built-in processes (``--spacing``'s choices; each process checks its
#: own ``spacings``).
ALL_SPACINGS: tuple[str, ...] = tuple(dict.fromkeys(
    s for cls in BUILTIN_PROCESSES for s in cls.spacings))
#: Every prediction type of the built-in processes (``--prediction``'s choices).
ALL_PREDICTION_TYPES: tuple[str, ...] = tuple(dict.fromkeys(
    p for cls in BUILTIN_PROCESSES for p in cls.prediction_types))


def get_noise_process(name: str) -> type[NoiseProcess]:
    """The process class called ``name``; ValueError listing the valid names otherwise."""
    if name not in NOISE_PROCESS_REGISTRY:
        raise ValueError(f"unknown noise process {name!r}; "
                         f"choose one of {tuple(NOISE_PROCESS_REGISTRY)}")
    return NOISE_PROCESS_REGISTRY[name]


def as_process(process_or_schedule) -> NoiseProcess:
    """A :class:`NoiseProcess` as is; a :class:`~oasis_lib.diffusion.schedule.NoiseSchedule`
    as its :class:`VPProcess` (what every function taking a schedule did before)."""
    if isinstance(process_or_schedule, NoiseProcess):
        return process_or_schedule
    return VPProcess(process_or_schedule)
