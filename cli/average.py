"""lmlab average: one inference checkpoint whose weights are the average of several checkpoints of one run."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from lmlab.cli.common import check_flag, handle_errors, strict_json
from lmlab.core.errors import LmlabError


@handle_errors
def average(
    inputs: List[str] = typer.Argument(..., metavar="CKPT...|RUN_DIR", help="Checkpoints of one run (e.g. runs/X/checkpoints/step-*.pt), or one run dir with --last."),
    out: str = typer.Option(..., "--out", "-o", help="Where to write the averaged checkpoint (.pt)."),
    last: int = typer.Option(0, "--last", "-n", help="Average the N newest step checkpoints of the RUN_DIR given (the run keeps --set run.keep=N of them)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
):
    """Average the weights of the last checkpoints of a run (Vaswani et al. 2017, §6.1: the last 5).

    \b
    OUT.pt is for sample, eval-ppl and bleu, as best.pt is; optimizer and random state are dropped, so it
    cannot be resumed. Prints one JSON line: the inputs and their updates.

    \b
    Examples:
      lmlab average --last 5 runs/multi30k-de-en -o runs/multi30k-de-en/checkpoints/average.pt
      lmlab average runs/X/checkpoints/step-0000{4000,4500,5000}.pt -o avg.pt
      lmlab sample -c runs/multi30k-de-en/checkpoints/average.pt --beam 5 < test.de > hyp.en
    """
    from lmlab.core.average import average_checkpoints, last_step_checkpoints
    from lmlab.core.checkpoint import save_checkpoint
    from lmlab.core.config import at_least

    check_flag("--last", last, at_least(0))
    missing = [p for p in inputs if not Path(p).exists()]
    if missing:  # before counting them: one missing of two is not "fewer than 2 checkpoints"
        raise LmlabError(f"{missing[0]} does not exist")
    if last:
        if len(inputs) != 1 or not Path(inputs[0]).is_dir():
            raise LmlabError("--last N takes one run dir (or its checkpoints/ dir), e.g. lmlab average --last 5 runs/X -o avg.pt")
        paths = last_step_checkpoints(inputs[0], last)
    else:
        dirs = [p for p in inputs if Path(p).is_dir()]
        if dirs:
            raise LmlabError(f"{dirs[0]} is a directory: pass --last N to average its newest step checkpoints")
        paths = [Path(p) for p in inputs]
    if Path(out).exists() and not force:
        raise LmlabError(f"--out {out} exists; pass --force to overwrite it")
    if any(Path(out).resolve() == Path(p).resolve() for p in paths):
        raise LmlabError("--out is one of the inputs: write the average beside them")
    kind, averaged = average_checkpoints(paths)
    save_checkpoint(out, averaged, kind)
    print(strict_json({"out": out, "kind": kind, "averaged_from": averaged["averaged_from"]}))
