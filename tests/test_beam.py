"""Beam search: beam 1 = greedy, batched = unbatched, KV cache = full recomputation, exact on a tiny vocabulary."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from lmlab.core.seq2seq.config import Seq2SeqModelConfig
from lmlab.core.seq2seq.generate import beam_search, greedy_or_sample
from lmlab.core.seq2seq.model import build_seq2seq
from lmlab.core.seq2seq.prep import BOS, EOS, PAD

V = 40


pytestmark = pytest.mark.usefixtures("one_thread_module")


def tiny_model(vocab=V, seed=0):
    torch.manual_seed(seed)
    cfg = Seq2SeqModelConfig(d_model=16, encoder_layers=2, decoder_layers=2, n_heads=2, ffn_dim=32, dropout=0.0,
                             max_positions=64)
    model = build_seq2seq(cfg, vocab, vocab).double().eval()
    with torch.no_grad():  # sharper distributions than at init, so search choices matter
        model.output.weight.mul_(6.0)
    return model


def sources(n=6, seed=1, vocab=V):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(2, 9, (n,), generator=g)
    src = torch.full((n, int(lens.max()) + 1), PAD, dtype=torch.long)
    for i, length in enumerate(lens.tolist()):
        src[i, :length] = torch.randint(4, vocab, (length,), generator=g)
        src[i, length] = EOS
    return src


def test_beam_one_equals_greedy():
    model, src = tiny_model(), sources()
    greedy = greedy_or_sample(model, src, max_len_a=1.5, max_len_b=3)
    beam1 = beam_search(model, src, beam=1, max_len_a=1.5, max_len_b=3)
    assert [g[0] for g in greedy] == [b[0] for b in beam1]
    assert any(len(g[0]) > 1 for g in greedy)
    # with one hypothesis and lenpen 0 the beam score is the greedy log-prob
    beam1_raw = beam_search(model, src, beam=1, lenpen=0.0, max_len_a=1.5, max_len_b=3)
    for (_, gs), (_, bs) in zip(greedy, beam1_raw):
        assert bs == pytest.approx(gs, abs=1e-9)


def test_batched_equals_unbatched():
    model, src = tiny_model(), sources(n=5)
    batched = beam_search(model, src, beam=4, lenpen=1.0, max_len_a=1.2, max_len_b=4)
    for i in range(src.size(0)):
        row = src[i:i + 1]
        row = row[:, : int((row != PAD).sum())]  # no padding at all when alone
        alone = beam_search(model, row, beam=4, lenpen=1.0, max_len_a=1.2, max_len_b=4)
        assert alone[0][0] == batched[i][0]
        assert alone[0][1] == pytest.approx(batched[i][1], abs=1e-9)


def test_kv_cache_equals_full_recomputation():
    model, src = tiny_model(), sources()
    for kwargs in (dict(beam=5, lenpen=0.6), dict(beam=2, lenpen=1.0)):
        cached = beam_search(model, src, max_len_a=1.2, max_len_b=4, use_cache=True, **kwargs)
        full = beam_search(model, src, max_len_a=1.2, max_len_b=4, use_cache=False, **kwargs)
        assert [c[0] for c in cached] == [f[0] for f in full]
        for c, f in zip(cached, full):
            assert c[1] == pytest.approx(f[1], abs=1e-9)
    # step log-probs themselves agree
    memory, mask = model.encode(src)
    prefix = torch.cat([torch.full((src.size(0), 1), BOS), torch.randint(4, V, (src.size(0), 5))], dim=1)
    full_h = model.decode(prefix, memory, mask)
    cache = model.new_cache()
    steps = [model.decode(prefix[:, t:t + 1], memory, mask, cache, start=t) for t in range(prefix.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full_h, rtol=0, atol=1e-10)


@torch.no_grad()
def _exhaustive_best(model, src_row, max_tokens, lenpen):
    """Every output of 0..max_tokens-1 real tokens then </s>, scored by teacher forcing."""
    memory, mask = model.encode(src_row)
    best = (-float("inf"), None)
    for n in range(max_tokens):
        for body in itertools.product(range(4, model.output.weight.size(0)), repeat=n):
            y = list(body) + [EOS]
            prev = torch.tensor([[BOS] + y[:-1]])
            lp = F.log_softmax(model.output.logits(model.decode(prev, memory, mask)), -1)[0]
            logp = float(lp[torch.arange(len(y)), torch.tensor(y)].sum())
            score = logp / len(y) ** lenpen
            if score > best[0]:
                best = (score, list(body))
    return best


@pytest.mark.parametrize("lenpen", [0.0, 1.0])
def test_wide_beam_finds_exact_best_on_tiny_vocabulary(lenpen):
    vocab = 6  # 4 specials + 2 real tokens
    model = tiny_model(vocab, seed=3)
    src = torch.tensor([[4, 5, 4, EOS]])
    max_tokens = 4  # a=0, b=4: at most 3 real tokens + </s>
    score, body = _exhaustive_best(model, src, max_tokens, lenpen)
    hyp, beam_score = beam_search(model, src, beam=32, lenpen=lenpen, max_len_a=0.0, max_len_b=max_tokens)[0]
    assert hyp == body
    assert beam_score == pytest.approx(score, abs=1e-9)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model, src = tiny_model(), sources()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = greedy_or_sample(model, src, sampling=True, generator=g1)
    b = greedy_or_sample(model, src, sampling=True, generator=g2)
    assert [x[0] for x in a] == [x[0] for x in b]
    top1 = greedy_or_sample(model, src, sampling=True, top_k=1, generator=torch.Generator().manual_seed(0))
    assert [x[0] for x in top1] == [x[0] for x in greedy_or_sample(model, src)]


def test_max_len_caps_output():
    model, src = tiny_model(), sources()
    for hyp, _ in beam_search(model, src, beam=3, max_len_a=0.0, max_len_b=2):
        assert len(hyp) <= 1  # 2 tokens including </s>
