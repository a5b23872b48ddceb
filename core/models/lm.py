"""A language model = input embedding -> context model (LSTM or Transformer) -> output layer.

The three parts are built separately (see builders.py) and passed in, so a new input embedding
(DeFINE, adaptive input) or output layer (adaptive softmax) needs no change here.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class LanguageModel(nn.Module):
    def __init__(self, embed: nn.Module, body: nn.Module, output: nn.Module, embed_drop: float = 0.0):
        super().__init__()
        self.embed = embed
        self.body = body
        self.output = output
        self.embed_drop = embed_drop

    def _drop_word_types(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # AWD-LSTM embedding dropout: a word type is dropped everywhere in the batch.
        vocab = int(tokens.max().item()) + 1
        keep = x.new_empty(vocab).bernoulli_(1 - self.embed_drop) / (1 - self.embed_drop)
        return x * keep[tokens].unsqueeze(-1)

    def hidden(self, tokens: torch.Tensor, state=None):
        x = self.embed(tokens)  # (B, T, d)
        if self.training and self.embed_drop > 0:
            x = self._drop_word_types(tokens, x)
        return self.body(x, state)  # (B, T, d), new state

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, state=None):
        """Per-token NLL in nats (B, T) when targets are given, else logits (B, T, V); plus the new state."""
        h, state = self.hidden(tokens, state)
        if targets is None:
            return self.output.logits(h), state
        return self.output.nll(h, targets), state

    def init_state(self, batch_size: int, device=None):
        return self.body.init_state(batch_size, device)

    def detach_state(self, state):
        return self.body.detach_state(state)

    def select_state(self, state, index: torch.Tensor):
        return self.body.select_state(state, index)

    @property
    def context(self) -> int | None:
        """Maximum positions for a Transformer; None for a recurrent model."""
        return getattr(self.body, "context", None)


def count_parameters(module: nn.Module, exclude: nn.Module | None = None) -> int:
    """Parameters of `module`, each shared tensor once; those that also belong to `exclude` are left out."""
    seen = {id(p) for p in exclude.parameters()} if exclude is not None else set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def parameter_counts(model: LanguageModel) -> dict[str, int]:
    """params_total and its split into embedding + body + output (+ a RALM's frozen base LM), which add up to it: a
    table the output layer shares with the embedding (weight tying) is counted once, under the embedding."""
    base = getattr(model, "frozen_base", None)
    frozen = {"params_frozen_base": count_parameters(base)} if base is not None else {}
    return {"params_total": count_parameters(model), **frozen, "params_embedding": count_parameters(model.embed),
            "params_body": count_parameters(model.body, exclude=model.embed),
            "params_output": count_parameters(model.output, exclude=nn.ModuleList([model.embed, model.body]))}
