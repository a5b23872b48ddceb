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
        self.signal_name = signal.Signals(signum).name  # the name first: `signum` reads it alone
        self.requested = True

    @property
    def signum(self) -> int:
        """The number of the signal received, 0 when none was (one read: the handler may run at any moment)."""
        name = self.signal_name
        return int(signal.Signals[name]) if name else 0

    def agree(self, signum: int) -> None:
        """Take the signal another rank received (`distributed.agreed_signal`) when this one has none of its own."""
        if signum and not self.signal_name:
            self.signal_name = signal.Signals(signum).name
            self.requested = True

    def install(self) -> "StopFlag":
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None or (sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN):
                continue  # a SIGINT ignored at start (a background job of a script) stays ignored, as make keeps it
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def uninstall(self, absorb_late: bool = False) -> None:
        """Restore the previous handlers. `absorb_late`: ignore SIGTERM/SIGUSR1 from now on instead, for a rank that
        has stopped and still waits for rank 0's checkpoint (torchrun's agent forwards the signal it received after
        the rank had already stopped on another rank's copy; the default action would kill the rank, its agent would
        exit non-zero and `srun --kill-on-bad-exit` would kill rank 0 mid-write)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if absorb_late and sig != signal.SIGINT else handler)
        self._previous.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()
