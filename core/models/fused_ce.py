"""Output layer + cross-entropy without materialising the (tokens x vocabulary) logits (issue #20).

Per chunk of `chunk` token rows, forward computes logits = h W^T + b, keeps only their logsumexp (one float a row)
and returns nll = logsumexp - logit[target]; backward recomputes the chunk's logits and applies
d nll / d logits = softmax - onehot(target), accumulating dW, db and writing dh. Peak extra memory is one chunk's
logits instead of all of them; the arithmetic is the unfused path's, in another order (loss equal to ~1e-6
relative, gradients ~1e-5: tests/test_fused_ce.py).
"""

from __future__ import annotations

import torch


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk):  # h (N, d), weight (V, d), bias (V,) | None, targets (N,)
        lse = torch.empty(h.size(0), dtype=torch.float32, device=h.device)
        nll = torch.empty_like(lse)
        for i in range(0, h.size(0), chunk):
            logits = _logits(h[i:i + chunk], weight, bias)  # (c, V) fp32
            lse[i:i + chunk] = torch.logsumexp(logits, dim=-1)
            nll[i:i + chunk] = lse[i:i + chunk] - logits.gather(1, targets[i:i + chunk, None]).squeeze(1)
        ctx.save_for_backward(h, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.chunk, ctx.has_bias = chunk, bias is not None
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        h, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if bias is not None and ctx.needs_input_grad[2] else None
        for i in range(0, h.size(0), ctx.chunk):
            h_c = h[i:i + ctx.chunk]
            g = torch.exp(_logits(h_c, weight, bias) - lse[i:i + ctx.chunk, None])  # softmax (c, V)
            g.scatter_add_(1, targets[i:i + ctx.chunk, None], torch.full_like(lse[i:i + ctx.chunk, None], -1.0))
            g.mul_(grad_nll[i:i + ctx.chunk, None].float())  # d loss / d logits
            if grad_h is not None:
                grad_h[i:i + ctx.chunk] = (g @ weight.float()).to(h.dtype)
            if grad_w is not None:
                grad_w.addmm_(g.t(), h_c.float())
            if grad_b is not None:
                grad_b += g.sum(0)
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None, None, None)


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = h.float() @ weight.float().t()
    return out + bias.float() if bias is not None else out


def chunked_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """-log softmax(h W^T + b)[target] per row: h (..., d), targets (...) -> (...) fp32, `chunk` rows at a time."""
    shape = targets.shape
    nll = _ChunkedLinearCE.apply(h.reshape(-1, h.size(-1)), weight, bias, targets.reshape(-1), chunk)
    return nll.view(shape)
