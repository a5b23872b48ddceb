"""lmlab train-ebm: a residual EBM on a trained LM (Deng et al. 2020) or a GEBM (Arbel et al. 2021)."""

from __future__ import annotations

from typing import List, Optional

import typer

from lmlab.cli.common import (PRESET_HELP, SET_HELP, finish_run, handle_errors, make_reporter, nested, print_config,
                              resolve_config)
from lmlab.cli.train_lm import _load
from lmlab.core.errors import LmlabError

KINDS = {"residual": ("lmlab.core.residual.train:Config", "lmlab.core.residual.train:train"),
         "gebm": ("lmlab.core.gebm.train:Config", "lmlab.core.gebm.train:train")}


@handle_errors
def train_ebm(
    kind: str = typer.Option(..., "--kind", "-k", help="residual: energy on LM continuations, trained by NCE against LM samples; gebm: energy on a generator's latent space, trained by KALE."),
    preset: Optional[List[str]] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    base_lm: Optional[str] = typer.Option(None, "--base-lm", help="residual: checkpoint of the frozen base LM (base_lm)."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", "-r", help="Run dir (run.dir)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (hardware.device)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Updates to train (schedule.max_steps; GEBM: base updates)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    resume: Optional[str] = typer.Option(None, "--resume", help="auto | never | must"),
    force: bool = typer.Option(False, "--force", help="Move a non-resumable run dir aside and start over."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    print_cfg: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr."),
):
    """Train an energy-based model; rerunning the same command resumes it.

    Both kinds train data-parallel under torchrun or srun: data.batch_size is the global batch, only rank 0
    writes.

    \b
    Examples:
      lmlab train-ebm --kind residual --preset residual-demo,cpu --base-lm runs/demo/checkpoints/best.pt
      lmlab train-ebm --kind gebm --preset gebm-uci-redwine,cpu --run-dir runs/gebm-red
    """
    if kind not in KINDS:
        raise LmlabError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    cls_ref, fn_ref = KINDS[kind]
    extra = {"run.dir": run_dir, "hardware.device": device, "schedule.max_steps": steps, "seed": seed, "run.resume": resume,
             "run.force": True if force else None}
    if kind == "residual":
        extra["base_lm"] = base_lm
    elif base_lm:
        raise LmlabError("--base-lm is for --kind residual (a GEBM's base is its own generator)")
    cfg = resolve_config(_load(cls_ref), "train-ebm", preset, set_, nested(extra))
    if print_cfg:
        print_config(cfg)
        return
    result = _load(fn_ref)(cfg, make_reporter(quiet, getattr(cfg.run, "log_interval_s", 10.0)))
    finish_run(result, cfg.run.dir)
