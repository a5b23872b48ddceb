"""Training objectives. Plain cross-entropy lives here; others (IMM, KN noising) register by name."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.core.errors import LmlabError


class CrossEntropy:
    """Mean next-token negative log-likelihood in nats; with `ar`/`tar` > 0, AWD-LSTM's activation regularisers
    (Merity et al. 2018, Sec. 4.6) are added to the loss the update differentiates, never to the logged loss."""

    def __init__(self, ar: float = 0.0, tar: float = 0.0):
        self.ar, self.tar = ar, tar

    def __call__(self, model, inputs: torch.Tensor, targets: torch.Tensor, state, step: int):
        if not (self.ar or self.tar):
            nll, state = model(inputs, targets, state)  # (B, T)
            loss = nll.float().mean()
            return loss, state, {"loss_nats": loss.item()}
        model.body.keep_raw = True
        h, state = model.hidden(inputs, state)  # (B, T, d): the last layer's output after its dropout
        raw = model.body.last_raw  # (B, T, d): the same before dropout
        loss = model.output.nll(h, targets).float().mean()
        reg = self.ar * h.float().pow(2).mean() + self.tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        return loss + reg, state, {"loss_nats": loss.item(), "activation_reg": reg.item()}


def _cross_entropy(cfg, train, vocab, data_dir, device) -> CrossEntropy:
    ar, tar = cfg.optim.activation_reg, cfg.optim.temporal_reg
    if (ar or tar) and cfg.model.ralm_base:
        raise LmlabError("optim.activation_reg / optim.temporal_reg regularise a plain LSTM LM's hidden states; a RALM "
                         "(model.ralm_base) is not one")
    if (ar or tar) and cfg.model.kind != "lstm":
        raise LmlabError("optim.activation_reg / optim.temporal_reg are AWD-LSTM's regularisers: they need model.kind = lstm")
    return CrossEntropy(ar, tar)


OBJECTIVES: dict[str, Any] = {
    "ce": _cross_entropy,
    "imm": "lmlab.core.imm.objective:build_imm_objective",
    "kn-noising": "lmlab.core.imm.noising:build_kn_noising",
}


def build_objective(cfg, train_tokens: np.ndarray, vocab_size: int, data_dir: Path, device: torch.device):
    entry = OBJECTIVES.get(cfg.objective)
    if entry is None:
        raise LmlabError(f"unknown objective '{cfg.objective}' (known: {', '.join(OBJECTIVES)})")
    if cfg.model.ralm_base and cfg.objective != "ce":  # they score hidden states with the output layer alone
        raise LmlabError(f"objective '{cfg.objective}' needs a plain LM; a RALM (model.ralm_base) is trained by "
                         "maximum likelihood (objective = ce), as the residual EBM paper's baseline is")
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = getattr(importlib.import_module(module), name)
    return entry(cfg, train_tokens, vocab_size, data_dir, device)
