"""Energy networks E(x_1..T) of the residual EBM (Deng et al., ICLR 2020, Sec. 4 "energy function").

Both read the whole window (prefix followed by continuation) and return one scalar per row:
- `BiTEnergy`: a bidirectional Transformer encoder; its top-layer states are mean-pooled over the
  real tokens only (padding is masked out of the attention *and* of the pooling) and projected to a
  scalar -- the paper's BiT (there RoBERTa-Base/Large, optionally pre-trained; here the same shape
  trained from scratch or after our masked-LM pre-training, see mlm.py; no RoBERTa weights are loaded).
  `energy.norm = "post"` is RoBERTa's layout (LayerNorm on the embeddings, post-LN layers, no final
  LayerNorm); "pre" (pre-LN layers + a final LayerNorm) trains more stably from scratch. Both have the
  same parameter count. Other differences from RoBERTa: positions only for the energy's window
  (prefix_len + continuation_len, not 514), no token-type embedding, a mean-pool + linear head instead of
  RoBERTa's <s>-token classification head.
- `UniTEnergy`: a copy of the base LM's input embedding and context model (`LanguageModel.embed` and
  `.body`) with a scalar head on the mean-pooled states -- the paper's UniT. With an LSTM base the
  copy is an LSTM, i.e. a "UniLSTM"; the recipe is the same.

Input convention: `tokens (N, L)` with `mask (N, L)` True on real tokens. Rows may be padded on
either side; `pack_left` moves the real tokens to the front (keeping their order) so positions
start at 0 and a causal body never attends to padding.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from lmlab.core.residual.config import EnergyConfig


def pack_left(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front, preserving order; padding (any id) goes to the back."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real first
    return tokens.gather(1, order), mask.gather(1, order)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h (N, L, d) over the positions where mask (N, L) is True -> (N, d)."""
    w = mask.to(h.dtype).unsqueeze(-1)  # (N, L, 1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


class BiTEnergy(nn.Module):
    """Bidirectional Transformer energy: pre-LN or post-LN encoder, learned positions, masked mean pool, scalar head."""

    def __init__(self, vocab_size: int, context: int, cfg: EnergyConfig):
        super().__init__()
        self.vocab_size = vocab_size
        self.mask_id = vocab_size  # one extra row: the [MASK] symbol of MLM pre-training
        self.context = context
        self.tok = nn.Embedding(vocab_size + 1, cfg.d_model)
        self.pos = nn.Embedding(context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        post = cfg.norm == "post"
        self.ln_emb = nn.LayerNorm(cfg.d_model) if post else nn.Identity()  # RoBERTa normalises the embeddings
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_dim or 4 * cfg.d_model, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=not post)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.ln_f = nn.Identity() if post else nn.LayerNorm(cfg.d_model)  # pre-LN needs a final norm
        self.head = nn.Linear(cfg.d_model, 1)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def hidden(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Top-layer states (N, L, d) of left-packed rows; padded positions are not attended to."""
        L = tokens.size(1)
        x = self.drop(self.ln_emb(self.tok(tokens) + self.pos(torch.arange(L, device=tokens.device))))  # (N, L, d)
        h = self.encoder(x, src_key_padding_mask=~mask)
        return self.ln_f(h)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones_like(tokens, dtype=torch.bool)
        tokens, mask = pack_left(tokens, mask)
        tokens = tokens.masked_fill(~mask, 0)  # the pad id never reaches the embedding
        return self.head(masked_mean(self.hidden(tokens, mask), mask)).squeeze(-1)  # (N,)


class UniTEnergy(nn.Module):
    """Unidirectional energy initialised from the base LM: its embed + body (copied, trainable) and a scalar head."""

    def __init__(self, base_lm: nn.Module, d_model: int):
        super().__init__()
        self.embed = copy.deepcopy(base_lm.embed)
        self.body = copy.deepcopy(base_lm.body)
        for p in [*self.embed.parameters(), *self.body.parameters()]:
            p.requires_grad_(True)  # the copies train; the frozen base LM (requires_grad False) must not freeze them
        self.head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.head.weight)  # start at E = 0: the joint model starts as the base LM
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones_like(tokens, dtype=torch.bool)
        tokens, mask = pack_left(tokens, mask)
        tokens = tokens.masked_fill(~mask, 0)
        h, _ = self.body(self.embed(tokens))  # (N, L, d); causal/recurrent: real tokens never see the padding
        return self.head(masked_mean(h, mask)).squeeze(-1)  # (N,)


def build_energy(cfg: EnergyConfig, vocab_size: int, context: int, base_lm: nn.Module | None = None) -> nn.Module:
    if cfg.kind == "bit":
        return BiTEnergy(vocab_size, context, cfg)
    if base_lm is None:
        raise ValueError("energy.kind='unit' needs the base LM to copy")
    d_model = base_lm.embed.out_dim
    return UniTEnergy(base_lm, d_model)
