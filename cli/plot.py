"""lmlab plot: overlay one metric of several run dirs in a PNG (baseline vs IMM, standard vs DeFINE, ...)."""

from __future__ import annotations

from typing import List, Optional

import typer

from lmlab.cli.common import handle_errors
from lmlab.core.plot import plot_runs


@handle_errors
def plot(
    run_dirs: List[str] = typer.Argument(..., metavar="RUN_DIR", help="One or more run dirs written by train-lm / train-ebm (their metrics.jsonl), or RECORD.json#train-KEY: the validation curve a result record kept of a run whose dir is gone."),
    output: str = typer.Option("plot.png", "--output", "-o", help="PNG to write (its parent dirs are made)."),
    metric: str = typer.Option("valid_ppl", "--metric", "-m", help="metrics.jsonl key on the y axis: valid_ppl, valid_loss_nats, train_loss_nats, ..."),
    x: str = typer.Option("step", "--x", help="metrics.jsonl key on the x axis: step (updates) or epoch."),
    logy: Optional[bool] = typer.Option(None, "--logy/--linear-y", help="y-axis scale (default: log for a *ppl* metric, linear otherwise)."),
    title: str = typer.Option("", "--title", help="Figure title."),
):
    """Overlay METRIC of each RUN_DIR in one PNG; legend labels are the run dir names. Runs named ARM-sSEED
    (the paired tiers: dropout-s1 imm-s1 dropout-s2 ...) get one colour per arm and one line style per seed.

    Prints the path written on stdout.

    \b
    Examples:
      lmlab plot runs/ptb-baseline runs/ptb-imm -o imm.png
      lmlab plot runs/demo runs/demo-define --metric valid_loss_nats --x epoch
      lmlab plot results/imm-ptb-cpu.json#train-dropout-s1 runs/define-ptb-cpu/define-s1 --x epoch
    """
    print(plot_runs(run_dirs, output, metric=metric, x=x, logy=logy, title=title))
