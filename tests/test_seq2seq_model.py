"""Transformer seq2seq parts: label smoothing by hand, inverse-sqrt schedule, tying, padding invariance."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.core.errors import LmlabError
from lmlab.core.seq2seq.config import Seq2SeqModelConfig, Seq2SeqScheduleConfig
from lmlab.core.seq2seq.model import ProjectedTiedOutput, build_seq2seq, label_smoothed_nll, sinusoidal_positions
from lmlab.core.seq2seq.prep import EOS, PAD
from lmlab.core.seq2seq.train import inverse_sqrt


pytestmark = pytest.mark.usefixtures("one_thread_module")


def small(**kw):
    base = dict(d_model=16, encoder_layers=1, decoder_layers=1, n_heads=2, ffn_dim=32, dropout=0.0, max_positions=32)
    return Seq2SeqModelConfig(**{**base, **kw})


def test_label_smoothing_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 1.0, -1.0], [0.5, 0.5, 0.5, 0.5]]])  # (1, 2, V=4)
    target = torch.tensor([[2, PAD]])  # the pad position must not count
    loss, nll = label_smoothed_nll(logits, target, eps=0.1)
    lp = torch.log_softmax(torch.tensor([2.0, 0.0, 1.0, -1.0]), 0)
    assert float(nll) == pytest.approx(float(-lp[2]))
    assert float(loss) == pytest.approx(float(0.9 * -lp[2] + 0.1 * -lp.mean()))
    uniform = torch.zeros(1, 3, 7)
    loss, nll = label_smoothed_nll(uniform, torch.tensor([[4, 5, 6]]), eps=0.3)
    assert float(loss) == pytest.approx(3 * math.log(7)) and float(nll) == pytest.approx(3 * math.log(7))
    x, y = torch.randn(2, 5, 11), torch.randint(1, 11, (2, 5))
    assert float(label_smoothed_nll(x, y, 0.0)[0]) == pytest.approx(float(F.cross_entropy(x.view(-1, 11), y.view(-1), reduction="sum")), rel=1e-6)


def test_inverse_sqrt_schedule():
    f = inverse_sqrt(Seq2SeqScheduleConfig(warmup_steps=100, warmup_init_lr=0.0), peak_lr=1e-3)
    assert f(0) == 0.0 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(1.0)
    assert f(400) == pytest.approx(0.5) and f(10000) == pytest.approx(0.1)
    # Vaswani eq. 3 is the same curve: d^-0.5 * min(s^-0.5, s * w^-1.5) / its peak
    d, w = 512, 4000
    vaswani = lambda s: d ** -0.5 * min(s ** -0.5, s * w ** -1.5)
    g = inverse_sqrt(Seq2SeqScheduleConfig(warmup_steps=w, warmup_init_lr=0.0), peak_lr=vaswani(w))
    for s in (1, 1000, 4000, 9000, 50000):
        assert g(s) * vaswani(w) == pytest.approx(vaswani(s))


def test_sinusoid_matches_paper_formula():
    pe = sinusoidal_positions(10, 8)
    assert float(pe[3, 2]) == pytest.approx(math.sin(3 / 10000 ** (2 / 8)))
    assert float(pe[3, 5]) == pytest.approx(math.cos(3 / 10000 ** (4 / 8)))


def test_tying_shares_one_table():
    m = build_seq2seq(small(), 50, 50)
    assert m.src_embed is m.tgt_embed and m.output.weight is m.tgt_embed.table.weight
    n_all = sum(p.numel() for p in m.parameters())
    untied = build_seq2seq(small(share_all_embeddings=False, share_decoder_input_output=False), 50, 50)
    assert sum(p.numel() for p in untied.parameters()) - n_all == 2 * 50 * 16
    with pytest.raises(LmlabError, match="joint vocabulary"):
        build_seq2seq(small(), 50, 60)
    sep = build_seq2seq(small(share_all_embeddings=False), 50, 60)
    assert sep.output.weight is sep.tgt_embed.table.weight and sep.output.weight.shape == (60, 16)


def test_define_embedding_plugs_in_with_projected_tie():
    cfg = small(embed_scale=False)
    cfg.embedding.kind = "define"
    cfg.embedding.define.map_dim, cfg.embedding.define.expand_dim, cfg.embedding.define.layers = 8, 32, 2
    cfg.embedding.define.max_groups = 2
    m = build_seq2seq(cfg, 50, 50)
    assert isinstance(m.output, ProjectedTiedOutput) and m.output.weight.shape == (50, 8)
    assert m.output.weight is m.tgt_embed.adaptive_input.tie_weight
    src, prev = torch.randint(4, 50, (3, 6)), torch.randint(4, 50, (3, 5))
    logits = m(src, prev)
    assert logits.shape == (3, 5, 50)
    logits.sum().backward()
    assert m.output.weight.grad is not None and m.output.weight.grad.abs().sum() > 0


def test_padding_and_future_do_not_leak():
    m = build_seq2seq(small(), 30, 30).double().eval()
    src = torch.tensor([[5, 6, 7, EOS]])
    padded = torch.tensor([[5, 6, 7, EOS, PAD, PAD]])
    prev = torch.tensor([[1, 8, 9, 10]])
    torch.testing.assert_close(m(src, prev), m(padded, prev))
    changed = prev.clone()
    changed[0, 3] = 11  # a later token cannot change earlier outputs
    torch.testing.assert_close(m(src, prev)[:, :3], m(src, changed)[:, :3])
