"""The one training loop every trainer runs (issue #13): updates, evaluation and checkpoint cadence, and the stop.

A trainer supplies its pieces as callables and keeps its own model, batches and step:

    loop = TrainLoop(update=..., measure=..., record=..., save=..., finished=..., eval_due=..., save_due=...,
                     step=lambda: trainer.step, device=device, log=reporter.log, last=run.last)
    with loop.stop_flag(run, reporter):
        stopped_by = loop.run()

- `update()` makes one optimizer update (and logs its own metrics row); it returns False when a stop cut it short
  (GEBM's long energy phase), so no evaluation or save is due for it.
- `measure()` evaluates and may raise StopRequested (it polls `loop.stop`); `record(result)` logs and saves it.
  Between the two `loop.eval_pending` is true: a checkpoint written by a stop inside `measure` says so, and the
  rerun measures that update first, so a stopped-and-resumed run logs and ends as an uninterrupted one.
- Every process of a data-parallel job leaves the loop after the same update (`distributed.agreed_signal`), rank 0
  having saved `last.pt`; SIGTERM/SIGUSR1/SIGINT all stop this way (core/signals.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from lmlab.core import distributed
from lmlab.core.signals import StopFlag, StopRequested


class TrainLoop:
    def __init__(self, *, update: Callable[[], bool | None], measure: Callable[[], Any], record: Callable[[Any], None],
                 save: Callable[[bool], None], finished: Callable[[], bool], eval_due: Callable[[], bool],
                 save_due: Callable[[], bool], step: Callable[[], int], device: torch.device,
                 log: Callable[[str], None], last: Any):
        self.update, self.measure, self.record, self.save = update, measure, record, save
        self.finished, self.eval_due, self.save_due, self.step = finished, eval_due, save_due, step
        self.device, self.log, self.last = device, log, last
        self.eval_pending = False  # a stop cut this update's evaluation short (saved in checkpoints by the trainer)
        self.stop: StopFlag | None = None

    @contextlib.contextmanager
    def stop_flag(self, run, reporter) -> Iterator[StopFlag]:
        """The signal handlers for the loop's lifetime; the progress display closed and the run dir's lock released
        however the loop ends."""
        self.stop = StopFlag().install()
        try:
            yield self.stop
        finally:
            self.stop.uninstall(absorb_late=self.stop.requested and torch.distributed.is_initialized())
            reporter.finish()
            run.release()

    def stop_requested(self) -> bool:
        """The same answer on every rank (a collective under torchrun), and the same signal: a rank told of the stop by
        another logs and reports that rank's signal (SIGUSR1 from SLURM), not an unnamed one."""
        if self.stop is None:
            return distributed.agreed_signal(0, self.device) > 0
        agreed = distributed.agreed_signal(self.stop.signum, self.device)  # the flag read once, before the collective:
        self.stop.agree(agreed)  # a signal arriving after it is met at the next poll, by every rank alike
        return agreed > 0

    def poll_in_validation(self, chunk: int) -> None:
        """Called once per validation chunk (counted from 0): raise StopRequested when a stop was asked, so a SLURM
        warning (--signal=USR1@90) is met even when validation takes minutes. Every rank scores the same chunks, so
        ranks poll in step; under torchrun only each 16th chunk polls, to keep the collectives few."""
        if self.stop is not None and (not torch.distributed.is_initialized() or chunk % 16 == 15) and self.stop_requested():
            raise StopRequested

    def evaluate(self) -> bool:
        """Measure, then log and save; False when a stop cut the measurement short (nothing logged)."""
        self.eval_pending = True
        try:
            result = self.measure()
        except StopRequested:
            return False
        self.eval_pending = False
        self.record(result)
        return True

    def _stopped(self) -> str:
        return (self.stop.signal_name if self.stop is not None else None) or "signal"

    def run(self) -> str | None:
        """Train until `finished()` or a stop; returns the stopping signal's name, or None."""
        if self.eval_pending and not self.evaluate():  # stopped inside this update's evaluation last time
            return self._stopped()  # stopped again: last.pt already holds this state
        while not self.finished():
            completed = self.update() is not False
            if completed and self.eval_due():
                self.evaluate()
            elif completed and self.save_due():
                self.save(False)
            if self.stop_requested():  # every rank stops after the same update
                name = self._stopped()
                self.save(False)
                self.log(f"{name}: saved {self.last} at update {self.step()}; rerun the same command to resume")
                return name
        return None
