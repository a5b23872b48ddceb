"""The induced model Q̄ and the IMM loss (Muneeb & Ohannessian, NeurIPS 2024, Sec. 4 and Algorithms 1-2).

The restricted context of a position is its last token x̄; the induced model is the full model
averaged over the full contexts x that end in x̄,

    Q̄(y | x̄) = E_{x | x̄}[ Q(y | x) ]   ≈ (1/k) Σ_j q_j(y),   q_j = Q(· | x_j),  x_j ~ contexts ending in x̄,

and the IMM loss is the cross-entropy of the restricted model P̂ (the KN bigram) against it,
CE(P̂(· | x̄), Q̄(· | x̄)) = -Σ_y P̂(y | x̄) log Q̄(y | x̄).

Algorithm 1 (sampled IMM) evaluates all k contexts in one batch. Algorithm 2 (serialized IMM) gives
the same gradient one context at a time: since ∇ log Q̄(y) = Σ_j c_j(y) ∇ log q_j(y) with
c_j(y) = q_j(y) / Σ_j' q_j'(y), each context contributes -Σ_y P̂(y) c_j(y) ∇ log q_j(y), c_j held fixed.
The weights need all q_j first, so the contexts are run twice (no graph, then with a graph).

Every sampled pass runs dropout-free (the model in eval mode for that forward only, restored after): Q̄ is an
average of deterministic predictions, as in the official code, whose sampled graphs are built without dropout
(`netQ(..., fixed_unroll=False)`). Such a pass draws no random numbers, so it leaves the RNG stream of the
training forward passes alone.

Two ways to start a sampled context (`imm.sampled_start`):
- zero (`induced_log_probs`): a fixed-length window of the training stream ending in x̄, run from a zero state;
- carried (`imm_backward_carried`, the official code): for position i of the BPTT window, the last i+1 tokens
  of the sampled window, run from the LSTM state the batch row carried into this window.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from lmlab.core.imm.kn_bigram import KNBigram


class ContextIndex:
    """Every position p of the training stream with a full window tokens[p-L+1 : p+1], grouped by tokens[p]."""

    def __init__(self, tokens: np.ndarray, length: int, vocab_size: int):
        self.tokens = np.asarray(tokens)
        self.length = int(length)
        index_dtype = np.int32 if self.tokens.size < 2**31 else np.int64  # 4 bytes a position on WikiText-103
        ends = np.arange(self.length - 1, self.tokens.size, dtype=index_dtype)
        last = self.tokens[ends]
        order = np.argsort(last, kind="stable")
        self.ends = ends[order]  # positions grouped by their token
        self.indptr = np.searchsorted(last[order], np.arange(vocab_size + 1))  # group v: ends[indptr[v]:indptr[v+1]]

    def sample(self, contexts: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """k windows per restricted token, drawn uniformly with replacement among its occurrences.

        contexts: (M,) token ids -> windows (M, k, L) int64 and found (M,) bool (False: the token never
        ends a full window in the training stream; its rows hold a dummy window and must be masked).
        """
        contexts = np.asarray(contexts, dtype=np.int64)
        lo, hi = self.indptr[contexts], self.indptr[contexts + 1]
        found = hi > lo
        n = np.where(found, hi - lo, 1)
        pick = lo[:, None] + np.floor(rng.random((contexts.size, k)) * n[:, None]).astype(np.int64)
        ends = self.ends[np.minimum(pick, self.ends.size - 1)].astype(np.int64)  # (M, k)
        offsets = np.arange(-self.length + 1, 1)
        return self.tokens[ends[..., None] + offsets].astype(np.int64), found


@contextlib.contextmanager
def dropout_free(model):
    """Eval mode for the forwards inside (no dropout, no random draws), the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _last_log_probs(model, windows: torch.Tensor, state=None) -> torch.Tensor:
    """log Q(· | x) of the token after each window, dropout-free, from `state` (None: the zero state): (N, L) -> (N, V)."""
    with dropout_free(model):
        h, _ = model.hidden(windows, state)  # (N, L, d)
        logits = model.output.logits(h[:, -1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the average over k and the CE are taken in fp32
    return F.log_softmax(logits, dim=-1)


def induced_log_probs(model, windows: torch.Tensor) -> torch.Tensor:
    """log Q̄(· | x̄) from k sampled full contexts per restricted context: (M, k, L) -> (M, V)."""
    M, k, L = windows.shape
    logq = _last_log_probs(model, windows.reshape(M * k, L)).view(M, k, -1)  # (M, k, V)
    return torch.logsumexp(logq, dim=1) - math.log(k)  # log of the mean of the q_j


def restricted_cross_entropy(p_hat: torch.Tensor, log_qbar: torch.Tensor) -> torch.Tensor:
    """CE(P̂, Q̄) per restricted context: -Σ_y P̂(y) log Q̄(y), (M, V) x (M, V) -> (M,)."""
    return -(p_hat * log_qbar).sum(-1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def imm_loss_sampled(model, kn: KNBigram, contexts: torch.Tensor, windows: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Algorithm 1: mean over restricted contexts of CE(P̂(· | x̄), Q̄(· | x̄)), differentiable.

    contexts (M,), windows (M, k, L) on the model's device; mask (M,) bool drops contexts without windows.
    """
    log_qbar = induced_log_probs(model, windows)  # (M, V)
    p_hat = kn.probs(contexts, dtype=log_qbar.dtype)  # (M, V)
    ce = restricted_cross_entropy(p_hat, log_qbar)  # (M,)
    w = _weights(mask, ce)
    loss = (ce * w).sum()
    with torch.no_grad():
        kl = ((ce - entropy(p_hat)) * w).sum()
    return loss, {"imm_loss_nats": float(loss.detach()), "imm_kl_nats": float(kl)}


def imm_backward_serialized(model, kn: KNBigram, contexts: torch.Tensor, windows: torch.Tensor,
                            mask: torch.Tensor | None = None, scale: float = 1.0) -> dict[str, float]:
    """Algorithm 2: accumulate scale * ∇ (Algorithm 1's loss) into .grad, one sampled context (j) at a time.

    Memory holds one (M, L) batch of windows and two (M, V) tables, whatever k is.
    """
    M, k, L = windows.shape
    qsum = None
    with torch.no_grad():  # pass 1: Σ_j q_j
        for j in range(k):
            q = _last_log_probs(model, windows[:, j]).exp()  # (M, V)
            qsum = q if qsum is None else qsum + q
    p_hat = kn.probs(contexts, dtype=qsum.dtype)  # (M, V)
    ce = restricted_cross_entropy(p_hat, torch.log(qsum / k))  # (M,) the value Algorithm 1 would report
    w = _weights(mask, ce)
    for j in range(k):  # pass 2: the c_j-weighted log-likelihood of draw j (dropout-free: the same q_j as pass 1)
        logq = _last_log_probs(model, windows[:, j])  # (M, V)
        c = logq.detach().exp() / qsum  # c_j(y) = q_j(y) / Σ_j' q_j'(y)
        loss_j = -((p_hat * c * logq).sum(-1) * w).sum()
        (loss_j * scale).backward()
    return {"imm_loss_nats": float((ce * w).sum()), "imm_kl_nats": float(((ce - entropy(p_hat)) * w).sum())}


def carried_log_qbar(model, windows: torch.Tensor, i: int, state) -> torch.Tensor:
    """log Q̄ at position i of the BPTT window, the official way: the last i+1 tokens of each sampled window,
    run from the state its batch row carried into this window (None: zero). windows (B, k, L) -> (B, V)."""
    B, k, L = windows.shape
    history = windows[:, :, L - (i + 1):].reshape(B * k, i + 1)  # (B*k, i+1), row b's k draws together
    if state is not None:
        state = model.select_state(state, torch.arange(B, device=windows.device).repeat_interleave(k))
    logq = _last_log_probs(model, history, state).view(B, k, -1)  # (B, k, V)
    return torch.logsumexp(logq, dim=1) - math.log(k)


def imm_backward_carried(model, kn: KNBigram, contexts: torch.Tensor, windows: torch.Tensor, positions: list[int],
                         state, mask: torch.Tensor | None = None, scale: float = 1.0) -> dict[str, float]:
    """Algorithm 1 with carried-state contexts: accumulate scale * ∇ (mean over restricted contexts of
    CE(P̂, Q̄)) into .grad, one BPTT position at a time (the loss is a sum over positions, so each position's
    graph is freed before the next is built).

    contexts (B, P) = the inputs at `positions`; windows (B, P, k, L) with L >= max(positions) + 1; mask (B, P).
    """
    B, P = contexts.shape
    w = _weights(None if mask is None else mask.reshape(-1), torch.empty(B * P, dtype=torch.float64)).view(B, P)
    total, kl = 0.0, 0.0
    for p, i in enumerate(positions):
        log_qbar = carried_log_qbar(model, windows[:, p], i, state)  # (B, V)
        p_hat = kn.probs(contexts[:, p], dtype=log_qbar.dtype)  # (B, V)
        ce = restricted_cross_entropy(p_hat, log_qbar)  # (B,)
        wp = w[:, p].to(device=ce.device, dtype=ce.dtype)
        loss = (ce * wp).sum()
        (loss * scale).backward()
        total += float(loss.detach())
        kl += float(((ce.detach() - entropy(p_hat)) * wp).sum())
    return {"imm_loss_nats": total, "imm_kl_nats": kl}


def _weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Mean weights over the kept contexts: (M,)."""
    if mask is None:
        return torch.full_like(like, 1.0 / like.numel()).detach()
    m = mask.to(like.dtype)
    return (m / m.sum().clamp_min(1.0)).detach()
