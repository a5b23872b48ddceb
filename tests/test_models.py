import pytest
import torch

from lmlab.core.generate import filter_logits, sample_continuations, sequence_logprob
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig


def _model(kind, vocab=40, **kw):
    cfg = ModelConfig(kind=kind, d_model=16, n_layers=2)
    cfg.lstm.hidden_size = 24
    cfg.transformer.n_heads = 2
    cfg.transformer.context = 32
    cfg.output.tie = True
    for k, v in kw.items():
        setattr(cfg.lstm, k, v)
    torch.manual_seed(0)
    return build_language_model(cfg, vocab)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_incremental_state_equals_full_sequence(kind):
    model = _model(kind).eval()
    x = torch.randint(0, 40, (3, 12))
    full, _ = model(x)
    assert full.shape == (3, 12, 40)
    state, steps = None, []
    for t in range(12):
        logits, state = model(x[:, t:t + 1], state=state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_nll_is_cross_entropy_and_gradients_reach_every_parameter(kind):
    model = _model(kind)
    x, y = torch.randint(0, 40, (2, 10)), torch.randint(0, 40, (2, 10))
    nll, _ = model(x, y)
    logits, _ = model.eval()(x)
    model.train()
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), y.reshape(-1), reduction="none").view(2, 10)
    torch.testing.assert_close(model.eval()(x, y)[0], ref)
    nll.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_tied_output_shares_the_embedding_table():
    model = _model("lstm")
    assert model.output.weight is model.embed.table.weight


def test_output_bias_off_leaves_the_tied_output_without_one():
    """model.output.bias=false (fairseq's tied transformer_lm output): no bias parameter, V fewer parameters, and the
    logits are h W^T alone."""
    cfg = ModelConfig(kind="transformer", d_model=16, n_layers=1)
    cfg.transformer.n_heads, cfg.transformer.context, cfg.output.tie = 2, 32, True
    with_bias = build_language_model(cfg, 40)
    cfg.output.bias = False
    without = build_language_model(cfg, 40)
    assert "output.bias" in with_bias.state_dict() and "output.bias" not in without.state_dict()
    assert sum(p.numel() for p in with_bias.parameters()) - sum(p.numel() for p in without.parameters()) == 40
    h = torch.randn(3, 16)
    torch.testing.assert_close(without.output.logits(h), h @ without.embed.table.weight.t())


def test_transformer_is_causal():
    model = _model("transformer").eval()
    x = torch.randint(0, 40, (1, 10))
    a, _ = model(x)
    x2 = x.clone()
    x2[0, 7] = (x2[0, 7] + 1) % 40
    b, _ = model(x2)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_awd_regularisers_are_active_only_in_training():
    model = _model("lstm", weight_drop=0.5, variational=True, embed_drop=0.2)
    model.embed_drop = 0.2
    x = torch.randint(0, 40, (2, 6))
    torch.manual_seed(1)
    a, _ = model(x)
    torch.manual_seed(2)
    b, _ = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])


def test_filter_logits_top_k_and_top_p_known_values():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.75))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.75 <= 0.8
    kept = ~torch.isinf(filter_logits(logits, top_p=0.81))
    assert kept.tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_top1_sampling_is_greedy_and_seeded_sampling_repeats(kind):
    model = _model(kind).eval()
    prefix = torch.randint(0, 40, (2, 3))
    out = sample_continuations(model, prefix, max_new_tokens=5, top_k=1)
    tokens = prefix.clone()
    for _ in range(5):
        logits, _ = model(tokens)
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, tokens[:, 3:])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample_continuations(model, prefix, num_samples=4, max_new_tokens=6, generator=g1),
                       sample_continuations(model, prefix, num_samples=4, max_new_tokens=6, generator=g2))


def test_sequence_logprob_sums_token_logprobs():
    model = _model("transformer").eval()
    prefix, cont = torch.randint(0, 40, (2, 3)), torch.randint(0, 40, (2, 4))
    logp = sequence_logprob(model, prefix, cont)
    logits, _ = model(torch.cat([prefix, cont], 1))
    lp = logits.log_softmax(-1)
    manual = sum(lp[:, 2 + i].gather(1, cont[:, i:i + 1]).squeeze(1) for i in range(4))
    torch.testing.assert_close(logp, manual)


