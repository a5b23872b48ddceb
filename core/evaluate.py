"""Perplexity of a language model on a token stream.

Two protocols for recurrent models:

- `eval_streams` (eval-ppl): every token of the stream but the first is predicted exactly once, whatever
  the batch size. The stream is cut into `streams` contiguous segments read in parallel; segment 0 starts
  from the zero state at the first token, so with one stream each token is conditioned on the whole prefix
  (the PTB test protocol). Segment c >= 1 starts from the zero state W = min(burn_in, segment length)
  tokens before its first input (those tokens are read, not scored; eval-ppl: burn_in = bptt), so its
  tokens see at least W + 1 tokens of left context but not the whole prefix; the remainder that does not fill a segment continues the last segment's state.
  Batching therefore changes which distant context a few tokens see, never which tokens are scored.
- `eval_recurrent` (the trainer's validation, the classic PTB "batchify" convention kept bit for bit for
  existing runs): `columns` independent columns, the tail that does not fill a column dropped, and the
  first token of each column never predicted, so the token count depends on `columns`.

Transformers use a sliding window: every token is predicted with at least `context - stride` tokens of left
context (all tokens of the first window excepted); the batch size only groups windows.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lmlab.core.models.lm import LanguageModel


def batchify(stream: np.ndarray, columns: int) -> torch.Tensor:
    """1-D stream -> (columns, L) contiguous streams; the tail that does not fill a column is dropped."""
    length = len(stream) // columns
    data = torch.from_numpy(np.asarray(stream[: length * columns], dtype=np.int64))
    return data.view(columns, length)


def _result(total_nll: float, tokens: int, unk: int) -> dict:
    nats = total_nll / max(tokens, 1)
    return {"tokens": tokens, "unk_tokens": unk, "nats_per_token": nats, "bits_per_token": nats / math.log(2),
            "ppl": math.exp(min(nats, 700.0))}


@torch.no_grad()
def eval_recurrent(model: LanguageModel, stream: np.ndarray, columns: int = 10, bptt: int = 35,
                   device: torch.device | str = "cpu", unk_id: int | None = None, autocast=None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    model.eval()
    data = batchify(stream, columns).to(device)
    state = model.init_state(columns, device)
    total, count, unk = 0.0, 0, 0
    steps = max(data.size(1) - 1, 0)
    for i in range(0, steps, bptt):
        seq = min(bptt, steps - i)
        x, y = data[:, i: i + seq], data[:, i + 1: i + 1 + seq]
        with autocast() if autocast else _null():
            nll, state = model(x, y, state)
        total += nll.double().sum().item()
        count += y.numel()
        if unk_id is not None:
            unk += int((y == unk_id).sum())
        if progress:
            progress(i + seq, steps)
    return _result(total, count, unk)


def _cat_states(a, b):
    """Concatenate two recurrent states along the batch dimension (dim 1, as `select_state` indexes it)."""
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b], dim=1)
    return type(a)(_cat_states(x, y) for x, y in zip(a, b))


@torch.no_grad()
def eval_streams(model: LanguageModel, stream: np.ndarray, streams: int = 1, bptt: int = 35, burn_in: int | None = None,
                 device: torch.device | str = "cpu", unk_id: int | None = None, autocast=None,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Every token after the first scored once; `streams` contiguous segments in parallel (see the module doc).

    With P = len(stream) - 1 predictions, S = min(streams, P) segments of L = P // S inputs: segment c reads
    tokens [cL, (c+1)L) and predicts [cL+1, (c+1)L]; its state starts at zero `W = min(burn_in, L)` tokens
    before cL (c >= 1; W = bptt when burn_in is None). The P - S*L remainder tokens (< S) are predicted after
    the last segment with its state carried. With streams=1 this is exactly the old batch-1 loop.
    """
    model.eval()
    ctx = autocast if autocast else _null
    data = torch.from_numpy(np.asarray(stream, dtype=np.int64))
    n_pred = data.numel() - 1
    s = max(1, min(int(streams), n_pred))
    seg = n_pred // s
    warm = 0 if s == 1 else min(bptt if burn_in is None else int(burn_in), seg)
    inputs = data[: s * seg].view(s, seg).to(device)
    targets = data[1: s * seg + 1].view(s, seg).to(device)
    state = model.init_state(s, device)
    if warm > 0:  # segments 1..s-1 read the `warm` tokens before their start
        lead = torch.stack([data[c * seg - warm: c * seg] for c in range(1, s)]).to(device)
        with ctx():
            _, warmed = model.hidden(lead, model.init_state(s - 1, device))
        state = _cat_states(model.init_state(1, device), warmed)
    rest = n_pred - s * seg
    windows = [(i, min(bptt, seg - i)) for i in range(0, seg, bptt)]
    tail = [(s * seg + i, min(bptt, rest - i)) for i in range(0, rest, bptt)]
    total, count, unk = 0.0, 0, 0

    def score(x, y, st):
        nonlocal total, count, unk
        with ctx():
            nll, st = model(x, y, st)
        total += nll.double().sum().item()
        count += y.numel()
        if unk_id is not None:
            unk += int((y == unk_id).sum())
        return st

    done, steps = 0, len(windows) + len(tail)
    for i, seq in windows:
        state = score(inputs[:, i: i + seq], targets[:, i: i + seq], state)
        done += 1
        if progress:
            progress(done, steps)
    if tail:  # the remainder continues the last segment, whose last input was token s*seg - 1
        state = model.select_state(state, torch.tensor([s - 1], device=inputs.device))
        for i, seq in tail:
            x = data[i: i + seq].view(1, seq).to(device)
            y = data[i + 1: i + 1 + seq].view(1, seq).to(device)
            state = score(x, y, state)
            done += 1
            if progress:
                progress(done, steps)
    assert count == n_pred, (count, n_pred)
    return {**_result(total, count, unk), "streams": s, "burn_in_tokens": warm}


