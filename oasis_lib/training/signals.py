"""Stop a run cleanly on SIGTERM and SIGINT: save at the next step boundary, then exit.

``timeout``, Slurm (at the end of a job's time) and ``docker stop`` send SIGTERM; Ctrl-C sends
SIGINT. Without a handler SIGTERM kills the process on the spot and the work since the last
checkpoint is lost. :class:`GracefulStop` records the signal; the trainer polls
:attr:`GracefulStop.requested` after each optimiser step, saves ``last.pt`` and raises
:class:`TrainingStopped`, whose message says what was saved where and how to continue. A
second signal while the first is being honoured restores the default behaviour (a second Ctrl-C
raises KeyboardInterrupt at once, a second SIGTERM terminates), so a stuck run can still be
stopped. Handlers can only be installed from the main thread; elsewhere this is a no-op.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):  # noqa: N818 (a requested stop, not an error)
    """A run stopped on a signal after saving; ``signum`` is the signal's number."""

    def __init__(self, message: str, *, signum: int):
        super().__init__(message)
        self.signum = int(signum)


class GracefulStop:
    """Context manager: while active, SIGTERM/SIGINT set :attr:`requested` instead of killing."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    def _handle(self, signum, _frame) -> None:
        if self.requested is not None:  # the second signal: behave as if we were not here
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.requested = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()


def stopped(trainer, signum: int) -> TrainingStopped:
    """Save ``trainer`` at this step boundary; the exception that says where, to raise."""
    path = trainer.save()
    name = signal.Signals(signum).name
    guard = getattr(trainer, "guard", None)
    if guard is not None and guard.suspect:
        kept = (f"kept {guard.last_good[0]} of step {guard.last_good[1]}" if guard.last_good
                else "saved nothing") + f" (the loss was suspect at step {trainer.step})"
    else:
        kept = f"saved step {trainer.step} to {path}"
    command = getattr(trainer, "cli_command", "train")  # train-autoencoder for autoencoders
    return TrainingStopped(f"{name} received: {kept}; continue with `python -m oasis_lib "
                           f"{command} --out {trainer.out} --resume` (or "
                           f"{type(trainer).__name__}(config, resume=True))", signum=signum)
