"""The sampler and step count a model file carries: ``load_model(FILE).sample(16)``
and ``sample --checkpoint FILE`` use them unless told otherwise.

A :class:`SamplingDefaults` is what a model's author knows best: the sampler and the number of
network calls the model was made for (a few-step model: e.g. ``flow-euler`` with 2 steps). It
is written into an export's metadata (``python -m oasis_lib export --default-sampler NAME
--default-steps K``, or ``pipe.save`` of a pipeline holding one) and read back by
:func:`oasis_lib.pretrained.load_model` as ``pipe.sampling_defaults``; both sides check it
against the model's noise process (:meth:`SamplingDefaults.check`). A file without it (every
file written before this record existed) samples as before: the process's ``default_sampler``
and that sampler's ``default_steps``.

The rule of :func:`resolve_sampling` (what :meth:`DiffusionPipeline.sample` and the CLI run):

* an explicit sampler or step count wins over the file;
* the file's **sampler** applies when no sampler is given;
* the file's **steps** apply only together with the file's sampler (given or not): a step count
  chosen for one sampler is never passed to another (``ddpm`` would refuse it, and a 2-step
  count tuned for a distilled flow means nothing to a multistep solver);
* the file's **spacing** (its time grid, e.g. ``"trailing"`` for a few-step flow) follows the
  same rule as its steps; without one, the process's ``default_spacing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .samplers.registry import get_sampler, samplers_for

__all__ = ["SOURCES", "SamplingChoice", "SamplingDefaults", "resolve_sampling"]

#: Where a resolved sampler or step count came from, as :func:`resolve_sampling` reports it.
SOURCES = ("given", "file", "process default", "sampler default")


@dataclass(frozen=True)
class SamplingDefaults:
    """A model file's default sampler and step count.

    Args:
        sampler (str): one of ``SAMPLERS`` that steps the model's noise process.
        steps (int or None): network calls (as ``pipe.sample(steps=)`` counts them); None: the
            sampler's own ``default_steps``. A sampler that ``needs_every_step`` (ddpm) takes
            None or T only.
        spacing (str or None): the time grid, one of the process's ``spacings`` (e.g.
            ``"trailing"``, evenly spaced, for a few-step flow); None: the process's default.
    """

    sampler: str
    steps: int | None = None
    spacing: str | None = None

    def __post_init__(self) -> None:
        get_sampler(self.sampler)  # ValueError: unknown sampler, with the valid names
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(
                self.steps, int) or self.steps < 1):
            raise ValueError(f"default steps must be a positive integer or None, got "
                             f"{self.steps!r}")

    def check(self, process: Any) -> SamplingDefaults:
        """Itself, if its sampler steps ``process`` (a NoiseProcess) and takes its step count
        there (``Sampler.accepts_steps``; at most T for a discrete-time process); else
        ValueError naming the samplers of the process, or the step counts the sampler takes."""
        cls = get_sampler(self.sampler)
        if process.name not in cls.processes:
            raise ValueError(f"default sampler {self.sampler!r} steps the "
                             f"{' or '.join(cls.processes)} process, not {process.name!r}; "
                             f"choose one of {samplers_for(process.name)}")
        T = int(process.T)
        if not cls.accepts_steps(self.steps, T):
            raise ValueError(f"default sampler {self.sampler!r} runs all T={T} steps; default "
                             f"steps {self.steps} would be refused: give None (or {T})")
        if process.discrete_time and self.steps is not None and self.steps > T:
            raise ValueError(f"default steps {self.steps} is more than the model's T={T} "
                             "timesteps")
        if self.spacing is not None and self.spacing not in process.spacings:
            raise ValueError(f"default spacing {self.spacing!r} is not one of the "
                             f"{process.name} process's spacings {process.spacings}")
        return self

    def to_dict(self) -> dict:
        """What an export's metadata holds (``{"sampler": ..., "steps": ...}``, and
        ``"spacing"`` when set: files without one read back as before)."""
        d = {"sampler": self.sampler, "steps": self.steps}
        if self.spacing is not None:
            d["spacing"] = self.spacing
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SamplingDefaults:
        """The inverse of :meth:`to_dict`; a key it does not know is refused by name."""
        if not isinstance(d, dict) or "sampler" not in d:
            raise ValueError(f"sampling defaults must be a dict with a 'sampler', got {d!r}")
        unknown = sorted(set(d) - {"sampler", "steps", "spacing"})
        if unknown:
            raise ValueError(f"unknown sampling default {unknown[0]!r}; choose one of "
                             "('sampler', 'steps', 'spacing')")
        spacing = d.get("spacing")
        if spacing is not None and not isinstance(spacing, str):
            raise ValueError(f"default spacing must be a string or None, got {spacing!r}")
        return cls(sampler=d["sampler"], steps=d.get("steps"), spacing=spacing)


@dataclass(frozen=True)
class SamplingChoice:
    """What a call samples with: ``sampler``, ``steps`` (None: the sampler's default, passed on
    as None so a file without defaults runs exactly as before), ``spacing`` (None: the
    process's default), and where each came from (``sampler_from``: given, file or process
    default; ``steps_from``: given, file or sampler default; ``spacing_from``: given, file or
    process default)."""

    sampler: str
    steps: int | None
    sampler_from: str
    steps_from: str
    spacing: str | None = None
    spacing_from: str = "process default"

    def step_count(self, process: Any) -> int:
        """The network calls this choice runs on ``process`` (the sampler's default filled in)."""
        return get_sampler(self.sampler).resolve_steps(self.steps, int(process.T))

    def describe(self, process: Any) -> str:
        """One line for a person, e.g. ``sampler flow-euler (the file's default), 2 steps (the
        file's default)``."""
        words = {"given": "given", "file": "the file's default",
                 "process default": f"the {process.name} process's default",
                 "sampler default": "the sampler's default"}
        grid = "" if self.spacing is None else (
            f", {self.spacing} spacing ({words[self.spacing_from]})")
        return (f"sampler {self.sampler} ({words[self.sampler_from]}), "
                f"{self.step_count(process)} steps ({words[self.steps_from]}){grid}")


def resolve_sampling(defaults: SamplingDefaults | None, process: Any, sampler: str | None = None,
                     steps: int | None = None, spacing: str | None = None) -> SamplingChoice:
    """The sampler, steps and spacing of one call (the module docstring's rule): explicit
    values win; then the file's ``defaults`` (its steps and spacing only with its own sampler);
    then the process's ``default_sampler``, the sampler's ``default_steps`` and (spacing None)
    the process's ``default_spacing``."""
    if sampler is not None:
        sampler_from = "given"
    elif defaults is not None:
        sampler, sampler_from = defaults.sampler, "file"
    else:
        sampler, sampler_from = process.default_sampler, "process default"
    own = defaults is not None and sampler == defaults.sampler  # the file's steps and grid apply
    if steps is not None:
        steps_from = "given"
    elif own and defaults.steps is not None:
        steps, steps_from = defaults.steps, "file"
    else:
        steps_from = "sampler default"
    if spacing is not None:
        spacing_from = "given"
    elif own and defaults.spacing is not None:
        spacing, spacing_from = defaults.spacing, "file"
    else:
        spacing_from = "process default"
    return SamplingChoice(sampler, steps, sampler_from, steps_from, spacing, spacing_from)
