"""The chunked fused output layer + cross-entropy (core/models/fused_ce.py, issue #20) equals the plain path: loss to
1e-6 relative and gradients to 1e-5, with and without a bias, for chunks that do and do not divide the rows, and
through a model built with model.output.loss_chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.core.models.fused_ce import chunked_linear_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


def _plain(h, w, b, t):
    return F.cross_entropy(F.linear(h, w, b).reshape(-1, w.size(0)).float(), t.reshape(-1), reduction="none").view(t.shape)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
@pytest.mark.parametrize("reduction", ["mean", "weighted"])
def test_fused_equals_plain_loss_and_gradients(bias, chunk, reduction, monkeypatch):
    """mean: the gradients taken in forward, only scaled in backward; weighted (a different upstream gradient per
    row): dW and db by the recomputing pass. Either way the logits of a chunk are computed once (mean) or twice."""
    import lmlab.core.models.fused_ce as fused_ce
    torch.manual_seed(0)
    h = torch.randn(3, 40, 16, requires_grad=True)
    w = (torch.randn(500, 16) * 0.3).requires_grad_()
    b = (torch.randn(500) * 0.1).requires_grad_() if bias else None
    t = torch.randint(0, 500, (3, 40))
    weights = torch.rand(3, 40) if reduction == "weighted" else torch.full((3, 40), 1 / 120)
    calls, logits = [], fused_ce._logits
    monkeypatch.setattr(fused_ce, "_logits", lambda *a, **k: calls.append(k["out"]) or logits(*a, **k))
    plain = _plain(h, w, b, t)
    (plain * weights).sum().backward()
    grads = [x.grad.clone() for x in (h, w, b) if x is not None]
    for x in (h, w, b):
        if x is not None:
            x.grad = None
    fused = chunked_linear_cross_entropy(h, w, b, t, chunk)
    assert fused.shape == t.shape
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    (fused * weights).sum().backward()
    for got, want in zip([x.grad for x in (h, w, b) if x is not None], grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    chunks = -(-120 // chunk)
    assert len(calls) == (chunks if reduction == "mean" else 2 * chunks)
    # every chunk's logits in one buffer (no fresh 100 MB tensor and its page faults per chunk); calls holds them all
    assert len({out.untyped_storage().data_ptr() for out in calls[:chunks]}) == 1
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(chunked_linear_cross_entropy(h, w, b, t, chunk), plain.detach(), rtol=1e-6, atol=1e-6)


def test_model_with_loss_chunk_trains_as_the_plain_one():
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.config import ModelConfig
    cfg = ModelConfig(kind="lstm", d_model=16, n_layers=1)
    cfg.lstm.hidden_size, cfg.lstm.dropout = 16, 0.0
    torch.manual_seed(1)
    plain = build_language_model(cfg, 300)
    cfg.output.loss_chunk = 10
    torch.manual_seed(1)
    fused = build_language_model(cfg, 300)
    assert fused.output.loss_chunk == 10 and plain.output.loss_chunk == 0
    tokens = torch.randint(0, 300, (4, 13))
    losses = []
    for model in (plain, fused):
        nll, _ = model(tokens[:, :-1], tokens[:, 1:])
        nll.mean().backward()
        losses.append((nll.detach(), model.embed.table.weight.grad.clone()))
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(losses[1][1], losses[0][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "weighted"])
def test_fused_under_bf16_autocast_is_the_autocast_plain_path(reduction):
    """Under autocast the matmuls run in bf16 as the plain path's linear does, the softmax in fp32 (the bias too, where
    the plain path adds it in bf16): loss and gradients agree with the autocast plain path to bf16 rounding (it failed
    with a dtype error before)."""
    torch.manual_seed(0)
    h = torch.randn(64, 16, requires_grad=True)
    w = (torch.randn(100, 16) * 0.3).requires_grad_()
    b = (torch.randn(100) * 0.1).requires_grad_()
    t = torch.randint(0, 100, (64,))
    weights = torch.rand(64) if reduction == "weighted" else torch.full((64,), 1 / 64)
    grads = []
    for fused in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nll = chunked_linear_cross_entropy(h, w, b, t, 24) if fused else \
                F.cross_entropy(F.linear(h, w, b).float(), t, reduction="none")
        assert nll.dtype == torch.float32
        (nll * weights).sum().backward()
        grads.append((nll.detach(), [x.grad.clone() for x in (h, w, b)]))
        for x in (h, w, b):
            x.grad = None
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-2, atol=1e-2)
    for got, want in zip(grads[1][1], grads[0][1]):
        assert float((got - want).norm()) <= 1e-2 * float(want.norm())