@torch.no_grad()
def eval_sliding(model: LanguageModel, stream: np.ndarray, context: int, stride: int | None = None, batch_size: int = 8,
                 device: torch.device | str = "cpu", unk_id: int | None = None, autocast=None,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    model.eval()
    stride = stride or context
    stride = min(stride, context)
    data = torch.from_numpy(np.asarray(stream, dtype=np.int64))
    n = data.numel() - 1  # number of predicted tokens
    windows = []  # (input start, input end, first scored position in the window)
    for begin in range(0, n, stride):
        end = min(begin + stride, n)
        start = max(0, end - context)
        windows.append((start, end, begin - start))
    total, count, unk = 0.0, 0, 0
    for i in range(0, len(windows), batch_size):
        group = windows[i: i + batch_size]
        by_len: dict[int, list] = {}
        for w in group:
            by_len.setdefault(w[1] - w[0], []).append(w)
        for length, ws in by_len.items():
            x = torch.stack([data[s:e] for s, e, _ in ws]).to(device)
            y = torch.stack([data[s + 1:e + 1] for s, e, _ in ws]).to(device)
            firsts = {first for _, _, first in ws}
            with autocast() if autocast else _null():
                h, _ = model.hidden(x)  # (B, L, d)
                if len(firsts) == 1:  # the output layer only where tokens are scored (a full window: its last stride)
                    skip = firsts.pop()
                    nll = F.pad(model.output.nll(h[:, skip:], y[:, skip:]), (skip, 0))  # (B, L), 0 where unscored
                else:
                    nll = model.output.nll(h, y)
            for row, (_, _, first) in enumerate(ws):
                total += nll[row, first:].double().sum().item()
                count += length - first
                if unk_id is not None:
                    unk += int((y[row, first:] == unk_id).sum())
        if progress:
            progress(min(i + batch_size, len(windows)), len(windows))
    return _result(total, count, unk)


def evaluate_lm(model: LanguageModel, stream: np.ndarray, *, columns: int = 10, bptt: int = 35, stride: int | None = None,
                batch_size: int = 8, device="cpu", unk_id=None, autocast=None, progress=None, every_token: bool = False,
                burn_in: int | None = None) -> dict:
    """Perplexity of `stream`. Recurrent models: `every_token=True` scores every token once with `columns`
    parallel segments (`eval_streams`, what eval-ppl reports); the default is the trainer's validation
    protocol (`eval_recurrent`, columns that drop the tail), unchanged so that existing runs' numbers stay
    bit-identical. Transformers: sliding windows, `batch_size` windows per forward pass."""
    if len(stream) < 2:
        from lmlab.core.errors import LmlabError
        raise LmlabError("cannot evaluate perplexity on fewer than 2 tokens")
    t0 = time.perf_counter()
    if model.context is None and every_token:
        result = eval_streams(model, stream, columns, bptt, burn_in, device, unk_id, autocast, progress)
    elif model.context is None:
        columns = max(1, min(columns, (len(stream) - 1) // 2))
        result = eval_recurrent(model, stream, columns, bptt, device, unk_id, autocast, progress)
    else:
        result = eval_sliding(model, stream, model.context, stride, batch_size, device, unk_id, autocast, progress)
    seconds = time.perf_counter() - t0  # the scoring loop only (as fairseq-eval-lm reports it), not load time
    return {**result, "seconds": seconds, "tokens_per_s": result["tokens"] / max(seconds, 1e-9)}


def unk_count(stream: np.ndarray, unk_id: int | None) -> int:
    """Occurrences of <unk> among the predicted tokens (every token but the first)."""
    if unk_id is None:
        return 0
    return int(np.count_nonzero(np.asarray(stream[1:]) == unk_id))


def unigram_ppl(train: np.ndarray, stream: np.ndarray, vocab_size: int, unk_id: int | None = None) -> dict:
    """Add-one-smoothed unigram perplexity: the floor a language model must beat."""
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    ids = np.asarray(stream[1:], dtype=np.int64)  # same tokens an LM predicts
    return _result(float(-logp[ids].sum()), int(ids.size), unk_count(stream, unk_id))


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
