"""When a training run stops, and its progress bar: one bar whose total is that limit.

A run stops at whichever limit it reaches first (:func:`limit_reached`): ``max_steps``
optimiser steps, the end of ``epochs`` (``epochs * steps_per_epoch`` steps), or ``max_minutes``
of time spent in optimiser steps (``budget_clock``: wall or CPU time). The step limit is
:func:`step_limit`. Whether the time budget ends the run sooner is not known in advance:
:func:`binding_limit` decides it from the pace so far, and the bar switches to minutes when
the budget binds. The other limit is shown in the bar's postfix, so a reader always sees both.

Example: the demo trains with ``max_steps=300`` and ``epochs=1000`` (one thread, a busy CPU);
its bar read ``train:  40%|████      | 120/300 [01:02<01:11,  2.50step/s, epoch 1, loss 0.1781]``
and a run that ``max_minutes`` ends counts budget minutes, in the form
``| 13.5/30 min [elapsed<remaining, step 405/3600, epoch 4/30, loss ...]``.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from ..run_config import RunConfig

#: A bar switches to the other limit only when that one is this much further along (relative),
#: so that two limits reached at nearly the same time do not make it flicker between them.
SWITCH_MARGIN = 0.05


def limit_reached(config: RunConfig, step: int, spent_s: float) -> bool:
    """The stopping rule within the epochs: ``max_steps`` steps done, or ``max_minutes`` of
    budget time (``spent_s`` seconds in optimiser steps, summed over resumes) spent."""
    return ((config.max_steps is not None and step >= config.max_steps)
            or (config.max_minutes is not None and spent_s >= 60 * config.max_minutes))


def step_limit(config: RunConfig, steps_per_epoch: int) -> tuple[int, str]:
    """The optimiser step at which the run ends unless its time budget ends it first, and the
    setting that sets it: ``(max_steps, "max_steps")`` or ``(epochs * steps_per_epoch,
    "epochs")``, whichever is smaller."""
    by_epochs = config.epochs * steps_per_epoch
    if config.max_steps is not None and config.max_steps <= by_epochs:
        return config.max_steps, "max_steps"
    return by_epochs, "epochs"


def binding_limit(step: int, steps: int, spent_s: float, budget_s: float | None, *,
                  current: str = "steps") -> str:
    """``"steps"`` or ``"minutes"``: the limit the run reaches first at its pace so far.

    At a steady pace both fractions done, ``step / steps`` and ``spent_s / budget_s``, grow in
    proportion to the time spent, so the one further along reaches 1 first. ``current`` is
    kept unless the other is ahead by more than :data:`SWITCH_MARGIN`; with no budget, or
    before any step, it is ``"steps"``.
    """
    if budget_s is None or step == 0 or steps == 0:
        return "steps"
    by = {"steps": step / steps, "minutes": spent_s / budget_s}
    other = "minutes" if current == "steps" else "steps"
    return other if by[other] > (1 + SWITCH_MARGIN) * by[current] else current


class TrainProgress:
    """The bar of :meth:`TrainingLoop.fit`; :meth:`update` after every optimiser step.

    Args:
        config: the run's config (``epochs``, ``max_steps``, ``max_minutes``, ``budget_clock``).
        steps_per_epoch (int): optimiser steps in one epoch.
        step (int): steps done already (a resumed run starts there).
        spent_s (float): budget seconds spent already (the checkpoint's ``train_seconds``).
        show (bool): draw the bar (False: every call is a no-op apart from the bookkeeping).
    """

    def __init__(self, config: RunConfig, steps_per_epoch: int, *, step: int = 0,
                 spent_s: float = 0.0, show: bool = True):
        self.steps, self.steps_set_by = step_limit(config, steps_per_epoch)
        self.epochs = config.epochs
        self.budget_s = None if config.max_minutes is None else 60.0 * config.max_minutes
        self.minute = "CPU-min" if config.budget_clock == "cpu" else "min"
        self.show = show
        self.bar = None
        self.mode = binding_limit(step, self.steps, spent_s, self.budget_s)
        self._open(step, spent_s)

    def _open(self, step: int, spent_s: float) -> None:
        if self.mode == "steps":
            self.bar = tqdm(total=self.steps, initial=step, unit="step", desc="train",
                            disable=not self.show, dynamic_ncols=True)
        else:
            fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n:.3g}/{total:g} " + self.minute
                   + " [{elapsed}<{remaining}{postfix}]")
            self.bar = tqdm(total=self.budget_s / 60, initial=self._minutes(spent_s),
                            desc="train", bar_format=fmt, disable=not self.show,
                            dynamic_ncols=True)

    def _minutes(self, spent_s: float) -> float:
        return min(spent_s, self.budget_s) / 60

    def postfix(self, step: int, spent_s: float, epoch: int, loss: float | None) -> str:
        """What the bar does not count: the other limit, the epoch (1-based) and the loss."""
        parts = []
        if self.mode == "minutes":
            parts.append(f"step {step}/{self.steps}")
        elif self.budget_s is not None:
            parts.append(f"time {spent_s / 60:.1f}/{self.budget_s / 60:g} {self.minute}")
        parts.append(f"epoch {epoch}" + (f"/{self.epochs}" if self.steps_set_by == "epochs"
                                         else ""))
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        return ", ".join(parts)

    def update(self, step: int, spent_s: float, epoch: int, loss: float | None = None) -> None:
        """The run has done ``step`` steps and spent ``spent_s`` budget seconds in ``epoch``
        (1-based); ``loss``: the last logged training loss."""
        mode = binding_limit(step, self.steps, spent_s, self.budget_s, current=self.mode)
        if mode != self.mode:  # the other limit now ends the run first: redraw in its unit
            self.bar.leave = False
            self.bar.close()
            self.mode = mode
            self._open(step, spent_s)
        self.bar.set_postfix_str(self.postfix(step, spent_s, epoch, loss), refresh=False)
        self.bar.update((step if mode == "steps" else self._minutes(spent_s)) - self.bar.n)

    def close(self) -> None:
        self.bar.close()
