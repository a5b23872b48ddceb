"""Progress reporting without a UI dependency.

The core calls a `Reporter`; the CLI passes a rich progress bar on a terminal and this plain
line logger otherwise (batch jobs, pipes). Everything goes to stderr: stdout is for data.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any


def format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


class Reporter:
    """Plain-text progress on stderr: one line every `interval` seconds or on each `log`."""

    def __init__(self, stream=None, interval_s: float = 10.0, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.quiet = quiet
        self._last = -math.inf  # never logged: the first update prints (monotonic() is uptime, maybe under interval_s)
        self._desc = ""
        self._total = 0
        self._first: tuple[float, int] | None = None  # (time, done) of this process's first update: a resumed run's rate

    def start(self, total: int, desc: str = "") -> None:
        self._total, self._desc, self._last, self._first = total, desc, -math.inf, None

    def update(self, done: int, metrics: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        if now - self._last >= self.interval_s or done >= self._total:
            self._last = now
            parts = (self._desc, f"{done}/{self._total}", format_metrics(metrics or {}), self._eta(now, done))
            self.log(" ".join(part for part in parts if part))

    def _eta(self, now: float, done: int) -> str:
        """'eta=…': the time to the end of the budget at this process's rate so far, evaluations included (a run that
        stops early, at a plateau, ends sooner); nothing before a rate exists or at the end."""
        t0, d0 = self._first or (now, done)
        if done >= self._total or done <= d0 or now <= t0:
            return ""
        return f"eta={duration((self._total - done) * (now - t0) / (done - d0))}"

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[lmlab {time.strftime('%H:%M:%S')}] {message}", file=self.stream, flush=True)

    def finish(self) -> None:
        pass


def duration(seconds: float) -> str:
    """A short wall time for progress lines: 45s, 12m, 3h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_lines(reporter: Reporter, what: str, every_s: float = 30.0) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback that logs "WHAT: done/total (pct%)" at most every `every_s` seconds,
    so a long evaluation is not silent (a WikiText-2 validation on 2 CPU cores takes minutes)."""
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s and done < total:
            last[0] = now
            reporter.log(f"{what}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)")
    return progress


class NullReporter(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
