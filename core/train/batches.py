"""Contiguous BPTT batches: the train stream is cut into `batch_size` parallel columns; window i of an
epoch is columns[:, i*bptt : i*bptt + bptt] (inputs) and the same shifted by one (targets).
Under data parallelism each rank reads its own slice of the columns, so the global batch is the same
as a single process's and the carried LSTM state of a column never changes rank.

With AWD-LSTM's variable-length BPTT (`VariableBPTT`) a window is addressed by its start position in the
columns instead of its index: its length is drawn afresh for every window."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lmlab.core.errors import LmlabError


class StreamBatches:
    def __init__(self, stream: np.ndarray, batch_size: int, bptt: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise LmlabError(batch_not_divisible(batch_size, world_size))
        length = len(stream) // batch_size
        if length < 2:
            raise LmlabError(f"the train split ({len(stream)} tokens) is too small for data.batch_size={batch_size}")
        per_rank = batch_size // world_size
        cols = torch.from_numpy(np.asarray(stream[: length * batch_size], dtype=np.int64)).view(batch_size, length)
        self.columns = cols[rank * per_rank: (rank + 1) * per_rank].contiguous()  # (B / world, L)
        self.bptt = bptt
        self.batch_size = batch_size  # global, over every rank
        self.positions = length - 1  # input positions of an epoch: every target 1..L-1 once
        self.windows_per_epoch = (length - 1 + bptt - 1) // bptt
        self.tokens_per_window_global = batch_size * bptt

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The index-th fixed-length window: span(index * bptt, bptt)."""
        return self.span(index * self.bptt, self.bptt)

    def span(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs columns[:, start : start + length] and targets one further, cut short at the epoch's end."""
        seq = min(length, self.positions - start)
        return self.columns[:, start: start + seq], self.columns[:, start + 1: start + 1 + seq]


class VariableBPTT:
    """AWD-LSTM's variable-length backpropagation through time (Merity, Keskar & Socher, ICLR 2018, Sec. 4.1;
    the official salesforce/awd-lstm-lm main.py, `train`): each window's base length is bptt with probability
    0.95 and bptt / 2 otherwise; its length is max(5, int(N(base, 5))) (int truncates toward zero), and that
    update's lr is multiplied by length / bptt, so that short windows do not weigh more per token than long
    ones. Every window of an epoch starts where the last one ended, so an epoch still covers the stream
    once, in a number of windows that varies.

    The draws come from a generator of their own, seeded by the run's seed, so the global torch/numpy
    streams (dropout masks) are untouched, every data-parallel rank draws the same lengths, and its
    state rides in the checkpoint for a bit-exact resume."""

    def __init__(self, bptt: int, seed: int):
        self.bptt = bptt
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def draw(self) -> int:
        base = self.bptt if self.rng.random() < 0.95 else self.bptt / 2
        return max(5, int(self.rng.normal(base, 5)))

    def state_dict(self) -> dict[str, Any]:
        return self.rng.bit_generator.state  # plain ints and strings

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def expected_window_length(bptt: int) -> float:
    """E[max(5, int(N(base, 5)))] under VariableBPTT's 95/5 mixture of base = bptt and bptt / 2: the mean
    window length behind the updates-per-epoch estimate (progress bars, `schedule.epochs` -> total updates).
    For bptt = 70 it is 67.75: int() of a positive draw floors it, half a token less on average."""
    def mean(base: float) -> float:
        cdf = lambda x: 0.5 * (1 + math.erf((x - base) / (5 * math.sqrt(2))))  # noqa: E731
        top = int(base) + 60  # 12 standard deviations
        # int(X) <= 5 exactly when X < 6 (negative draws included): all of those become 5
        return 5 * cdf(6) + sum(k * (cdf(k + 1) - cdf(k)) for k in range(6, top))
    return 0.95 * mean(bptt) + 0.05 * mean(bptt / 2)


def batch_not_divisible(batch_size: int, world_size: int) -> str:
    """The error for a global batch that the processes cannot share: the nearest global batch sizes that
    work at this world size, and the process counts that work with this batch (a paper preset's batch is
    part of its result, so changing the process count is often the better fix)."""
    lower, upper = batch_size // world_size * world_size, (batch_size // world_size + 1) * world_size
    sizes = " or ".join(f"--set data.batch_size={b}" for b in (lower, upper) if b > 0)
    counts = ", ".join(str(n) for n in range(1, batch_size + 1) if batch_size % n == 0)
    return (f"data.batch_size={batch_size} is the global batch and must be divisible by the number of processes "
            f"({world_size}); the nearest that work are {sizes}, or keep it and run a number of processes that divides "
            f"{batch_size} ({counts})")