def test_awd_lstm_between_layer_dropout_and_torch_weight_init():
    """AWD-LSTM: dropouth (between layers) is its own value, and the LSTM weights keep torch's U(±1/sqrt(H)) while
    the embedding and output use init_range; the defaults (Zaremba) are unchanged."""
    import torch
    from lmlab.core.models.config import LSTMConfig
    from lmlab.core.models.lstm import LSTMBody
    torch.manual_seed(0)
    awd = LSTMBody(8, 3, LSTMConfig(hidden_size=16, dropout=0.4, between_drop=0.25, init_range=0.01, weight_init="torch"))
    assert awd.drop_between.p == 0.25 and awd.drop_out.p == 0.4
    w = awd.layers[0].weight_hh_l0
    assert w.abs().max() > 0.01 and w.abs().max() <= 1 / 16 ** 0.5  # torch's bound, not init_range
    zaremba = LSTMBody(8, 3, LSTMConfig(hidden_size=16, dropout=0.4, init_range=0.01))
    assert zaremba.drop_between.p == 0.4
    assert all(p.abs().max() <= 0.01 for p in zaremba.parameters())


def test_draw_categorical_follows_the_probabilities_and_never_draws_a_zero():
    from lmlab.core.generate import draw_categorical
    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]]).repeat(20000, 1)
    counts = torch.bincount(draw_categorical(probs, torch.Generator().manual_seed(0)), minlength=6).double() / 20000
    assert counts[[0, 2, 5]].sum() == 0  # the last entries' zeros too: a draw rounding up to the total falls back
    torch.testing.assert_close(counts, probs[0].double(), atol=0.012, rtol=0)  # ~3.5 sd of a 0.6 frequency
    unnormalised = torch.tensor([[2.0, 0.0, 6.0]]).repeat(20000, 1)  # rows need not sum to 1
    counts = torch.bincount(draw_categorical(unnormalised, torch.Generator().manual_seed(1)), minlength=3) / 20000
    assert counts[1] == 0 and abs(float(counts[2]) - 0.75) < 0.012
    one_hot = torch.zeros(5, 7)
    one_hot[torch.arange(5), torch.tensor([6, 0, 3, 6, 1])] = 1.0
    assert draw_categorical(one_hot).tolist() == [6, 0, 3, 6, 1]


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_sampled_first_tokens_follow_the_models_conditional(kind):
    """Each prefix is read once and its state copied to its rows: the first sampled token of every row is drawn
    from the model's P(x | prefix) (rows of two prefixes, 4000 samples each)."""
    model = _model(kind, vocab=6).eval()
    prefix = torch.randint(0, 6, (2, 5), generator=torch.Generator().manual_seed(0))
    out = sample_continuations(model, prefix, num_samples=4000, max_new_tokens=2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(prefix)[0][:, -1].softmax(-1)  # (2, V)
    for row in range(2):
        freq = torch.bincount(out[row * 4000:(row + 1) * 4000, 0], minlength=6).float() / 4000
        torch.testing.assert_close(freq, expected[row], atol=0.03, rtol=0)


def test_a_transformer_past_its_context_rereads_the_last_context_minus_one_tokens():
    """Generation beyond the context recomputes from the last context - 1 tokens of prefix + output (each time,
    not from a history that already holds earlier outputs)."""
    cfg = ModelConfig(kind="transformer", d_model=16, n_layers=1)
    cfg.transformer.n_heads, cfg.transformer.context = 2, 6
    torch.manual_seed(0)
    model = build_language_model(cfg, 30).eval()
    windows, real_forward = [], model.forward

    def spy(tokens, targets=None, state=None):
        if state is None and tokens.size(1) > 1:
            windows.append(tokens.clone())
        return real_forward(tokens, targets, state=state)

    model.forward = spy
    prefix = torch.randint(0, 30, (2, 5))  # as long as the window: a second recomputation still reads prefix tokens
    out = sample_continuations(model, prefix, max_new_tokens=14, generator=torch.Generator().manual_seed(0))
    full = torch.cat([prefix, out], 1)
    assert len(windows) >= 3
    for window in windows:  # each recomputation: exactly the 5 tokens that precede its position
        end = next(e for e in range(5, full.size(1) + 1) if torch.equal(full[:, e - 5:e], window))
        assert end >= 5
