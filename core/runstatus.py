"""Where each training run stands, read from its run dir alone (`lmlab runs`).

A run dir (core/rundir.py) holds config.json and metrics.jsonl; while a process trains into it, `.lmlab.lock`
names that process (core/runlock.py); a run that ends cleanly leaves summary.json, the summary its command
printed. The lock is never taken here: a status query must not make a starting run refuse its own run dir.

States:
  training  the lock's holder is alive (or it is on another host, which cannot be checked from here)
  killed    the lock file is left by a process on this host that is gone: it died without its clean exit
            (SIGKILL, out of memory); rerunning its command resumes from checkpoints/last.pt
  stopped   ended by a signal (SIGTERM/SIGUSR1 on a cluster, Ctrl-C) after saving: rerun its command to go on
  finished  ended by its schedule (its summary says so, or the metrics reach the configured length)
  ended     not running, with no summary.json to say why: an error stopped it (its log says which), or an lmlab
            from before summary.json wrote it
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lmlab.core.errors import LmlabError
from lmlab.core.runlock import LOCK_NAME, pid_alive

SUMMARY_NAME = "summary.json"  # written by the training commands (cli/common.finish_run), removed by RunDir.prepare


@dataclass
class RunStatus:
    run: str
    state: str
    step: int | None = None
    total_steps: int | None = None  # the configured length in updates (estimated from the epochs seen: total_is_estimate)
    total_is_estimate: bool = False
    epoch: int | None = None
    best_valid_ppl: float | None = None
    last_valid_ppl: float | None = None
    lr: float | None = None
    updated_s_ago: float | None = None  # seconds since metrics.jsonl last changed
    holder: str | None = None  # training or killed: the process, "pid N on HOST"
    since: str | None = None  # when that process took the run dir
    stopped_by: str | None = None  # stopped: the signal

    @property
    def progress(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return min(self.step / self.total_steps, 1.0)

    def to_json(self) -> dict:
        return {**asdict(self), "progress": self.progress}


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Each path that is a run dir (it holds config.json), or the run dirs found below it, sorted by path."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise LmlabError(f"{path} is not a directory (give run dirs or folders holding them)")
        if (path / "config.json").is_file():
            found.append(path)
            continue
        below = sorted(p.parent for p in path.rglob("config.json") if _is_run_dir(p.parent))
        found.extend(p for p in below if not any(q in p.parents for q in below))  # not a run's own subfolders
    return found


def _is_run_dir(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir()


def run_status(path: Path, now: float | None = None) -> RunStatus:
    now = time.time() if now is None else now
    config = _read_json(path / "config.json") or {}
    rows = _read_rows(path / "metrics.jsonl")
    status = RunStatus(run=str(path), state="ended")
    last = {}
    for r in rows:  # the latest value of each: steps only grow (a resume drops the lines after its checkpoint)
        last.update({k: r[k] for k in ("step", "epoch", "lr") if isinstance(r.get(k), (int, float))})
    status.step, status.epoch, status.lr = last.get("step"), last.get("epoch"), last.get("lr")
    valid = [r["valid_ppl"] for r in rows if isinstance(r.get("valid_ppl"), (int, float))]
    if valid:
        status.best_valid_ppl, status.last_valid_ppl = min(valid), valid[-1]
    status.total_steps, status.total_is_estimate = _total_steps(config, rows)
    if (path / "metrics.jsonl").exists():
        status.updated_s_ago = max(0.0, now - (path / "metrics.jsonl").stat().st_mtime)
    status.state = _state(path, status)
    return status


def _state(path: Path, status: RunStatus) -> str:
    holder = _read_json(path / LOCK_NAME)
    if holder is not None:
        status.holder, status.since = f"pid {holder.get('pid')} on {holder.get('host')}", holder.get("since")
        return "training" if _holder_alive(holder) else "killed"
    summary = _read_json(path / SUMMARY_NAME)
    if summary is not None:
        stopped = summary.get("stopped_by") or summary.get("stopped")
        if stopped:
            status.stopped_by = stopped if isinstance(stopped, str) else "a signal"
            return "stopped"
        return "finished"
    if status.step is not None and status.total_steps and not status.total_is_estimate and status.step >= status.total_steps:
        return "finished"
    return "ended"


def _holder_alive(holder: dict) -> bool:
    """The lock's holder still runs: on this host, its pid is alive and runs lmlab; elsewhere, taken to be."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    if not pid_alive(pid):
        return False
    try:  # a pid reused by another program since the holder died
        return b"lmlab" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (not Linux): the live pid decides


def _total_steps(config: dict, rows: list[dict]) -> tuple[int | None, bool]:
    """The run's length in updates and whether it is an estimate: schedule.max_steps, or schedule.epochs x the
    updates of an epoch as the metrics tell them. train-lm's language models train schedule.epochs alone when it is
    set; translation stops at whichever bound comes first."""
    schedule = config.get("schedule") or {}
    max_steps, epochs = schedule.get("max_steps") or None, schedule.get("epochs") or 0
    if not epochs:
        return max_steps, False
    language_model = "objective" in config  # train-lm's TrainConfig
    per_epoch, exact = (_lm_updates_per_epoch if language_model else _fixed_updates_per_epoch)(rows)
    if language_model and (config.get("data") or {}).get("variable_bptt"):
        exact = False  # windows of random length: epochs differ in updates
    by_epochs = round(epochs * per_epoch) if per_epoch else None
    bounds = [b for b in (by_epochs, None if language_model else max_steps) if b]
    if not bounds:
        return None, False
    total = min(bounds)
    return total, total == by_epochs and not exact


def _lm_updates_per_epoch(rows: list[dict]) -> tuple[float | None, bool]:
    """A language model's rows count the epochs done: step / epoch where that count last grew (fixed windows make
    every epoch the same length)."""
    last_epoch, at = None, None
    for r in rows:
        epoch, step = r.get("epoch"), r.get("step")
        if isinstance(epoch, int) and isinstance(step, int) and epoch > 0 and epoch != last_epoch:
            at = step / epoch
        if isinstance(epoch, int):
            last_epoch = epoch
    return at, at is not None


def _fixed_updates_per_epoch(rows: list[dict]) -> tuple[int | None, bool]:
    """Translation's rows give the epoch (from 0) that update `step` was in, and every epoch is the same N updates
    (fixed token batches), so each row bounds N: step / (epoch + 1) <= N <= (step - 1) / epoch. Returns the largest
    N the rows allow, exact once the bounds meet."""
    low, high = 1, None
    for r in rows:
        epoch, step = r.get("epoch"), r.get("step")
        if not (isinstance(epoch, int) and isinstance(step, int) and step > 0 and epoch >= 0):
            continue
        low = max(low, -(-step // (epoch + 1)))
        if epoch > 0:
            high = (step - 1) // epoch if high is None else min(high, (step - 1) // epoch)
    if high is None or high < low:  # still in the first epoch, or rows that fit no fixed length
        return None, False
    return high, high == low


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_rows(path: Path, tail: int = 20) -> list[dict]:
    """The metrics lines with a validation result and the last `tail` lines, in file order (a long run's other
    training lines are most of an 18 MB file and say nothing the last ones do not)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        return []
    rows = []
    for n, line in enumerate(lines):
        if n < len(lines) - tail and '"valid_ppl"' not in line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(row, dict):
            rows.append(row)
    return rows
