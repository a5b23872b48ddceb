"""Result records: one small JSON file per result under `results/`, the only source of every figure
in docs/ (`make results` renders the tables from them; nothing is typed by hand).

A record: {"name", "command", "commit", "dirty", "date", "machine": {...}, "wall_s", "seeds", "metrics": {...},
"paper": {...} (the paper's figures beside ours, optional), "notes" (optional)}.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from lmlab.core.machine import machine_info

RESULTS_DIR = Path(os.environ.get("LMLAB_RESULTS", "results"))


def git_commit(cwd: str | Path = ".") -> tuple[str | None, bool]:
    """(commit hash, whether the work tree had uncommitted changes to tracked files)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                                    text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, False


def strict(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (strict JSON never holds Infinity/NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def make_record(name: str, command: str, metrics: dict[str, Any], *, wall_s: float | None = None,
                machine: dict[str, Any] | None = None, seeds: list[int] | None = None,
                paper: dict[str, Any] | None = None, notes: str | None = None, **extra: Any) -> dict[str, Any]:
    commit, dirty = git_commit()
    record = {"name": name, "command": command, "commit": commit, "dirty": dirty,
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine or machine_info(), "wall_s": wall_s, "seeds": seeds or [], "metrics": metrics}
    if paper:
        record["paper"] = paper
    if notes:
        record["notes"] = notes
    record.update(extra)
    return strict(record)


def write_record(record: dict[str, Any], results_dir: str | Path | None = None) -> Path:
    """Write results/<name>.json atomically (temp file + rename)."""
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{record['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_records(results_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))}
