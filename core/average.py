"""Checkpoint averaging: the parameters of the last few checkpoints of one run, averaged element-wise (Vaswani et
al. 2017, §6.1: the base models average the last 5 checkpoints; fairseq's scripts/average_checkpoints.py).

The result is an inference checkpoint of the same kind (`lm` or `seq2seq`): `sample`, `eval-ppl` and `bleu` read
it as they read best.pt. Optimizer, scheduler and random state are dropped, since they belong to one point of
training, so it cannot be resumed; `averaged_from` lists the inputs and their updates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.errors import LmlabError

KINDS = ("lm", "seq2seq")
# what belongs to one point of training, not to the averaged model
TRAINING_STATE = ("format", "format_version", "kind", "lmlab_version", "optimizer", "scheduler", "schedule",
                  "objective", "rng", "eval_pending", "batch_pos")


def last_step_checkpoints(run_dir: str | Path, n: int) -> list[Path]:
    """The `n` newest step-N.pt files of a run dir (or of its checkpoints/ dir), oldest first."""
    path = Path(run_dir)
    ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = sorted(ckpt_dir.glob("step-*.pt"))
    if len(steps) < n:
        raise LmlabError(f"{ckpt_dir} holds {len(steps)} step checkpoint(s), fewer than the {n} asked for "
                         f"(train with --set run.keep={n} or more to keep them)")
    return steps[-n:]


def average_checkpoints(paths: list[str | Path]) -> tuple[str, dict[str, Any]]:
    """(kind, state) for save_checkpoint: the inputs' model weights averaged (floating tensors, accumulated in float64; other tensors must agree and
    are kept); everything else is the newest input's, less its training state."""
    if len(paths) < 2:
        raise LmlabError(f"averaging needs at least 2 checkpoints, got {len(paths)}")
    ckpts = [load_checkpoint(p, KINDS) for p in paths]
    steps = [int(c.get("step", -1)) for c in ckpts]
    newest = max(range(len(ckpts)), key=steps.__getitem__)
    ref, ref_path = ckpts[newest], paths[newest]
    for ckpt, path in zip(ckpts, paths):
        _check_same_model(ckpt, path, ref, ref_path)
    if len(set(steps)) < len(steps):
        raise LmlabError(f"two inputs hold the same update ({sorted(steps)}): each checkpoint may be averaged once")
    averaged = {}
    for key, value in ref["model"].items():
        if torch.is_floating_point(value):
            total = torch.zeros_like(value, dtype=torch.float64)
            for ckpt in ckpts:
                total += ckpt["model"][key].to(torch.float64)
            averaged[key] = (total / len(ckpts)).to(value.dtype)
        else:
            for ckpt, path in zip(ckpts, paths):
                if not torch.equal(ckpt["model"][key], value):
                    raise LmlabError(f"{path}: '{key}' is not a floating-point tensor and differs from {ref_path}'s; "
                                     "it cannot be averaged")
            averaged[key] = value
    out = {k: v for k, v in ref.items() if k not in TRAINING_STATE}
    out["model"] = averaged
    out["averaged_from"] = [{"path": str(p), "step": s} for p, s in sorted(zip(map(str, paths), steps), key=lambda x: x[1])]
    return ref["kind"], out


def _check_same_model(ckpt: dict, path, ref: dict, ref_path) -> None:
    """One model at several points of one run: same kind, model config, parameter names and shapes."""
    if ckpt["kind"] != ref["kind"]:
        raise LmlabError(f"{path} is a '{ckpt['kind']}' checkpoint, {ref_path} a '{ref['kind']}' one")
    if ckpt.get("config", {}).get("model") != ref.get("config", {}).get("model"):
        raise LmlabError(f"{path} and {ref_path} have different model configs: average checkpoints of one run")
    if ckpt.get("tokenizer_sha256") != ref.get("tokenizer_sha256"):
        raise LmlabError(f"{path} and {ref_path} were trained with different tokenizers")
    mine, theirs = ckpt["model"], ref["model"]
    if set(mine) != set(theirs):
        missing = sorted(set(theirs) ^ set(mine))[:3]
        raise LmlabError(f"{path} and {ref_path} hold different parameters (e.g. {', '.join(missing)})")
    for key, value in theirs.items():
        if mine[key].shape != value.shape:
            raise LmlabError(f"{path}: '{key}' has shape {tuple(mine[key].shape)}, {ref_path} {tuple(value.shape)}")
