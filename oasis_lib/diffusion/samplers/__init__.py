"""The samplers: one class per sampler behind one protocol (diffusers' ``set_timesteps`` /
``step``), found by name in a registry. The map for adding one: docs/INTERFACES.md."""

from .base import DEFAULT_FAST_STEPS, SPACINGS, Sampler, draw_noise, sampling_timesteps
from .registry import (
    SAMPLER_REGISTRY,
    SAMPLERS,
    display_name,
    get_sampler,
    make_sampler,
    register_sampler,
    sampler_names,
    samplers_for,
)

__all__ = ["DEFAULT_FAST_STEPS", "SAMPLERS", "SAMPLER_REGISTRY", "SPACINGS", "Sampler",
           "display_name", "draw_noise", "get_sampler", "make_sampler", "register_sampler",
           "sampler_names", "samplers_for", "sampling_timesteps"]
