"""Figures with matplotlib, drawn on its Agg canvas (files only: no display, no pyplot state).

Three layers, each usable on its own:

- :func:`plot_series` draws ``{label: [(x, y), ...]}`` to a PNG: what the result pipelines use to
  draw figures from result records into ``docs/figures/``.
- :func:`write_curves_png` is a run's ``curves.png`` (train + valid loss against update), written
  by the trainers at the end of training.
- :func:`plot_runs` overlays one metric of several run dirs (``lmlab plot``): labels from the run
  dir names, x = update (or epoch, or any key the rows carry), log-y for perplexities. A result
  record's kept validation curve (``results/X.json#train-KEY``) stands in for a run dir that is gone.
  Runs named ARM-sSEED (a paired tier) are drawn one colour per arm and one line style per seed.

Every file is written atomically (temp file in the same directory, then rename), so a reader never
sees half a PNG. Errors are :class:`LmlabError` with one line naming the run dir or metric.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from lmlab.core.errors import LmlabError

__all__ = ["plot_series", "write_curves_png", "plot_runs", "read_metrics", "metric_series", "run_labels"]

Series = dict[str, Sequence[tuple[float, float]]]


def _finite(points: Iterable[tuple[float, float]], logy: bool) -> list[tuple[float, float]]:
    """Drop points a plot cannot place: None/NaN/inf (a diverged step), and y <= 0 on a log axis."""
    out = []
    for x, y in points:
        if x is None or y is None:
            continue
        x, y = float(x), float(y)
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not logy):
            out.append((x, y))
    return out


def plot_series(series: Series, path: str | Path, *, xlabel: str = "step", ylabel: str = "", title: str = "",
                logy: bool = False, width: int = 800, height: int = 500, dpi: int = 100,
                markers: bool | None = None) -> Path:
    """Draw each labelled series as a line on one axes and write a `width` x `height` pixel PNG.

    `series` maps a legend label to (x, y) points (sorted by x here). Non-finite points are
    dropped; a series with few points (<= 30) gets markers unless `markers` says otherwise.
    Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    path = Path(path)
    # a Figure on an Agg canvas, not pyplot: no window, no global state, and a caller's backend is left alone
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = seed_styles(list(series))
    drawn = 0
    for label, points in series.items():
        pts = sorted(_finite(points, logy))
        if not pts:
            continue
        xs, ys = zip(*pts)
        show_markers = markers if markers is not None else len(pts) <= 30
        dense = len(pts) > 200  # a per-update training curve: thinner, so sparser curves stay visible on it
        ax.plot(xs, ys, label=label, linewidth=1.0 if dense else 1.5, alpha=0.8 if dense else 1.0,
                marker="o" if show_markers else None, markersize=4, zorder=2 if dense else 3, **styles.get(label, {}))
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.4")
    if logy and drawn:
        from matplotlib.ticker import LogFormatter
        ax.set_yscale("log")
        # plain numbers (300, not 3x10^2); intermediate ticks labelled while the range spans few decades
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if logy and drawn:
        ax.grid(True, which="minor", axis="y", alpha=0.15)
    if drawn:
        ax.legend(loc="best", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"  # open(), not mkstemp: the PNG gets the umask's mode, not 0600
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_SEEDED = re.compile(r"(?P<arm>.+)-s(?P<seed>\d+)")
_LINESTYLES = ("-", "--", ":", "-.")


def seed_styles(labels: Sequence[str]) -> dict[str, dict]:
    """Paired seeds drawn as pairs: where every label reads ARM-sSEED and some seed has runs of several arms, each arm
    gets one colour and each seed one line style (dropout-s1 and imm-s1 solid, the -s2 runs dashed, ...); {} otherwise."""
    found = [_SEEDED.fullmatch(label.rpartition("/")[2]) for label in labels]
    if not labels or not all(found):
        return {}
    arms = list(dict.fromkeys(m["arm"] for m in found))
    seeds = list(dict.fromkeys(int(m["seed"]) for m in found))
    if len(seeds) == len(labels):  # one run per seed: nothing to pair
        return {}
    return {label: {"color": f"C{arms.index(m['arm']) % 10}", "linestyle": _LINESTYLES[seeds.index(int(m["seed"])) % 4]}
            for label, m in zip(labels, found)}


def write_curves_png(path: str | Path, series: Series, *, title: str = "", xlabel: str = "step",
                     ylabel: str = "loss (nats/token)", width: int = 640, height: int = 400) -> Path:
    """A run's `curves.png`: the train and valid loss against update (linear y, nats per token)."""
    return plot_series(series, path, xlabel=xlabel, ylabel=ylabel, title=title, width=width, height=height,
                       markers=None)


# ---- run dirs ------------------------------------------------------------------------------------

def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of `run_dir/metrics.jsonl`; a line cut by a kill (or being written) is skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmlabError(f"{run_dir}: no such run dir")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise LmlabError(f"{path}: not found (is {run_dir} a run dir written by lmlab train-lm / train-ebm?)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _numeric_keys(rows: list[dict]) -> list[str]:
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(keys)


def recorded_rows(ref: str) -> list[dict]:
    """`RECORD.json#train-KEY`: the validation curve a result record kept of a run whose run dir is gone, as
    metrics rows ({step, epoch, valid_ppl}); records keep no other metric."""
    from lmlab.core.records import recorded_entry
    _, entry = recorded_entry(ref)
    curve = entry.get("valid_curve") if isinstance(entry, dict) else None
    if not curve:
        raise LmlabError(f"{ref}: the record kept no validation curve for this entry")
    return [{"step": step, "epoch": epoch, "valid_ppl": ppl} for step, epoch, ppl in curve]


def metric_series(run_dir: str | Path, metric: str, x: str = "step") -> list[tuple[float, float]]:
    """(x, metric) for every row of `run_dir/metrics.jsonl` (or of a record's kept curve, `RECORD.json#KEY`) that has
    the metric; one error line if none has."""
    from lmlab.core.records import is_record_ref
    if is_record_ref(run_dir):
        rows = recorded_rows(str(run_dir))
        if metric not in rows[0]:
            raise LmlabError(f"{run_dir}: a record keeps only valid_ppl (--metric {metric})")
        if x not in rows[0]:
            raise LmlabError(f"{run_dir}: a record's curve has step and epoch only (--x {x})")
        return [(r[x], r[metric]) for r in rows if r[x] is not None]
    rows = read_metrics(run_dir)
    with_metric = [r for r in rows if metric in r]
    if not with_metric:
        keys = ", ".join(_numeric_keys(rows)) or "none: the file is empty"
        raise LmlabError(f"{Path(run_dir) / 'metrics.jsonl'}: no metric '{metric}' (--metric); its metrics: {keys}")
    if not any(x in r for r in with_metric):
        raise LmlabError(f"{Path(run_dir) / 'metrics.jsonl'}: the rows with '{metric}' have no '{x}' for the x axis (--x)")
    return [(r[x], r[metric]) for r in with_metric if x in r]


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Legend labels: each run dir's name, with as many parent dirs as it takes to tell them apart; a record's entry
    (`RECORD.json#train-KEY`) is labelled KEY."""
    from lmlab.core.records import is_record_ref
    parts = [("recorded", str(d).partition("#")[2].removeprefix("train-")) if is_record_ref(d)
             else Path(os.path.normpath(Path(d).absolute())).parts for d in run_dirs]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in run_dirs]  # the same dir given twice


def plot_runs(run_dirs: Sequence[str | Path], path: str | Path, *, metric: str = "valid_ppl", x: str = "step",
              logy: bool | None = None, title: str = "", width: int = 800, height: int = 500) -> Path:
    """Overlay `metric` of several run dirs (e.g. baseline vs IMM, standard vs DeFINE) in one PNG.

    `logy=None` means log-y for perplexities (a metric whose name contains "ppl"). Every run dir is
    read before anything is drawn, so a bad one fails without writing a file.
    """
    if not run_dirs:
        raise LmlabError("no run dir given: lmlab plot RUN_DIR... (one or more)")
    series = {label: metric_series(d, metric, x) for label, d in zip(run_labels(run_dirs), run_dirs)}
    logy = ("ppl" in metric) if logy is None else logy
    return plot_series(series, path, xlabel=x, ylabel=metric, title=title, logy=logy, width=width, height=height)
