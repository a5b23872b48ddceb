"""Output layer + cross-entropy without materialising the (tokens x vocabulary) logits (issue #20).

Per chunk of `chunk` token rows, forward computes logits = h W^T + b and their logsumexp and returns
nll = logsumexp - logit[target]. When gradients are wanted it also takes the chunk's d nll / d logits =
softmax - onehot(target) while the logits are at hand and turns it into the chunk's rows of dh and its share of dW
and db: the backward then only scales them by the upstream gradient (dh row by row; dW and db by the one value a
mean or sum over tokens gives every row), so no logits are recomputed and no (tokens x V) tensor ever exists.
An upstream gradient that differs between rows (a weighted loss) gets dW and db by the recomputing pass instead.
Peak extra memory is one chunk's logits plus dW; the arithmetic is the unfused path's in another order (loss equal
to ~1e-6 relative, gradients ~1e-5: tests/test_fused_ce.py).
"""

from __future__ import annotations

import torch


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk, eager, mm_dtype):  # h (N, d), weight (V, d), bias (V,) | None
        lse = torch.empty(h.size(0), dtype=torch.float32, device=h.device)
        nll = torch.empty_like(lse)
        want_h, want_w, want_b = eager and ctx.needs_input_grad[0], eager and ctx.needs_input_grad[1], \
            eager and bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if want_b else None
        w_mm = weight.to(mm_dtype)
        buf = torch.empty(min(chunk, h.size(0)), weight.size(0), dtype=torch.float32, device=h.device)
        for i in range(0, h.size(0), chunk):
            h_c, t_c = h[i:i + chunk], targets[i:i + chunk, None]
            e = _logits(h_c, w_mm, bias, out=buf[:h_c.size(0)])  # (c, V) fp32, one buffer for every chunk
            target_logit = e.gather(1, t_c).squeeze(1)
            row_max = e.amax(dim=1, keepdim=True)
            total = e.sub_(row_max).exp_().sum(dim=1)  # e = exp(logits - max), in place
            lse[i:i + chunk] = row_max.squeeze(1) + total.log()
            nll[i:i + chunk] = lse[i:i + chunk] - target_logit
            if eager:  # d nll / d logits = softmax - onehot = (e - total * onehot) / total, the 1/total taken after the matmuls
                e.scatter_add_(1, t_c, -total[:, None])
                _accumulate(e, h_c, w_mm, grad_h, grad_w, grad_b, i, row_scale=total.reciprocal())
        ctx.save_for_backward(h, weight, bias if bias is not None else torch.empty(0), targets, lse,
                              *(x if x is not None else torch.empty(0) for x in (grad_h, grad_w, grad_b)))
        ctx.chunk, ctx.has_bias, ctx.eager, ctx.mm_dtype = chunk, bias is not None, eager, mm_dtype
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        h, weight, bias, targets, lse, eager_h, eager_w, eager_b = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        grad_nll = grad_nll.float()
        uniform = ctx.eager and grad_nll.numel() > 0 and bool((grad_nll == grad_nll[0]).all())
        grad_h = grad_w = grad_b = None
        if ctx.eager and ctx.needs_input_grad[0]:
            grad_h = (eager_h * grad_nll[:, None]).to(h.dtype)  # dh of a row scales with that row's upstream gradient
        if uniform:
            scale = grad_nll[0]
            grad_w = (eager_w * scale).to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_b = (eager_b * scale).to(bias.dtype) if bias is not None and ctx.needs_input_grad[2] else None
            return grad_h, grad_w, grad_b, None, None, None, None
        # recompute the logits chunk by chunk (no eager gradients, or rows weighted unequally)
        want_h = ctx.needs_input_grad[0] and grad_h is None
        grad_h32 = torch.empty(h.shape, dtype=torch.float32, device=h.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if bias is not None and ctx.needs_input_grad[2] else None
        w_mm = weight.to(ctx.mm_dtype)
        buf = torch.empty(min(ctx.chunk, h.size(0)), weight.size(0), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for i in range(0, h.size(0), ctx.chunk):
                h_c = h[i:i + ctx.chunk]
                g = _logits(h_c, w_mm, bias, out=buf[:h_c.size(0)]).sub_(lse[i:i + ctx.chunk, None]).exp_()  # softmax (c, V)
                g.scatter_add_(1, targets[i:i + ctx.chunk, None], torch.full_like(lse[i:i + ctx.chunk, None], -1.0))
                g.mul_(grad_nll[i:i + ctx.chunk, None])  # d loss / d logits
                _accumulate(g, h_c, w_mm, grad_h32, grad_w, grad_b, i)
        grad_h = grad_h32.to(h.dtype) if want_h else grad_h
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None, None, None, None, None)


def _logits(h: torch.Tensor, w_mm: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """(c, V) fp32 logits: the matmul in w_mm's dtype (fp32, or the autocast dtype), the bias added in fp32. Written
    into `out` where given: a buffer reused chunk after chunk is memory the process already has (a fresh 100 MB
    tensor per chunk costs its page faults every time)."""
    if w_mm.dtype == torch.float32:
        if bias is not None:
            return torch.addmm(bias.float(), h.float(), w_mm.t(), out=out)  # the bias added inside the GEMM
        return torch.mm(h.float(), w_mm.t(), out=out)
    low = h.to(w_mm.dtype) @ w_mm.t()
    out = low.float() if out is None else out.copy_(low)
    return out.add_(bias.float()) if bias is not None else out


def _accumulate(g, h_c, w_mm, grad_h, grad_w, grad_b, i: int, row_scale: torch.Tensor | None = None) -> None:
    """Add one chunk's d loss / d logits, row r being row_scale[r] * g[r] (row_scale None: 1), (c, V) fp32, to the
    fp32 gradients: rows i.. of dh, dW, db. The row scale goes on the (c, d) side of each product, never over g."""
    rows = slice(i, i + g.size(0))
    h_scaled = h_c.float() if row_scale is None else h_c.float() * row_scale[:, None]
    if w_mm.dtype == torch.float32:
        if grad_h is not None:
            torch.mm(g, w_mm, out=grad_h[rows])
        if grad_w is not None:
            grad_w.addmm_(g.t(), h_scaled)
    else:  # the matmuls in the autocast dtype, as autocast would run them, accumulated in fp32
        g_mm = g.to(w_mm.dtype)
        if grad_h is not None:
            grad_h[rows] = (g_mm @ w_mm).float()
        if grad_w is not None:
            grad_w += (g_mm.t() @ h_scaled.to(w_mm.dtype)).float()
    if grad_h is not None and row_scale is not None:
        grad_h[rows] *= row_scale[:, None]
    if grad_b is not None:
        if row_scale is None:
            grad_b += g.sum(0)
        else:
            grad_b.addmv_(g.t(), row_scale)


def chunked_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """-log softmax(h W^T + b)[target] per row: h (..., d), targets (...) -> (...) fp32, `chunk` rows at a time.
    Under autocast the matmuls run in its dtype (as the plain path's linear would) and the softmax in fp32."""
    shape = targets.shape
    device = h.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    eager = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (h, weight, bias))
    with torch.autocast(device, enabled=False):  # the dtypes are chosen here, not per op
        nll = _ChunkedLinearCE.apply(h.reshape(-1, h.size(-1)), weight, bias, targets.reshape(-1), chunk, eager, mm_dtype)
    return nll.view(shape)
