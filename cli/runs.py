"""lmlab runs: where each training run stands, from its run dir alone (no torch, no checkpoint loaded)."""

from __future__ import annotations

import time
from typing import List, Optional

import typer

from lmlab.cli.common import handle_errors, strict_json
from lmlab.core.errors import LmlabError
from lmlab.core.runstatus import RunStatus, find_run_dirs, run_status

COLUMNS = ("RUN", "STATE", "STEP", "PROGRESS", "EPOCH", "BEST_VALID_PPL", "LAST_VALID_PPL", "LR", "UPDATED")


@handle_errors
def runs(
    paths: Optional[List[str]] = typer.Argument(None, help="Run dirs, or folders searched for them (default: runs)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run on stdout instead of the table."),
    state: Optional[List[str]] = typer.Option(None, "--state", help="Only runs in this state (repeatable): training, "
                                              "killed, stopped, finished, ended."),
):
    """Where each training run stands: state, step, progress, best and last validation perplexity, age of the
    last metrics line. Reads config.json, metrics.jsonl, summary.json and the run's lock; loads no checkpoint.

    \b
    States:
      training  its process runs
      killed    its process died without its final save (SIGKILL, out of memory): rerun its command to resume from last.pt
      stopped   by a signal, after saving (SLURM's SIGTERM/SIGUSR1, Ctrl-C): rerun its command to go on
      finished  by its schedule
      ended     not running, and no summary.json says why (an error, or an lmlab from before summary.json)
    PROGRESS is the step over the configured length; ~ marks a length estimated from the epochs so far.

    \b
    Examples:
      lmlab runs                                    # every run under runs/
      lmlab runs runs/imm-ptb-cpu-full --state training
      lmlab runs --json runs | jq -r 'select(.state == "killed") | .run'   # the runs to resubmit
    """
    wanted = set(state or [])
    unknown = wanted - {"training", "killed", "stopped", "finished", "ended"}
    if unknown:
        raise LmlabError(f"--state {sorted(unknown)[0]!r}: expected training, killed, stopped, finished or ended")
    dirs = find_run_dirs(paths or ["runs"])
    if not dirs:
        raise LmlabError(f"no run dirs (folders with config.json and metrics.jsonl or checkpoints/) in {' '.join(paths or ['runs'])}")
    now = time.time()
    rows = [s for s in (run_status(d, now) for d in dirs) if not wanted or s.state in wanted]
    if as_json:
        for s in rows:
            print(strict_json(s.to_json()))
        return
    table = [COLUMNS] + [_cells(s) for s in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _cells(s: RunStatus) -> tuple[str, ...]:
    state = s.state + (f" ({s.holder})" if s.holder else f" ({s.stopped_by})" if s.stopped_by else "")
    progress = "-"
    if s.progress is not None:
        progress = f"{'~' if s.total_is_estimate else ''}{s.total_steps} {100 * s.progress:.1f}%"
    return (s.run, state, _n(s.step), progress, _n(s.epoch), _ppl(s.best_valid_ppl), _ppl(s.last_valid_ppl),
            "-" if s.lr is None else f"{s.lr:.4g}", _ago(s.updated_s_ago))


def _n(value) -> str:
    return "-" if value is None else str(value)


def _ppl(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
