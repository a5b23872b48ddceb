"""lmlab train-lm: train an LSTM/Transformer LM (or, with --task translation, a seq2seq model)."""

from __future__ import annotations

import importlib
import json
from typing import List, Optional

import typer

from lmlab.cli.common import (PRESET_HELP, SET_HELP, config_epilog, finish_run, handle_errors, make_reporter,
                              nested, print_config, resolve_config)
from lmlab.core.config import parse_overrides
from lmlab.core.errors import LmlabError
from lmlab.core.train.config import TrainConfig

TASKS = {"lm": ("lmlab.core.train.config:TrainConfig", "lmlab.core.train.lm_trainer:train_lm"),
         "translation": ("lmlab.core.seq2seq.train:Config", "lmlab.core.seq2seq.train:train")}


def _load(ref: str):
    module, name = ref.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise LmlabError(f"this installation has no '{ref}' ({exc})") from exc


@handle_errors
def train_lm(
    preset: Optional[List[str]] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data dir written by `lmlab prep` (data.dir)."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", "-r", help="Run dir for config.json, metrics.jsonl, checkpoints/ (run.dir)."),
    task: str = typer.Option("lm", "--task", help="lm (language model) or translation (Transformer seq2seq)."),
    embedding: Optional[str] = typer.Option(None, "--embedding", help="Input embedding: standard | adaptive | define (model.embedding.kind)."),
    imm: bool = typer.Option(False, "--imm", help="Add the Induced Model Matching loss (objective=imm)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Updates to train (schedule.max_steps; sets schedule.epochs=0)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs to train (schedule.epochs)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (hardware.device)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    resume: Optional[str] = typer.Option(None, "--resume", help="auto (default): continue a matching run; never: refuse a non-empty run dir; must: require a checkpoint."),
    force: bool = typer.Option(False, "--force", help="Move a non-resumable run dir aside (<dir>.old-<time>) and start over."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    print_cfg: bool = typer.Option(False, "--print-config", help="Print the resolved config (with parameter counts) and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr."),
):
    """Train a language model; rerunning the same command resumes it.

    \b
    Writes RUN_DIR/config.json, metrics.jsonl (one JSON object per line), checkpoints/{last,best}.pt
    and curves.png. SIGTERM/SIGUSR1 save a checkpoint and exit 0 (SLURM requeue); Ctrl-C saves and exits
    130 (a second Ctrl-C stops at once). Under torchrun or srun it trains data-parallel; only rank 0 writes.
    One process trains into a run dir at a time: a second is refused while the first holds its lock.

    \b
    Examples:
      lmlab train-lm --preset demo,cpu
      lmlab train-lm --preset ptb,zaremba-medium,gpu --run-dir runs/zaremba-medium
      lmlab train-lm --preset demo,cpu,demo-define --run-dir runs/demo-define
      lmlab train-lm --preset demo,cpu --set optim.lr=10 --set model.lstm.dropout=0.3 --print-config
    """
    if task not in TASKS:
        raise LmlabError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    if imm and task != "lm":
        raise LmlabError("--imm does not apply to --task translation: Induced Model Matching is a language-model objective")
    if steps is not None and epochs is not None:
        raise LmlabError("--steps and --epochs both given: train either N updates (--steps) or N epochs (--epochs)")
    cls_ref, fn_ref = TASKS[task]
    cls = _load(cls_ref)
    extra = {"data.dir": data, "run.dir": run_dir, "hardware.device": device, "seed": seed, "run.resume": resume,
             "run.force": True if force else None}
    if task == "lm":
        extra.update({"model.embedding.kind": embedding, "objective": "imm" if imm else None,
                      "schedule.max_steps": steps, "schedule.epochs": 0 if steps is not None and epochs is None else epochs})
    else:
        extra.update({"model.embedding.kind": embedding, "schedule.max_steps": steps, "schedule.epochs": epochs})
    cfg = resolve_config(cls, "train-lm", preset, set_, nested(extra))
    if task == "lm" and cfg.schedule.epochs and "max_steps" in parse_overrides(set_).get("schedule", {}):
        raise LmlabError(f"--set schedule.max_steps has no effect while schedule.epochs = {cfg.schedule.epochs} (a preset "
                         "or --epochs sets it): use --steps N, which trains N updates, or add --set schedule.epochs=0")
    if print_cfg:
        _print_with_params(cfg, task)
        return
    result = _load(fn_ref)(cfg, make_reporter(quiet, getattr(cfg.run, "log_interval_s", 10.0)))
    finish_run(result, cfg.run.dir)


def _print_with_params(cfg, task: str) -> None:
    from lmlab.core.config import to_dict
    record = to_dict(cfg)
    if task == "lm":
        try:
            from lmlab.core.data import DataDir
            from lmlab.core.models.builders import build_language_model
            from lmlab.core.models.lm import parameter_counts
            vocab = DataDir(cfg.data.dir).vocab_size
            model = build_language_model(cfg.model, vocab)
            record["derived"] = {"vocab_size": vocab, **parameter_counts(model)}
        except LmlabError as exc:
            record["derived"] = {"note": f"parameter counts need the data dir: {exc}"}
    print(json.dumps(record, indent=2))


train_lm.__doc__ = (train_lm.__doc__ or "")
