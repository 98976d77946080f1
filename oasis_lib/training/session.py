"""The edges of one ``TrainingLoop.fit``: what surrounds the steps and what runs between two.

:func:`fit_session` opens a :class:`FitSession` around the epochs of ``fit``:

* before the first step: the run folder's lock taken again (rank 0; an earlier ``fit`` may have
  released it, ``run_dir.RunLock``), the SIGTERM/SIGINT handlers (``signals.GracefulStop``) and
  the one progress bar (``progress.TrainProgress``);
* around each step, :meth:`FitSession.timed`: the budget clock (``train_seconds``: the time
  spent in optimiser steps, wall or CPU as ``budget_clock`` says; ``max_minutes`` counts it);
* between steps, :meth:`FitSession.after_step`: the metrics line every ``log_every`` steps
  (loss, lr, images/s), the bar, ``last.pt`` every ``checkpoint_every`` steps; then
  :meth:`FitSession.limit_reached` (``progress.limit_reached``; rank 0's clock decides for all)
  and :meth:`FitSession.stop_if_asked` (a signal on any rank: every rank saves at the same step
  and raises ``TrainingStopped``);
* at the end: the bar closed, the handlers restored, the lock released; a second Ctrl-C in
  the middle of a step becomes ``TrainingStopped`` without a save (the state may be mid-step).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator

from .distributed import all_reduce_mean, broadcast_object
from .progress import TrainProgress, limit_reached
from .signals import GracefulStop, TrainingStopped, stopped


class FitSession:
    """The state of one ``fit`` call around its steps (see the module docstring)."""

    def __init__(self, loop, stop: GracefulStop):
        c = loop.cfg
        self.loop, self.stop = loop, stop
        self.t0 = self.t_log = time.perf_counter()
        self.images = 0
        self.progress = TrainProgress(c, len(loop.train_set) // c.batch_size, step=loop.step,
                                      spent_s=loop.train_seconds,
                                      show=c.progress and loop.dist.is_main)

    def timed(self, step: Callable, inputs) -> float:
        """``step(inputs)``, its time added to the loop's budget ``train_seconds``."""
        loop = self.loop
        start = loop._clock()
        loss = step(inputs)
        loop.train_seconds += loop._clock() - start
        return loss

    def after_step(self, loss: float, epoch: int) -> None:
        """Count the images, log every ``log_every`` steps, move the bar, save every
        ``checkpoint_every`` steps (``epoch``: 0-based; people read it from 1)."""
        loop, c = self.loop, self.loop.cfg
        self.images += c.batch_size
        if loop.step % c.log_every == 0:
            now = time.perf_counter()
            rate = c.log_every * c.batch_size / max(now - self.t_log, 1e-9)
            self.t_log = now
            loop._log({"step": loop.step, "epoch": epoch + 1, "loss": loss,
                       "lr": loop.sched.get_last_lr()[0], "images_per_s": round(rate, 2)})
        self.progress.update(loop.step, loop.train_seconds, epoch + 1, loss)
        if loop.step % c.checkpoint_every == 0:
            loop.save()

    def limit_reached(self) -> bool:
        """The stopping rule (``progress.limit_reached``; the epochs end the loop). Under
        torchrun with a time budget, rank 0's clock decides for every rank."""
        loop = self.loop
        done = limit_reached(loop.cfg, loop.step, loop.train_seconds)
        if loop.cfg.max_minutes is not None and loop.dist.enabled:
            done = bool(broadcast_object(done, loop.dist))
        return done

    def stop_if_asked(self) -> None:
        """A SIGTERM/SIGINT received (on any rank: every rank stops at the same step, since
        the save is collective): save and raise ``TrainingStopped``."""
        loop, asked = self.loop, self.stop.requested
        if loop.dist.enabled:
            anyone = all_reduce_mean(float(bool(asked)), loop.dist) > 0
            asked = (asked or signal.SIGTERM) if anyone else None
        if asked:
            raise stopped(loop, asked)

    def images_per_second(self) -> float:
        seconds = time.perf_counter() - self.t0
        return self.images / seconds if seconds > 0 else 0.0


@contextlib.contextmanager
def fit_session(loop) -> Iterator[FitSession]:
    """Lock, signal handlers and bar around ``loop``'s epochs (module docstring)."""
    if loop.dist.is_main:
        loop.lock.acquire()  # again, if an earlier fit() released it
    handlers = contextlib.ExitStack()
    session = FitSession(loop, handlers.enter_context(GracefulStop()))
    try:
        yield session
    except KeyboardInterrupt:  # a second Ctrl-C: the state may be mid-step, do not save
        raise TrainingStopped(f"interrupted twice during step {loop.step + 1}; nothing "
                              f"saved since: {loop.guard.good_text()}", signum=2) from None
    finally:
        session.progress.close()
        handlers.close()
        loop.lock.release()
