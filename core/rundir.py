"""One run directory: `config.json`, `metrics.jsonl`, `checkpoints/{last,best,step-N}.pt`, `curves.png`, and
`summary.json` once the run has ended cleanly (its command's summary; removed while it trains again).

`resume="auto"` continues a run whose config matches; `"never"` refuses a non-empty run dir unless
`force` (then the old contents are moved aside to `<dir>.old-<time>`, never deleted).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab.core import runlock
from lmlab.core.checkpoint import CorruptCheckpointError, atomic_write_text, load_checkpoint, save_checkpoint
from lmlab.core.errors import LmlabError
from lmlab.core.runstatus import SUMMARY_NAME

RESUME_CHOICES = ("auto", "never", "must")
# Keys that may change between a run and its resumption without changing the experiment: where and
# how it runs, and its length (rerun with more --steps/--epochs to train on, or with a later plateau stop).
VOLATILE_KEYS = ("run", "hardware.compile", "hardware.device", "hardware.threads", "hardware.dist_timeout_s",
                 "schedule.max_steps", "schedule.epochs", "schedule.min_lr", "schedule.max_decays", "derived")


class RunDir:
    def __init__(self, path: str | Path, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main

    # paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_NAME

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    # lifecycle ---------------------------------------------------------------------------
    def prepare(self, config: dict[str, Any], resume: str = "auto", force: bool = False,
                length_fixed_by: str = "") -> bool:
        """Create or reopen the run dir and hold its lock (one writer per run dir; `release` gives it up).
        Returns True when there is a checkpoint to resume from. `length_fixed_by`: why this run's length may
        not change on resume (a schedule that decays to its last update), '' when a rerun may train longer."""
        self._length_fixed_by = length_fixed_by
        if resume not in RESUME_CHOICES:
            raise LmlabError(f"--resume {resume!r}: expected one of {', '.join(RESUME_CHOICES)}")
        if self.path.exists() and not self.path.is_dir():
            raise LmlabError(f"run dir {self.path} exists and is not a directory")
        try:
            if self.is_main and self.path.is_dir():
                runlock.acquire(self.path)  # before reading anything another writer may be changing
            return self._prepare(config, resume, force)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give up the run dir's lock (at the end of training; process exit does it too)."""
        if self.is_main:
            runlock.release(self.path)

    def _prepare(self, config: dict[str, Any], resume: str, force: bool) -> bool:
        has_content = self.path.is_dir() and any(p.name != runlock.LOCK_NAME for p in self.path.iterdir())
        can_resume = self.last.exists()
        if has_content and not can_resume and resume == "auto" and self._started_without_checkpoint():
            # killed before its first checkpoint (e.g. preempted at start-up): the same command starts it afresh
            self._check_same_experiment(config)
            if self.is_main:
                self.metrics_path.unlink(missing_ok=True)
            has_content = False
        if self.is_main and self.checkpoint_dir.is_dir():
            for stale in self.checkpoint_dir.glob(".*.tmp"):  # half-written files of a killed save
                stale.unlink(missing_ok=True)
        if has_content and (resume == "never" or (resume == "auto" and not can_resume)):
            if not force:
                what = "holds a run" if can_resume else "is not empty"
                raise LmlabError(f"run dir {self.path} {what}; pass --resume auto to continue it, "
                                 "--force to move it aside, or choose another --run-dir")
            if self.is_main:
                aside = self.path.with_name(f"{self.path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.move(str(self.path), str(aside))
                runlock.release(self.path, moved_to=aside)  # held while moving; the new run dir is locked once created
            has_content = can_resume = False
        if resume == "must" and not can_resume:
            raise LmlabError(f"--resume must: run dir {self.path} has no checkpoints/last.pt")
        if can_resume and resume != "never" and self.config_path.exists():
            self._check_same_experiment(config)
        if self.is_main:
            try:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LmlabError(f"cannot create run dir {self.path}: {exc.strerror}") from exc
            if not os.access(self.path, os.W_OK):
                raise LmlabError(f"run dir {self.path} is not writable")
            runlock.acquire(self.path)  # a run dir created (or moved aside) just now; held already otherwise
            self.summary_path.unlink(missing_ok=True)  # an earlier end's summary: this run has not ended yet
            text = json.dumps(config, indent=2, sort_keys=True) + "\n"
            if can_resume and resume != "never":
                self._pending_config = text  # written once last.pt has loaded: a failed resume changes nothing
            else:
                atomic_write_text(self.config_path, text)
        return can_resume and resume != "never"

    def _write_pending_config(self) -> None:
        text, self._pending_config = getattr(self, "_pending_config", None), None
        if text is not None:
            atomic_write_text(self.config_path, text)

    def _started_without_checkpoint(self) -> bool:
        """Only what lmlab writes before the first checkpoint: config.json, metrics.jsonl, checkpoints/ without .pt."""
        own = {"config.json", "metrics.jsonl", "checkpoints", SUMMARY_NAME, runlock.LOCK_NAME}
        for p in self.path.iterdir():
            if p.name not in own and not (p.name.startswith(".") and p.name.endswith(".tmp")):
                return False
        return not any(self.checkpoint_dir.glob("*.pt"))

    def _check_same_experiment(self, config: dict[str, Any]) -> None:
        try:
            old = json.loads(self.config_path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        diffs = _diff(_strip(old), _strip(config))
        if getattr(self, "_length_fixed_by", ""):
            self._check_same_length(old, config)
        if diffs:
            key, a, b = diffs[0]
            raise LmlabError(f"run dir {self.path} was started with {key}={a!r}, now {key}={b!r}; "
                             "use a new --run-dir, or --resume never --force to restart it")

    def _check_same_length(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        def length(config):
            schedule = config.get("schedule", {})
            epochs = schedule.get("epochs", 0)
            return ("schedule.epochs", epochs) if epochs else ("schedule.max_steps", schedule.get("max_steps"))
        (old_key, old_n), (new_key, new_n) = length(old), length(new)
        if (old_key, old_n) != (new_key, new_n):
            flag = "--epochs" if old_key == "schedule.epochs" else "--steps"
            raise LmlabError(f"run dir {self.path} was started with {old_key}={old_n}, now {new_key}={new_n}, but "
                             f"{self._length_fixed_by}, so it cannot be extended or cut: rerun with {flag} {old_n} to "
                             "finish it, or train the longer run in a new --run-dir")

    # metrics -----------------------------------------------------------------------------
    def log_metrics(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        return rows

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop metric lines written after the checkpoint we resume from."""
        if not self.is_main or not self.metrics_path.exists():
            return
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    # checkpoints -------------------------------------------------------------------------
    def save(self, state: dict[str, Any], kind: str, step: int, is_best: bool = False, keep: int = 2) -> None:
        if not self.is_main:
            return
        self._write_pending_config()
        if is_best:  # best.pt first: a kill between the two files must never leave a last.pt (the resume point) that
            # counts a best whose weights best.pt does not hold, or a later plateau decay reloads stale weights
            save_checkpoint(self.best, state, kind)
            shutil.copyfile(self.best, self.checkpoint_dir / ".last.tmp")
            os.replace(self.checkpoint_dir / ".last.tmp", self.last)
        else:
            save_checkpoint(self.last, state, kind)
        if keep > 0:
            step_path = self.checkpoint_dir / f"step-{step:08d}.pt"
            shutil.copyfile(self.last, self.checkpoint_dir / ".step.tmp")
            os.replace(self.checkpoint_dir / ".step.tmp", step_path)
            steps = sorted(self.checkpoint_dir.glob("step-*.pt"))
            for old in steps[:-keep]:
                old.unlink(missing_ok=True)

    def load_last(self, kind: str | tuple[str, ...], map_location="cpu",
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """The checkpoint to resume from: last.pt, or, when a crash or a full disk left it unreadable, the
        newest readable step-N.pt (said through `log`; the unreadable file is kept as last.pt.corrupt-<time>)."""
        try:
            state = load_checkpoint(self.last, kind, map_location)
        except CorruptCheckpointError as exc:  # a refused or foreign file is not a crash to recover from
            state, used = self._newest_readable_step(kind, map_location)
            if state is None:
                raise LmlabError(f"{exc}; no readable step checkpoint to fall back to in {self.checkpoint_dir} "
                                 "(start over with --resume never --force, which moves the run aside)") from exc
            if self.is_main:
                aside = self.last.with_name(f"last.pt.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.copyfile(self.last, aside)  # copied, never moved: other ranks may be reading last.pt
                shutil.copyfile(used, self.checkpoint_dir / ".last.tmp")
                os.replace(self.checkpoint_dir / ".last.tmp", self.last)
                (log or _stderr)(f"{self.last} was unreadable (kept as {aside.name}); resuming from {used.name}, "
                                 f"the newest readable step checkpoint")
        self._write_pending_config()
        return state

    def _newest_readable_step(self, kind, map_location) -> tuple[dict[str, Any] | None, Path | None]:
        for path in sorted(self.checkpoint_dir.glob("step-*.pt"), reverse=True):
            try:
                return load_checkpoint(path, kind, map_location), path
            except LmlabError:
                continue
        return None, None


def _stderr(message: str) -> None:
    print(f"lmlab: {message}", file=sys.stderr, flush=True)


# Sections read only by one objective: a run with another objective never uses them, so their
# defaults may change between lmlab versions without changing that run's experiment.
OBJECTIVE_SECTIONS = {"imm": "imm", "kn-noising": "noising"}


# Config keys that hold a path: compared after normalisation.
PATH_KEYS = ("dir", "path", "file", "base_lm", "bigram")


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    for objective, section in OBJECTIVE_SECTIONS.items():
        if out.get("objective") != objective:
            out.pop(section, None)
    for dotted in VOLATILE_KEYS:
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Keys whose value changed. A key the old config lacks is an option added to lmlab since the run
    started: the run used that option's default behaviour, so it is not a change."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key not in old:
                continue
            out.extend(_diff(old.get(key), new.get(key), f"{prefix}{key}."))
        return [(k.rstrip("."), x, y) for k, x, y in out]
    if isinstance(old, str) and isinstance(new, str) and prefix.rstrip(".").rsplit(".", 1)[-1] in PATH_KEYS:
        same = os.path.abspath(old) == os.path.abspath(new)  # `--data data/x/` is `--data data/x`
        return [] if same else [(prefix, old, new)]
    return [] if old == new else [(prefix, old, new)]
