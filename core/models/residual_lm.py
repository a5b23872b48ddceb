"""RALM: a locally normalised residual on a frozen base LM, the residual EBM paper's baseline (Deng et al., ICLR 2020,
Table 1): log P(x_t | x_<t) = log softmax(base_logits_t + residual_logits_t), trained by maximum likelihood with the
base LM fixed. It has the joint model's ingredients (the base LM plus a residual network of UniT's size) but is
normalised per token, so the comparison with the joint model isolates sequence-level normalisation.

The residual is a LanguageModel; `embed`, `body` and `output` are its parts (what the trainer compiles, and what
parameter_counts splits), `frozen_base` the base LM, kept in eval mode. The recurrent state is (base, residual).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.core.models.lm import LanguageModel


class ResidualLM(nn.Module):
    def __init__(self, frozen_base: LanguageModel, residual: LanguageModel):
        super().__init__()
        self.frozen_base = frozen_base.eval()
        for p in self.frozen_base.parameters():
            p.requires_grad_(False)
        self.residual = residual

    embed = property(lambda self: self.residual.embed)
    body = property(lambda self: self.residual.body)
    output = property(lambda self: self.residual.output)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen_base.eval()  # the base LM is fixed: no dropout in its logits
        return self

    def _advance(self, tokens: torch.Tensor, state, with_base_logits: bool):
        """(base logits (B, T, V) or None, the residual's hidden states (B, T, d), the new (base, residual) state)."""
        base_state, residual_state = state if state is not None else (None, None)
        with torch.no_grad():
            if with_base_logits:
                base_logits, base_state = self.frozen_base(tokens, state=base_state)
            else:  # only the base's state moves on: its output layer is not needed
                base_logits, (_, base_state) = None, self.frozen_base.hidden(tokens, base_state)
        h, residual_state = self.residual.hidden(tokens, residual_state)
        return base_logits, h, (base_state, residual_state)

    def hidden(self, tokens: torch.Tensor, state=None):
        """The residual's hidden states (B, T, d) and the new (base, residual) state. Not the model's output on its
        own: the logits need the base's (forward), so only state warming may use it."""
        _, h, state = self._advance(tokens, state, with_base_logits=False)
        return h, state

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, state=None):
        """Per-token NLL in nats (B, T) when targets are given, else logits (B, T, V); plus the new state."""
        base_logits, h, state = self._advance(tokens, state, with_base_logits=True)
        logits = base_logits + self.residual.output.logits(h)  # (B, T, V)
        if targets is None:
            return logits, state
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
        return nll.view(targets.shape), state

    def init_state(self, batch_size: int, device=None):
        return self.frozen_base.init_state(batch_size, device), self.residual.init_state(batch_size, device)

    def detach_state(self, state):
        return self.frozen_base.detach_state(state[0]), self.residual.detach_state(state[1])

    def select_state(self, state, index: torch.Tensor):
        return self.frozen_base.select_state(state[0], index), self.residual.select_state(state[1], index)

    @property
    def context(self) -> int | None:
        contexts = [c for c in (self.frozen_base.context, self.residual.context) if c is not None]
        return min(contexts) if contexts else None


def build_ralm(residual: LanguageModel, base: LanguageModel, same_architecture: bool) -> ResidualLM:
    """The residual starts as a copy of the base LM with a zero output layer where the architectures match (UniT's
    initialisation), else as built; either way its output starts at zero, so training starts at the base LM."""
    if same_architecture:
        residual.load_state_dict(copy.deepcopy(base.state_dict()))
    with torch.no_grad():
        residual.output.weight.zero_()
        if getattr(residual.output, "bias", None) is not None:
            residual.output.bias.zero_()
    return ResidualLM(base, residual)
