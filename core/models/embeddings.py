"""The plain parts a language model is composed of: a lookup-table input embedding and a full-softmax output."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class TokenEmbedding(nn.Module):
    """Lookup table of width `dim`, projected to `out_dim` when they differ."""

    def __init__(self, vocab_size: int, out_dim: int, dim: int = 0, scale: bool = False, init_range: float | None = None):
        super().__init__()
        dim = dim or out_dim
        self.table = nn.Embedding(vocab_size, dim)
        self.proj = nn.Linear(dim, out_dim, bias=False) if dim != out_dim else None
        self.out_dim = out_dim
        self.scale = math.sqrt(dim) if scale else 1.0
        if init_range is not None:
            nn.init.uniform_(self.table.weight, -init_range, init_range)
        else:
            nn.init.normal_(self.table.weight, std=0.02)

    @property
    def tie_weight(self) -> nn.Parameter | None:
        return self.table.weight if self.proj is None else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.table(tokens) * self.scale  # (B, T, dim)
        return self.proj(x) if self.proj is not None else x


class LinearOutput(nn.Module):
    """Full softmax over the vocabulary, optionally sharing the input table's weights."""

    def __init__(self, d_model: int, vocab_size: int, tied_weight: nn.Parameter | None = None, bias: bool = True,
                 init_range: float | None = None):
        super().__init__()
        if tied_weight is not None:
            if tied_weight.shape != (vocab_size, d_model):
                raise ValueError(f"cannot tie output ({vocab_size}x{d_model}) to embedding {tuple(tied_weight.shape)}")
            self.weight = tied_weight
        else:
            self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
            if init_range is not None:
                nn.init.uniform_(self.weight, -init_range, init_range)
            else:
                nn.init.normal_(self.weight, std=0.02)
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None
        self.loss_chunk = 0  # > 0: nll() by the chunked fused path, this many token rows at a time

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight, self.bias)  # (..., V)

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_chunk:  # never all the logits at once (core/models/fused_ce.py)
            from lmlab.core.models.fused_ce import chunked_linear_cross_entropy
            return chunked_linear_cross_entropy(h, self.weight, self.bias, targets, self.loss_chunk)
        logits = self.logits(h)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                               reduction="none").view(targets.shape)
