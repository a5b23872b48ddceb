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

    def start(self, total: int, desc: str = "") -> None:
        self._total, self._desc, self._last = total, desc, -math.inf

    def update(self, done: int, metrics: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s or done >= self._total:
            self._last = now
            self.log(f"{self._desc} {done}/{self._total} {format_metrics(metrics or {})}".strip())

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[lmlab {time.strftime('%H:%M:%S')}] {message}", file=self.stream, flush=True)

    def finish(self) -> None:
        pass


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
