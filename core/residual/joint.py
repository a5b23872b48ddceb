"""The residual joint model P_LM(x_p+1..T | x_1..p) exp(-E(x_1..T)) / Z(x_1..p) (Deng et al., ICLR 2020, Eq. 3):
a frozen base LM plus a trained energy, rebuilt from a `residual-ebm` checkpoint.

The checkpoint stores the base LM's path and sha256, not its weights: loading refuses a base LM that
changed since training (the energy is only meaningful as a residual of *that* LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lmlab.core.config import from_dict, upgrade
from lmlab.core.errors import LmlabError
from lmlab.core.generate import load_lm
from lmlab.core.residual.config import Config
from lmlab.core.residual.energy import build_energy
from lmlab.core.textio import sha256_file

KIND = "residual-ebm"


@dataclass
class ResidualModel:
    lm: nn.Module  # frozen base LM, eval mode
    energy: nn.Module
    prefix_len: int
    continuation_len: int

    @torch.no_grad()
    def energies(self, prefixes: torch.Tensor, continuations: torch.Tensor, prefix_mask: torch.Tensor | None = None,
                 chunk: int = 256) -> torch.Tensor:
        """E of each continuation with its prefix: prefixes (B, P), continuations (B, n, C) -> (B, n)."""
        return score(self.energy, prefixes, continuations, prefix_mask, chunk)


def score(energy: nn.Module, prefixes: torch.Tensor, continuations: torch.Tensor,
          prefix_mask: torch.Tensor | None = None, chunk: int = 0) -> torch.Tensor:
    """E(prefix ++ continuation) for prefixes (B, P) and continuations (B, n, C) -> (B, n); chunk rows to bound memory."""
    B, n, C = continuations.shape
    rows = torch.cat([prefixes.unsqueeze(1).expand(B, n, prefixes.size(1)), continuations], dim=2).reshape(B * n, -1)
    mask = torch.ones_like(rows, dtype=torch.bool)
    if prefix_mask is not None:
        mask[:, : prefixes.size(1)] = prefix_mask.repeat_interleave(n, dim=0)
    if chunk <= 0 or rows.size(0) <= chunk:
        return energy(rows, mask).view(B, n)
    return torch.cat([energy(rows[i:i + chunk], mask[i:i + chunk]) for i in range(0, rows.size(0), chunk)]).view(B, n)


def base_lm_record(path: str) -> dict[str, str]:
    """What a residual checkpoint remembers about its base LM."""
    p = Path(path)
    if not p.is_file():
        raise LmlabError(f"base_lm {path} does not exist; train one with `lmlab train-lm` or pass --set base_lm=PATH")
    return {"path": str(path), "abs_path": str(p.resolve()), "sha256": sha256_file(p)}


def locate_base_lm(record: dict[str, str]) -> Path:
    """The base LM file of a residual checkpoint, refusing one whose contents changed since training."""
    for candidate in (record.get("path"), record.get("abs_path")):
        if candidate and Path(candidate).is_file():
            if sha256_file(candidate) != record["sha256"]:
                raise LmlabError(f"base LM {candidate} changed since the energy was trained (sha256 differs); "
                                 "restore that checkpoint or retrain the energy")
            return Path(candidate)
    raise LmlabError(f"base LM {record.get('path')} of this residual checkpoint is missing "
                     f"(also tried {record.get('abs_path')})")


def load_residual(state: dict[str, Any], device: str | torch.device = "cpu"):
    """(ResidualModel, tokenizer, info) from a loaded `residual-ebm` checkpoint dict."""
    if state.get("kind") not in (None, KIND):
        raise LmlabError(f"checkpoint holds a '{state.get('kind')}' model; this needs a '{KIND}' checkpoint")
    cfg = from_dict(Config, upgrade(Config, state["config"]))  # a checkpoint from before issue #13 loads too
    lm, tokenizer, info = load_lm(str(locate_base_lm(state["base_lm"])), device)
    for p in lm.parameters():
        p.requires_grad_(False)
    energy = build_energy(cfg.energy, info["vocab_size"], cfg.window.prefix_len + cfg.window.continuation_len, lm)
    energy.load_state_dict(state["energy"])
    energy.to(device).eval()
    return ResidualModel(lm, energy, cfg.window.prefix_len, cfg.window.continuation_len), tokenizer, {**info, "residual_config": cfg}
