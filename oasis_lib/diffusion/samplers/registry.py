"""The sampler registry: every sampler by name, and the questions asked of it.

``SAMPLER_REGISTRY`` maps a name to its :class:`~oasis_lib.diffusion.samplers.base.Sampler`
class; ``SAMPLERS`` (the names, in registry order) is what ``sample(sampler=...)``, the CLI's
``--sampler`` choices and the config accept. Adding a sampler: one file with its class, one
line in ``BUILTIN_SAMPLERS`` below (or ``register_sampler(MySampler)`` from outside the library).
"""

from __future__ import annotations

from typing import Any

from ..processes.registry import as_process
from .base import Sampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpmpp_2m import DPMSolverPP2MSampler
from .euler import EulerODESampler
from .flow import FlowEulerSampler, FlowHeunSampler
from .multistep import DPMSolverPP2MSDESampler, DPMSolverPP3MSampler, UniPCSampler

#: The library's samplers, in the order of ``SAMPLERS`` (and of ``--sampler``'s choices).
BUILTIN_SAMPLERS: tuple[type[Sampler], ...] = (
    DDPMSampler,
    DDIMSampler,
    DPMSolverPP2MSampler,
    DPMSolverPP2MSDESampler,
    DPMSolverPP3MSampler,
    UniPCSampler,
    EulerODESampler,
    FlowEulerSampler,
    FlowHeunSampler,
)

SAMPLER_REGISTRY: dict[str, type[Sampler]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Add a :class:`Sampler` subclass under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"register_sampler takes a Sampler subclass, got {cls!r}")
    if not cls.name or not cls.display_name:
        raise ValueError(f"{cls.__name__} needs a name and a display_name")
    if SAMPLER_REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"sampler {cls.name!r} is already registered "
                         f"({SAMPLER_REGISTRY[cls.name].__name__})")
    SAMPLER_REGISTRY[cls.name] = cls
    return cls


for _cls in BUILTIN_SAMPLERS:
    register_sampler(_cls)

#: The names ``sample(sampler=...)`` accepts (the built-in samplers, in registry order).
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_REGISTRY)


def get_sampler(name: str) -> type[Sampler]:
    """The sampler class called ``name``; ValueError listing the valid names otherwise."""
    if name not in SAMPLER_REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; choose one of {tuple(SAMPLER_REGISTRY)}")
    return SAMPLER_REGISTRY[name]


def sampler_names(**capabilities: Any) -> tuple[str, ...]:
    """Names of the samplers whose class attributes equal ``capabilities``, in registry order,
    e.g. ``sampler_names(uses_eta=True) == ("ddim",)``."""
    for key in capabilities:
        if not hasattr(Sampler, key):
            raise ValueError(f"unknown sampler capability {key!r}")
    return tuple(name for name, cls in SAMPLER_REGISTRY.items()
                 if all(getattr(cls, k) == v for k, v in capabilities.items()))


def display_name(name: str) -> str:
    """The sampler's name in figures and tables, e.g. ``"dpm++2m"`` -> ``"DPM-Solver++(2M)"``."""
    return get_sampler(name).display_name


def samplers_for(process_name: str) -> tuple[str, ...]:
    """The samplers that step the noise process called ``process_name``, in registry order."""
    return tuple(n for n, cls in SAMPLER_REGISTRY.items() if process_name in cls.processes)


def make_sampler(name: str, process, **options: Any) -> Sampler:
    """The sampler ``name`` built for ``process`` (a NoiseProcess, or a NoiseSchedule: its VP
    process) with ``options`` (those of :class:`~oasis_lib.diffusion.samplers.base.Sampler`);
    a sampler that does not step the process is refused with the ones that do; eta != 0 is
    refused, with the samplers that read it, unless the sampler ``uses_eta``."""
    cls = get_sampler(name)
    process = as_process(process)
    if process.name not in cls.processes:
        raise ValueError(f"sampler {name!r} steps the {' or '.join(cls.processes)} process, not "
                         f"{process.name!r}; choose one of {samplers_for(process.name)}")
    eta = options.get("eta", 0.0)
    if 0.0 < eta <= 1.0 and not cls.uses_eta:  # out of [0, 1]: the constructor says so
        readers = " or ".join(f"sampler={n!r}" for n in sampler_names(uses_eta=True))
        raise ValueError(f"eta only applies to {readers}, not {name!r}")
    return cls.build(process, **options)
