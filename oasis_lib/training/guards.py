"""Catch a diverging run before it is saved as if it were good.

A non-finite loss is the late symptom; a run at ``lr=1e9`` first shows losses of 1e20 that are
perfectly finite. :class:`DivergenceGuard` tests each training loss against a running median:

    diverged  <=>  loss_s > factor * median(loss_{s-window}, ..., loss_{s-1})
                   for ``patience`` consecutive steps s

(defaults: window 100, factor 10, patience 5). The median of a window ignores the occasional
spike of a batch drawn at hard timesteps, and ``patience`` consecutive excesses ignore a lone
bad batch; the per-batch loss of diffusion training at uniform t (Ho et al. 2020, Algorithm 1)
varies by a factor of ~3 between batches, far below 10. While a streak of excesses is open the
run is *suspect*: the trainer writes no checkpoint (so ``last.pt`` keeps the state before the
streak) and chooses no ``best.pt``; if the streak reaches ``patience`` the run stops with
:class:`DivergenceError` naming the last checkpoint that is truly good. A steady slow
drift upwards moves the median with it and is not caught: the test is for blow-ups.

:func:`check_finite_loss` runs on every micro-step's loss (one process) and on the step's loss
averaged over ranks (every rank stops together), before any weight changes.
:func:`check_finite_weights` runs before every save, so no checkpoint holds NaN/inf weights.
The guard's state (the loss window, the streak, the last good checkpoint) is saved with the
run, so a resumed run decides exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path

import torch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; training stopped without overwriting the last checkpoint."""


class DivergenceError(RuntimeError):
    """The training loss blew up; the message names the last good checkpoint."""


class BatchSizeError(ValueError):
    """The batch is larger than the training set."""


class NonFiniteWeightsError(RuntimeError):
    """Weights became NaN or inf; nothing was saved over the last good checkpoint."""


def non_finite_tensors(state: dict, prefix: str = "") -> list[str]:
    """Names of the floating tensors of a (nested) state dict that hold NaN or inf."""
    bad = []
    for key, value in state.items():
        if isinstance(value, dict):
            bad += non_finite_tensors(value, f"{prefix}{key}.")
        elif (isinstance(value, torch.Tensor) and value.is_floating_point()
              and not bool(torch.isfinite(value).all())):
            bad.append(f"{prefix}{key}")
    return bad


def check_finite_loss(loss: torch.Tensor, *, step: int, epoch: int, last_good: str) -> None:
    """Raise :class:`NonFiniteLossError` naming ``step`` (and ``epoch``) if ``loss`` is NaN or
    inf; ``last_good`` (:meth:`DivergenceGuard.good_text`) ends the message."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {step} (epoch "
                                 f"{epoch}); stopped without saving. {last_good}")


def check_finite_weights(modules: dict[str, torch.nn.Module], *, step: int,
                         last_good: str) -> None:
    """Raise :class:`NonFiniteWeightsError` if any module (e.g. model, EMA) has a non-finite
    parameter or buffer; ``last_good`` (:meth:`DivergenceGuard.good_text`) ends the message."""
    for name, module in modules.items():
        bad = non_finite_tensors(module.state_dict())
        if bad:
            shown = ", ".join(bad[:4]) + (f" ... ({len(bad)} in all)" if len(bad) > 4 else "")
            raise NonFiniteWeightsError(
                f"the {name} weights hold NaN/inf at step {step} ({shown}); nothing was saved. "
                f"{last_good}")


class DivergenceGuard:
    """The running-median divergence test of the module docstring."""

    def __init__(self, *, factor: float = 10.0, window: int = 100, patience: int = 5):
        if factor <= 1 or window < 1 or patience < 1:
            raise ValueError(f"need factor > 1, window >= 1, patience >= 1; got factor={factor}, "
                             f"window={window}, patience={patience}")
        self.factor, self.window, self.patience = factor, window, patience
        self.history: deque[float] = deque(maxlen=window)
        self.streak = 0
        self.reference: float | None = None  # the median the current streak is measured by
        self.last_good: tuple[str, int] | None = None  # (path, step) of the last safe save

    @property
    def suspect(self) -> bool:
        """A streak of excessive losses is open: do not save, do not choose best.pt."""
        return self.streak > 0

    def median(self) -> float | None:
        return statistics.median(self.history) if self.history else None

    def update(self, loss: float, *, step: int) -> None:
        """Record the loss of step ``step``; raise DivergenceError when the test fires."""
        median = self.median()
        if median is not None and (not math.isfinite(loss) or loss > self.factor * median):
            if self.streak == 0:
                self.reference = median
            self.streak += 1
            if self.streak >= self.patience:
                raise DivergenceError(
                    f"training diverged at step {step}: the loss was above {self.factor:g} x its "
                    f"running median ({self.reference:.4g}) for {self.streak} steps in a row "
                    f"(now {loss:.4g}); stopped without saving. {self.good_text()}")
            return  # an excess is not added to the window: the median stays honest
        self.streak, self.reference = 0, None
        self.history.append(float(loss))

    def plausible(self, val_loss: float) -> bool:
        """Whether a validation loss may choose best.pt (finite, not suspect, not blown up)."""
        median = self.median()
        return (math.isfinite(val_loss) and not self.suspect
                and (median is None or val_loss <= self.factor * median))

    def saved(self, path: str | Path, step: int) -> None:
        self.last_good = (str(path), int(step))

    def good_text(self) -> str:
        """Where to go back to, for the error messages."""
        if self.last_good is None:
            return "No good checkpoint of this run was saved yet: start again with a lower --lr"
        return (f"The last good checkpoint is {self.last_good[0]} (step {self.last_good[1]}): "
                "resume from it with a lower --lr, or start again")

    def state_dict(self) -> dict:
        return {"history": [float(v) for v in self.history], "streak": self.streak,
                "reference": self.reference, "last_good": list(self.last_good or [])}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque((float(v) for v in state.get("history", [])), maxlen=self.window)
        self.streak = int(state.get("streak", 0))
        self.reference = state.get("reference")
        good = state.get("last_good") or []
        self.last_good = (str(good[0]), int(good[1])) if good else None


def check_batches(train_set, batch_size: int) -> None:
    """An epoch drops its last partial batch: refuse a batch larger than the training set,
    which would train on nothing and save an untrained network."""
    n = len(train_set)
    if n < batch_size:
        raise BatchSizeError(f"batch_size {batch_size} is larger than the training set ({n} "
                         f"slices), so an epoch would hold no batch; use batch_size <= {n}")
