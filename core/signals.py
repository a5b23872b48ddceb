"""Graceful stop on SIGTERM / SIGUSR1 (SLURM preemption) and Ctrl-C: the loop saves a checkpoint and exits."""

from __future__ import annotations

import signal
import threading


class StopRequested(Exception):
    """Raised inside a long step (an evaluation) that polls the stop flag, to reach the save sooner."""


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT; the training loop polls `requested` between updates (and evaluations poll it
    between batches), then saves a checkpoint. SIGTERM/SIGUSR1 then exit 0 for a SLURM requeue; a first Ctrl-C
    (SIGINT) saves the same way and exits 130; a second Ctrl-C interrupts at once (KeyboardInterrupt), and the
    last checkpoint written stands."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without waiting for the save
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    @property
    def signum(self) -> int:
        """The number of the signal received, 0 when none was."""
        return int(signal.Signals[self.signal_name]) if self.requested and self.signal_name else 0

    def agree(self, signum: int) -> None:
        """Take the signal another rank received (`distributed.agreed_signal`) when this one has none of its own."""
        if signum and not self.signal_name:
            self.requested, self.signal_name = True, signal.Signals(signum).name

    def install(self) -> "StopFlag":
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None or (sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN):
                continue  # a SIGINT ignored at start (a background job of a script) stays ignored, as make keeps it
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()
