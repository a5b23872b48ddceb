"""Contiguous BPTT batches: the train stream is cut into `batch_size` parallel columns; window i of an
epoch is columns[:, i*bptt : i*bptt + bptt] (inputs) and the same shifted by one (targets).
Under data parallelism each rank reads its own slice of the columns, so the global batch is the same
as a single process's and the carried LSTM state of a column never changes rank."""

from __future__ import annotations

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
        self.windows_per_epoch = (length - 1 + bptt - 1) // bptt
        self.tokens_per_window_global = batch_size * bptt

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.bptt
        seq = min(self.bptt, self.columns.size(1) - 1 - start)
        return self.columns[:, start: start + seq], self.columns[:, start + 1: start + 1 + seq]


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
