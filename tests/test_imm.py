"""IMM (Muneeb & Ohannessian 2024): context sampling, Algorithm 2 == Algorithm 1, zero KL at Q̄ = P̂, the
objective's schedule, and the KN-noising baseline (Xie et al. 2017)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from lmlab.core.imm.induced import (ContextIndex, carried_log_qbar, imm_backward_serialized, imm_loss_sampled,
                                    induced_log_probs)
from lmlab.core.imm.kn_bigram import KNBigram
from lmlab.core.imm.noising import KNNoisingObjective
from lmlab.core.imm.objective import IMMObjective
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig
from lmlab.core.train.config import TrainConfig

V = 12


@pytest.fixture
def float64():
    """Build and run models in float64 (the LSTM's zero state follows the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def stream(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, size=n)


def tiny_model(kind="lstm", dropout=0.0, seed=0):
    torch.manual_seed(seed)
    m = ModelConfig(kind=kind, d_model=16, n_layers=2)
    m.lstm.hidden_size, m.lstm.dropout, m.lstm.init_range = 16, dropout, 0.3
    m.transformer.n_heads, m.transformer.dropout, m.transformer.context = 2, dropout, 32
    return build_language_model(m, V)


def test_context_index_windows_end_in_the_restricted_token():
    tokens = stream()
    idx = ContextIndex(tokens, 7, V)
    ctx = np.array([3, 3, 5, 0])
    windows, found = idx.sample(ctx, 9, np.random.default_rng(0))
    assert windows.shape == (4, 9, 7) and found.all()
    assert (windows[..., -1] == ctx[:, None]).all()
    text = tokens.tolist()
    for w in windows.reshape(-1, 7):  # every window is a real stretch of the stream
        assert any(text[p:p + 7] == w.tolist() for p in range(len(text) - 6))
    # a token that never ends a full window is reported, not silently sampled
    only_first = np.concatenate([[V - 1], np.zeros(50, dtype=int)])
    _, found = ContextIndex(only_first, 5, V).sample(np.array([V - 1, 0]), 2, np.random.default_rng(0))
    assert found.tolist() == [False, True]


def _grads(model):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_algorithm2_gradient_equals_algorithm1(kind, float64):
    tokens = stream()
    kn = KNBigram.from_tokens(tokens, V)
    model = tiny_model(kind).train()
    contexts = torch.tensor([1, 4, 4, 7, 0])
    windows, found = ContextIndex(tokens, 9, V).sample(contexts.numpy(), 6, np.random.default_rng(1))
    windows, mask = torch.from_numpy(windows), torch.from_numpy(found)

    model.zero_grad()
    loss, m1 = imm_loss_sampled(model, kn, contexts, windows, mask)
    (0.3 * loss).backward()
    g1 = _grads(model)
    model.zero_grad()
    m2 = imm_backward_serialized(model, kn, contexts, windows, mask, scale=0.3)
    g2 = _grads(model)
    assert m2["imm_loss_nats"] == pytest.approx(m1["imm_loss_nats"], rel=1e-10)
    assert sum(g.abs().sum() for g in g1) > 1e-3
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_sampled_passes_are_dropout_free(float64):
    # the official code builds its sampled graphs without dropout (netQ(..., fixed_unroll=False)), so Q̄ is an
    # average of dropout-free predictions: in training mode with dropout 0.65, Q̄ equals the eval-mode one,
    # draws no random numbers, and leaves the model in training mode; Algorithm 2 then equals Algorithm 1
    # under dropout with k > 1 too (both see the same deterministic q_j)
    tokens = stream()
    kn = KNBigram.from_tokens(tokens, V)
    model = tiny_model("lstm", dropout=0.65).train()
    contexts = torch.tensor([2, 5, 9, 5])
    windows = torch.from_numpy(ContextIndex(tokens, 8, V).sample(contexts.numpy(), 4, np.random.default_rng(2))[0])
    state = [(0.5 * torch.randn(1, 2, 16), 0.5 * torch.randn(1, 2, 16)) for _ in range(2)]
    torch.manual_seed(5)
    rng_before = torch.get_rng_state()
    got = induced_log_probs(model, windows)
    got_carried = carried_log_qbar(model, windows[:2], 3, state)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(m.training for m in model.modules())
    model.eval()
    torch.testing.assert_close(got, induced_log_probs(model, windows), rtol=1e-12, atol=0)
    torch.testing.assert_close(got_carried, carried_log_qbar(model, windows[:2], 3, state), rtol=1e-12, atol=0)
    model.train()
    model.zero_grad()
    imm_loss_sampled(model, kn, contexts, windows)[0].backward()
    g1 = _grads(model)
    model.zero_grad()
    imm_backward_serialized(model, kn, contexts, windows)
    for a, b in zip(g1, _grads(model)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_carried_contexts_are_the_last_tokens_after_the_carried_state(float64):
    # the official sampled history at BPTT position i: the last i+1 tokens of the sampled window, run from
    # the state the batch row carried in. For an LSTM that is the same as running the row's real prefix
    # followed by those tokens from zero.
    model = tiny_model().eval()
    tokens = stream()
    windows = torch.from_numpy(ContextIndex(tokens, 7, V).sample(np.array([3, 8]), 2, np.random.default_rng(4))[0])  # (2, 2, 7)
    prefix = torch.from_numpy(tokens[100:110].reshape(2, 5))
    with torch.no_grad():
        _, state = model(prefix)
        got = carried_log_qbar(model, windows, 2, state)  # position 2: the last 3 tokens of each window
        for b in range(2):
            q = [model(torch.cat([prefix[b], windows[b, j, -3:]])[None])[0][0, -1].softmax(-1) for j in range(2)]
            torch.testing.assert_close(got[b].exp(), torch.stack(q).mean(0))


class BigramTable(nn.Module):
    """A 'full' model whose prediction depends on the last token only, through a V x V logit table."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(logits.clone())
        object.__setattr__(self, "output", self)  # not registered as a submodule (no cycle for .train()/.eval())

    def hidden(self, tokens, state=None):
        return nn.functional.one_hot(tokens, V).to(self.table.dtype), state

    def logits(self, h):
        return h @ self.table


def test_imm_kl_is_zero_and_stationary_when_induced_model_equals_bigram():
    # Q(y | x) = P̂(y | last token of x) for every x => Q̄ = P̂: the IMM loss equals H(P̂) (its minimum over
    # Q̄), so the reported KL = CE - H(P̂) is 0 and the gradient vanishes; a perturbed table moves both.
    tokens = stream()
    kn = KNBigram.from_tokens(tokens, V)
    log_p = torch.log(kn.probs(torch.arange(V), dtype=torch.float64))
    assert torch.isfinite(log_p).all()
    contexts = torch.tensor([0, 3, 3, 8, 11])
    windows = torch.from_numpy(ContextIndex(tokens, 5, V).sample(contexts.numpy(), 4, np.random.default_rng(0))[0])

    model = BigramTable(log_p)
    loss, m = imm_loss_sampled(model, kn, contexts, windows)
    p = kn.probs(contexts, dtype=torch.float64)
    assert m["imm_loss_nats"] == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-12)
    assert abs(m["imm_kl_nats"]) < 1e-12
    loss.backward()
    assert model.table.grad.abs().max() < 1e-12

    bad = BigramTable(log_p + 0.5 * torch.randn(V, V, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    loss, m = imm_loss_sampled(bad, kn, contexts, windows)
    loss.backward()
    assert m["imm_kl_nats"] > 1e-3 and bad.table.grad.abs().max() > 1e-3


def test_induced_model_is_the_average_of_the_sampled_predictions(float64):
    model = tiny_model().eval()
    windows = torch.from_numpy(ContextIndex(stream(), 6, V).sample(np.array([4, 6]), 3, np.random.default_rng(0))[0])
    with torch.no_grad():
        got = induced_log_probs(model, windows).exp()
        each = torch.stack([model(windows[:, j])[0][:, -1].softmax(-1) for j in range(3)], 1)  # (2, 3, V)
    torch.testing.assert_close(got, each.mean(1))


def _cfg(**imm):
    cfg = TrainConfig()
    cfg.data.bptt = 6
    for k, v in imm.items():
        setattr(cfg.imm, k, v)
    return cfg


def test_objective_schedule_and_terms():
    tokens = stream()
    kn = KNBigram.from_tokens(tokens, V)
    model = tiny_model().train()
    obj = IMMObjective(_cfg(every=2, k=3, j=2, start_below_ppl=90.0, lr_at_start=0.5), tokens, V, kn, torch.device("cpu"))
    x = torch.from_numpy(tokens[:24].reshape(4, 6))
    y = torch.from_numpy(tokens[1:25].reshape(4, 6))
    loss, state, m = obj(model, x, y, None, 0)
    assert m["imm_active"] == 0 and loss.item() == pytest.approx(m["loss_nats"])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    obj.on_eval(1, 120.0, opt)
    assert not obj.active and opt.param_groups[0]["lr"] == 1.0
    obj.on_eval(2, 89.0, opt)
    assert obj.active and opt.param_groups[0]["lr"] == 0.5

    # call 1: the official single-sample term, lambda * CE((1 - g) onehot + g p_cont, Q)
    projections, project = [], model.output.logits
    model.output.logits = lambda h: projections.append(len(projections) + 1) or project(h)
    loss, _, m = obj(model, x, y, None, 3)
    projections[:] = [len(projections)]
    del model.output.logits
    logq = model(x)[0].log_softmax(-1).double()
    g = torch.from_numpy(kn.gamma)[x]
    target = (1 - g)[..., None] * nn.functional.one_hot(y, V) + g[..., None] * torch.from_numpy(kn.p_cont)
    smooth = -(target * logq).sum(-1).mean()
    smooth = float(smooth.detach())
    assert m["imm_smoothed_nats"] == pytest.approx(smooth, rel=1e-5)
    assert loss.item() == pytest.approx(m["loss_nats"] + 0.2 * smooth, rel=1e-5)
    assert projections == [1]  # the shared forward: one output projection serves the CE and the smoothed term
    # call 2: sampled IMM on the last j=2 positions of each of the 4 rows
    loss, _, m = obj(model, x, y, None, 4)
    assert loss.item() == pytest.approx(m["loss_nats"] + 0.2 * m["imm_loss_nats"], rel=1e-5)
    assert m["imm_kl_nats"] > 0
    # j = 0 (the official unrolls_to_use = all): every position of every row is a restricted context
    every = IMMObjective(_cfg(j=0), tokens, V, kn, torch.device("cpu"))
    contexts, windows, found, positions = every._draw(x)
    assert positions == list(range(6)) and torch.equal(contexts, x) and windows.shape == (24, 10, 6)
    assert (windows[..., -1] == x.reshape(-1, 1)).all()
    # resume: same activation, call count and sampler position
    again = IMMObjective(_cfg(every=2, k=3, j=2), tokens, V, kn, torch.device("cpu"))
    again.load_state_dict(obj.state_dict())
    assert again.active and again.calls == obj.calls
    assert again.rng.random() == obj.rng.random()
    # evaluation mode: plain cross-entropy
    model.eval()
    loss, _, m = obj(model, x, y, None, 5)
    assert "imm_loss_nats" not in m and loss.item() == pytest.approx(m["loss_nats"])


def test_kn_noising_rate_and_replacement_distribution():
    tokens = stream(2000)
    kn = KNBigram.from_tokens(tokens, V)
    obj = KNNoisingObjective(kn, 0.2, "absolute", torch.device("cpu"))
    distinct = np.bincount(kn.rows, minlength=V)
    expected = 0.2 * distinct / kn.context_count  # gamma_AD(v) = gamma0 N1+(v.) / c(v)
    torch.testing.assert_close(obj.replace_prob, torch.tensor(expected, dtype=torch.float32))
    torch.manual_seed(0)
    x = torch.full((400, 500), 3)
    y = torch.full((400, 500), 3)
    nx, ny, hit = obj.noise(x, y)
    assert float(hit.float().mean()) == pytest.approx(expected[3], abs=0.005)
    assert (nx[~hit] == 3).all() and (ny[~hit] == 3).all()
    n = int(hit.sum())
    freq = torch.bincount(nx[hit], minlength=V).double() / n
    q = torch.from_numpy(kn.p_cont)
    assert ((freq - q).abs() < 5 * (q * (1 - q) / n).sqrt() + 1e-9).all()  # within 5 standard errors
    assert (nx[hit] != ny[hit]).float().mean() > 0.5  # input and target drawn independently
    modified = KNNoisingObjective(kn, 0.2, "modified", torch.device("cpu"))
    torch.testing.assert_close(modified.replace_prob, torch.tensor(0.2 * kn.gamma, dtype=torch.float32))
