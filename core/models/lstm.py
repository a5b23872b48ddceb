"""LSTM context model: Zaremba et al. (2014) with the AWD-LSTM regularisers of Merity et al. (2018) as options.

Input and output are `d_model` wide; inner layers are `hidden_size` wide (AWD-LSTM: 400 -> 1150 -> 400).
`last_hidden_size` makes the output narrower than the input (AWD-LSTM + DeFINE: 400 -> 1150 -> 128, the
width of the tied map table); `out_dim` is the output width.
The state carried between BPTT windows is a list of (h, c) per layer, each (1, B, H).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from lmlab.core.models.config import LSTMConfig

State = list[tuple[torch.Tensor, torch.Tensor]]


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, shared across time steps (Gal & Ghahramani 2016)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, C)
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


def _dropout(p: float, variational: bool) -> nn.Module:
    return LockedDropout(p) if variational else nn.Dropout(p)


class LSTMBody(nn.Module):
    def __init__(self, d_model: int, n_layers: int, cfg: LSTMConfig):
        super().__init__()
        # AWD-LSTM with tied weights: the last layer is as wide as the tied table (last_hidden_size), e.g. DeFINE's map
        sizes = [cfg.hidden_size] * (n_layers - 1) + [cfg.last_hidden_size or d_model]
        ins = [d_model] + sizes[:-1]
        self.out_dim = sizes[-1]  # width of the output; d_model unless last_hidden_size is set
        self.layers = nn.ModuleList(nn.LSTM(i, o, batch_first=True) for i, o in zip(ins, sizes))
        self.weight_drop = cfg.weight_drop
        self.keep_raw, self.last_raw = False, None  # AWD-LSTM TAR reads the last layer's output before dropout
        input_drop = cfg.dropout if cfg.input_drop < 0 else cfg.input_drop
        self.drop_in = _dropout(input_drop, cfg.variational)
        self.drop_between = _dropout(cfg.dropout if cfg.between_drop < 0 else cfg.between_drop, cfg.variational)
        self.drop_out = _dropout(cfg.dropout, cfg.variational)
        if cfg.weight_init == "uniform":  # else nn.LSTM's own init stands (AWD-LSTM)
            for p in self.parameters():
                nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        if cfg.bias_init == "tensorflow":  # TF1 BasicLSTMCell: one bias per gate, zero-initialised
            with torch.no_grad():
                for layer in self.layers:
                    layer.bias_ih_l0.zero_()
                    layer.bias_hh_l0.zero_()
        if cfg.forget_bias:  # TF's BasicLSTMCell adds a constant to the forget-gate pre-activation: the same as a bias offset
            with torch.no_grad():
                for layer in self.layers:
                    H = layer.hidden_size
                    layer.bias_ih_l0[H: 2 * H] += cfg.forget_bias  # PyTorch gate order: input, forget, cell, output

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return [(torch.zeros(1, batch_size, l.hidden_size, device=device),
                 torch.zeros(1, batch_size, l.hidden_size, device=device)) for l in self.layers]

    @staticmethod
    def detach_state(state: State | None) -> State | None:
        return None if state is None else [(h.detach(), c.detach()) for h, c in state]

    @staticmethod
    def select_state(state: State, index: torch.Tensor) -> State:
        """Reorder/replicate the batch dimension (sampling, beam search)."""
        return [(h.index_select(1, index), c.index_select(1, index)) for h, c in state]

    def _run_layer(self, layer: nn.LSTM, x: torch.Tensor, state):
        if self.weight_drop > 0 and self.training:
            # AWD-LSTM DropConnect on W_hh: a fresh mask per forward pass, shared over time steps.
            params = dict(layer.named_parameters())
            params["weight_hh_l0"] = F.dropout(params["weight_hh_l0"], self.weight_drop, True)
            return functional_call(layer, params, (x, state))
        return layer(x, state)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(x.size(0), x.device)
        x = self.drop_in(x)  # (B, T, d_model)
        new_state = []
        for i, layer in enumerate(self.layers):
            x, (h, c) = self._run_layer(layer, x, state[i])
            new_state.append((h, c))
            if i == len(self.layers) - 1 and self.keep_raw:
                self.last_raw = x
            x = self.drop_between(x) if i < len(self.layers) - 1 else self.drop_out(x)
        return x, new_state  # (B, T, d_model)
