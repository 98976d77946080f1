"""Experiment exercise of notebook 05: how many steps does a deterministic sampler need?

With eta = 0, DDIM and the multistep solvers all follow one path: the probability-flow ODE
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", sec. 4.3), started from the
same noise x_T. They differ only in how accurately they follow it. The experiment measures that
accuracy directly: from the same x_T, the mean absolute pixel distance between a sampler's image
after n steps and a reference end point, UniPC (Zhao et al. 2023) with many steps on the same
spacing. The reader changes the sampler or the spacing; :func:`check_more_steps_closer` checks
the direction of the effect (more steps -> closer), not a number.

DDIM is a first-order solver (Lu et al. 2022 show it is DPM-Solver-1), so doubling its steps
should roughly halve the distance; a second-order solver such as DPM-Solver++(2M) should do
better than that. :func:`steps_vs_reference` is the reference run (``exercises.reveal`` shows
its source).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ...diffusion.samplers import get_sampler, sampler_names

#: The reference end point: UniPC (order 3) with this many steps.
REFERENCE_SAMPLER, REFERENCE_STEPS = "unipc", 50


def steps_vs_reference(pipe, x_T: Tensor, *, sampler: str = "ddim",
                       steps: tuple[int, ...] = (5, 10, 20), spacing: str = "trailing",
                       reference_steps: int = REFERENCE_STEPS) -> dict[int, float]:
    """Mean |x_n - x_ref| over pixels for each n in ``steps`` (a deterministic sampler).

    Args:
        pipe (DiffusionPipeline): the model, its schedule and prediction type.
        x_T (Tensor): the starting noise [B, C, H, W], shared by every run.
        sampler (str, default ``"ddim"``): a deterministic sampler (eta = 0): ddim, dpm++2m,
            dpm++3m or unipc.
        steps (tuple of int): the step counts to try.
        spacing (str, default ``"trailing"``): the timestep spacing of every run, reference too
            (so all start at the same timestep).
        reference_steps (int, default 50): steps of the UniPC reference run.

    Returns:
        ``{n: distance}`` in the order of ``steps``.
    """
    if get_sampler(sampler).stochastic:
        deterministic = ", ".join(sampler_names(stochastic=False))
        raise ValueError(f"sampler {sampler!r} is stochastic; use one of {deterministic}")
    kw = {"x_T": x_T, "spacing": spacing, "progress": False}
    ref = pipe.sample(len(x_T), sampler=REFERENCE_SAMPLER, steps=reference_steps, **kw)
    return {int(n): float((pipe.sample(len(x_T), sampler=sampler, steps=int(n), **kw) - ref)
                          .abs().mean()) for n in steps}


@dataclass(frozen=True)
class DirectionCheck:
    """What :func:`check_more_steps_closer` found: ``passed`` and the printed ``message``."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed


def check_more_steps_closer(distances: dict[int, float], *, quiet: bool = False
                            ) -> DirectionCheck:
    """Pass when the distance falls every time the step count grows (at least two counts).

    Also prints, for each pair of consecutive counts, how many times closer the larger one is:
    about 2 per doubling for a first-order solver, about 4 for a second-order one.
    """
    pairs = sorted(distances.items())
    if len(pairs) < 2:
        result = DirectionCheck(False, "more steps: need at least two step counts")
    else:
        falls = all(d1 < d0 for (_, d0), (_, d1) in zip(pairs, pairs[1:], strict=False))
        ratios = ", ".join(f"{n0} -> {n1} steps: {d0 / d1:.1f}x closer" if d1 > 0 else
                           f"{n0} -> {n1} steps: exact" for (n0, d0), (n1, d1)
                           in zip(pairs, pairs[1:], strict=False))
        verdict = ("passed, every increase in steps lands closer to the reference"
                   if falls else "not yet: some increase in steps did not land closer")
        result = DirectionCheck(falls, f"more steps: {verdict} ({ratios})")
    if not quiet:
        print(result.message)
    return result


def distances_table(distances: dict[int, float]) -> str:
    """The distances as aligned text, one step count a line (rounded to 4 decimals)."""
    return "\n".join(f"{n:>4} steps: mean |x - x_ref| = {d:.4f}"
                     for n, d in sorted(distances.items()))
