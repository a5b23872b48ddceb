"""Seed statistics, the result record and the figure helpers shared by the two IMM toy experiments
(`logistic.py`, `reinforce.py`). Arms share seeds (common random numbers), so a comparison is the
paired per-seed difference: mean, sd, standard error sd/sqrt(S) and the count of seeds it favours.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def summary(values: np.ndarray) -> dict[str, list[float]]:
    """values (..., S) over seeds -> mean and sample sd (ddof 1) over the last axis, as lists."""
    values = np.asarray(values, dtype=float)
    sd = values.std(axis=-1, ddof=1) if values.shape[-1] > 1 else np.zeros(values.shape[:-1])
    return {"mean": values.mean(axis=-1).tolist(), "sd": np.asarray(sd).tolist()}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, list[float]]:
    """a - b per seed (same seeds in both arms): mean, sd, se and how many seeds have a > b / a < b."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    out = summary(d)
    out["se"] = (np.asarray(out["sd"]) / np.sqrt(d.shape[-1])).tolist()
    out["n_better"] = (d > 0).sum(axis=-1).tolist()
    out["n_worse"] = (d < 0).sum(axis=-1).tolist()
    return out


class Timer:
    """Wall time and the machine's load at start and end (what a record carries)."""

    def __init__(self):
        from lmlab.core.machine import machine_info
        self.t0 = time.time()
        self.machine = machine_info()

    def finish(self) -> tuple[float, dict[str, Any]]:
        from lmlab.core.machine import load_average
        machine = dict(self.machine)
        machine["load_avg_1_5_15_start"] = machine.pop("load_avg_1_5_15")
        machine["load_avg_1_5_15_end"] = load_average()
        return round(time.time() - self.t0, 1), machine


def write(name: str, metrics: dict, seeds: list[int], timer: Timer, out_dir: str | Path, **extra) -> Path:
    """results/<name>.json through lmlab.core.records (command line, commit, machine, wall time, seeds)."""
    from lmlab.core.records import make_record, write_record
    wall_s, machine = timer.finish()
    command = "python -m " + " ".join(shlex.quote(a) for a in [f"lmlab.core.imm.{Path(sys.argv[0]).stem}"] + sys.argv[1:])
    record = make_record(name, command, metrics, wall_s=wall_s, machine=machine, seeds=list(seeds), **extra)
    return write_record(record, out_dir)


def pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def band(ax, x, mean, sd, label, color, marker="o", style="-"):
    """A mean line with a ± sd band."""
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    ax.plot(x, mean, style, marker=marker, color=color, label=label, markersize=4, linewidth=1.5)
    ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15, linewidth=0)


def save(fig, path: str | Path) -> Path:
    """Write the PNG atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return path
