"""Graceful stop on SIGTERM / SIGUSR1 (SLURM preemption): the loop saves a checkpoint and exits 0."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by SIGTERM/SIGUSR1; the training loop polls `requested` between steps. SIGINT (Ctrl-C) is not
    caught: it interrupts at once (exit 130) and the last checkpoint written stands."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}

    def _handler(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def install(self) -> "StopFlag":
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
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
