"""DeFINE (Mehta et al., ICLR 2020): group linear maps, the mixer, layer widths, caching, gradients."""

import pytest
import torch

from lmlab.core.errors import LmlabError
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig
from lmlab.core.models.define import (DefineEmbedding, GroupLinear, LayerSpec, cache_define_state_dict,
                                      define_layout, split_mix)
from lmlab.core.models.lm import count_parameters

VARIANTS = ("hgt", "linear", "group-linear", "group-linear-shuffle", "hierarchical", "hgt-no-mixer", "hgt-residual")


def test_group_linear_equals_block_diagonal_linear():
    torch.manual_seed(0)
    glt = GroupLinear(12, 8, groups=4)
    x = torch.randn(3, 5, 12)
    dense = glt.dense_weight()  # (8, 12)
    assert dense.shape == (8, 12)
    # off-diagonal blocks are zero: output group j only sees input chunk j
    assert dense[0:2, 3:].abs().sum() == 0 and dense[2:4, :3].abs().sum() == 0
    expected = x @ dense.t() + glt.bias.flatten()
    torch.testing.assert_close(glt(x).flatten(-2), expected, rtol=1e-5, atol=1e-6)


def test_glt_shuffle_lets_every_group_reach_every_group_at_the_cost_of_glt():
    """GLT + Shuffle (the paper's ablation): GLT's layers and parameters, with a channel shuffle between layers, so a
    group of layer 2 reads every group of layer 1 (plain GLT: only its own, so map chunk j reaches only group j)."""
    from lmlab.core.models.define import channel_shuffle
    assert channel_shuffle(torch.arange(6.0), 2).tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    units = {}
    for variant in ("group-linear", "group-linear-shuffle"):
        torch.manual_seed(0)
        units[variant] = DefineEmbedding(50, 16, n=16, k=32, layers=2, max_groups=4, variant=variant, dropout=0.0)
    plain, shuffled = units["group-linear"], units["group-linear-shuffle"]
    assert count_parameters(plain) == count_parameters(shuffled) and plain.specs == shuffled.specs
    for unit, chunks_reached in ((plain, 1), (shuffled, 4)):
        e = torch.randn(3, 16, requires_grad=True)  # the map's output, 4 chunks of 4
        y = unit.layers[0](e)  # (3, 24): 4 groups of 6
        y = unit.layers[1](channel_shuffle(y, 4) if unit is shuffled else y)  # (3, 32): 4 groups of 8
        (grad,) = torch.autograd.grad(y[:, :8].sum(), e)  # layer 2's first group
        assert int((grad.abs().reshape(3, 4, 4).sum(dim=(0, 2)) > 0).sum()) == chunks_reached
    tokens = torch.randint(0, 50, (2, 5))
    assert not torch.allclose(plain(tokens), shuffled(tokens))  # same weights, other routing


def test_minus_reduce_feeds_the_expansion_to_the_context_model():
    """The '- Reduce' ablation: no k -> m layer (k x m + m fewer unit parameters); the context model reads k-wide
    inputs, so d_model must be k, and the official layout (whose layer N is the reduce) refuses it."""
    torch.manual_seed(0)
    full = DefineEmbedding(50, 32, n=16, k=32, layers=2, max_groups=4, dropout=0.0)
    torch.manual_seed(0)
    bare = DefineEmbedding(50, 32, n=16, k=32, layers=2, max_groups=4, dropout=0.0, reduce=False)
    assert count_parameters(full) - count_parameters(bare) == 32 * 32 + 32
    tokens = torch.randint(0, 50, (2, 5))
    h = bare.layers[1](split_mix(bare.adaptive_input(tokens) * bare.map_scale, bare.layers[0](bare.adaptive_input(tokens) * bare.map_scale), 2))
    torch.testing.assert_close(bare(tokens), h)  # the last expansion layer's output, as it is
    assert bare.export_table().table.weight.shape == (50, 32)
    with pytest.raises(LmlabError, match="set model.d_model=32"):
        DefineEmbedding(50, 24, n=16, k=32, layers=2, max_groups=4, reduce=False)
    with pytest.raises(LmlabError, match="reduce=false is for layout=paper"):
        DefineEmbedding(50, 32, n=16, k=32, layers=2, max_groups=4, reduce=False, layout="official")


def test_layout_known_widths_groups_and_mixer_inputs():
    # n=8, k=32, N=3, g_max=4: k_l = 16, 24, 32; g_l = 4, 2, 1; inputs n, n + k_1, n + k_2
    assert define_layout(8, 32, 3, 4, "hgt") == [LayerSpec(8, 16, 4), LayerSpec(24, 24, 2), LayerSpec(32, 32, 1)]
    # without the skip, layer l reads only y_(l-1)
    assert [s.in_dim for s in define_layout(8, 32, 3, 4, "hierarchical")] == [8, 16, 24]
    assert [s.groups for s in define_layout(8, 32, 3, 4, "group-linear")] == [4, 4, 4]
    assert [s.groups for s in define_layout(8, 32, 3, 4, "linear")] == [1, 1, 1]
    # g_l = max(floor(g_max / 2^(l-1)), 1) for g_max = 8 over 5 layers
    assert [s.groups for s in define_layout(64, 512, 5, 8, "hgt")] == [8, 4, 2, 1, 1]


def test_cyclic_schedule_restarts_the_halving_at_g_max():
    from lmlab.core.models.define import group_schedule
    assert group_schedule(7, 16, "hgt", "cyclic") == [16, 8, 4, 2, 1, 16, 8]
    assert group_schedule(3, 8, "hgt", "cyclic") == group_schedule(3, 8, "hgt", "halving") == [8, 4, 2]
    assert group_schedule(5, 4, "group-linear", "cyclic") == [4] * 5


def test_official_layout_known_widths():
    # n=256, k=1024, N=3, m=256, g_max=8: layers 1..2 expand to int(linspace(256, 1024, 3)[1:]) = 640, 1024
    # (multiples of max(g_l, g_(l+1), 8)); layer 3 reduces the mixed [e ; y_2] (256 + 1024) to m with g_3 = 2
    assert define_layout(256, 1024, 3, 8, "hgt", "cyclic", "official", 256) == [
        LayerSpec(256, 640, 8), LayerSpec(896, 1024, 4), LayerSpec(1280, 256, 2)]
    # widths rounded up: int(128 + 896 / 6) = 277 -> 288 (16 groups next)
    assert define_layout(128, 1024, 7, 16, "hgt", "cyclic", "official", 400)[0] == LayerSpec(128, 288, 16)
    assert [s.in_dim for s in define_layout(256, 1024, 3, 8, "hierarchical", "cyclic", "official", 256)] == [256, 640, 1024]
    with pytest.raises(LmlabError, match="layers >= 2"):
        define_layout(8, 32, 1, 4, "hgt", "cyclic", "official", 16)


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_layout_shapes_counts_and_gradients(variant):
    torch.manual_seed(0)
    emb = DefineEmbedding(30, 16, n=8, k=32, layers=3, max_groups=4, variant=variant, schedule="cyclic",
                          layout="official", activation="swish")
    tokens = torch.randint(0, 30, (2, 7))
    out = emb(tokens)
    assert out.shape == (2, 7, 16)
    out.square().sum().backward()
    assert emb.adaptive_input.tables[0].grad[tokens.flatten()].abs().sum() > 0
    specs = emb.specs
    expected = 30 * 8 + sum(s.in_dim * s.out_dim // s.groups + s.out_dim for s in specs)  # map, weights, biases
    expected += sum(2 * s.out_dim // s.groups for s in specs[:-1])  # LayerNorms; the reduce has none
    assert count_parameters(emb) == expected


def test_official_reduce_reads_the_mixed_input():
    # with the mixer the reduce's group j sees chunk j of e: changing e's first chunk only moves group 0's output
    torch.manual_seed(0)
    emb = DefineEmbedding(10, 8, n=4, k=8, layers=2, max_groups=2, schedule="cyclic", layout="official", dropout=0.0)
    assert emb.reduce.groups == 1 and emb.specs[-1] == LayerSpec(4 + 8, 8, 1)
    emb2 = DefineEmbedding(10, 8, n=4, k=8, layers=2, max_groups=4, schedule="cyclic", layout="official")
    assert [s.groups for s in emb2.specs] == [4, 2] and emb2.specs[-1] == LayerSpec(12, 8, 2)


def test_swish_activation_is_x_sigmoid_x():
    from lmlab.core.models.define import ACTIVATIONS
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(ACTIVATIONS["swish"](x), x * torch.sigmoid(x))


def test_lstm_last_hidden_size_ties_to_the_narrow_map_without_projection():
    m = ModelConfig(kind="lstm", d_model=16, n_layers=2)
    m.lstm.hidden_size, m.lstm.last_hidden_size = 24, 8
    m.embedding.kind = "define"
    m.embedding.define.map_dim, m.embedding.define.expand_dim, m.embedding.define.layers = 8, 32, 3
    m.output.kind, m.output.tie = "adaptive", True
    lm = build_language_model(m, 40)
    assert lm.body.out_dim == 8 and lm.body.layers[-1].hidden_size == 8 and lm.output.in_proj is None
    assert lm.output.table0 is lm.embed.adaptive_input.tables[0]
    tokens = torch.randint(0, 40, (3, 5))
    nll, state = lm(tokens, tokens)
    assert nll.shape == (3, 5) and state[-1][0].shape == (1, 3, 8)
    m.embedding.kind, m.output.kind = "standard", "linear"  # a 16-wide table cannot tie to an 8-wide output
    with pytest.raises(LmlabError, match="last_hidden_size"):
        build_language_model(m, 40)


def test_lstm_default_last_layer_is_d_model_wide():
    from lmlab.core.models.config import LSTMConfig
    from lmlab.core.models.lstm import LSTMBody
    torch.manual_seed(0)
    a = LSTMBody(16, 3, LSTMConfig(hidden_size=24))
    torch.manual_seed(0)
    b = LSTMBody(16, 3, LSTMConfig(hidden_size=24, last_hidden_size=16))  # = d_model: the same model
    assert a.out_dim == 16 and [l.hidden_size for l in a.layers] == [24, 24, 16]
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)


def test_seq2seq_share_map_only_shares_the_map_not_the_unit():
    from lmlab.core.seq2seq.config import Seq2SeqModelConfig
    from lmlab.core.seq2seq.model import build_seq2seq
    cfg = Seq2SeqModelConfig(d_model=16, encoder_layers=1, decoder_layers=1, n_heads=2, ffn_dim=32, share_map_only=True)
    cfg.embedding.kind = "define"
    cfg.embedding.define.map_dim, cfg.embedding.define.expand_dim, cfg.embedding.define.layers = 8, 32, 2
    model = build_seq2seq(cfg, 50, 50)
    src, tgt = model.src_embed, model.tgt_embed
    assert src is not tgt and src.adaptive_input.tables[0] is tgt.adaptive_input.tables[0]
    assert src.reduce.weight is not tgt.reduce.weight
    assert model.output.weight is tgt.adaptive_input.tables[0]  # tied through a d_model -> n projection
    whole = build_seq2seq(Seq2SeqModelConfig(**{**cfg.__dict__, "share_map_only": False}), 50, 50)
    unit = count_parameters(src) - 50 * 8
    assert count_parameters(model) == count_parameters(whole) + unit
    out = model(torch.randint(4, 50, (2, 5)), torch.randint(4, 50, (2, 4)))
    assert out.shape == (2, 4, 50)


def test_layout_rejects_indivisible_widths():
    with pytest.raises(LmlabError, match="divisible"):
        define_layout(6, 32, 3, 4, "hgt")


def test_split_mix_routes_chunk_j_of_both_inputs_to_group_j():
    e = torch.arange(4.0)  # n = 4
    y = 100 + torch.arange(6.0)  # k = 6
    mixed = split_mix(e, y, groups=2)
    assert mixed.tolist() == [0, 1, 100, 101, 102, 2, 3, 103, 104, 105]


def test_per_group_parameter_count_matches_sum_of_n_l_k_l_over_g_l():
    emb = DefineEmbedding(50, 16, n=8, k=32, layers=3, max_groups=4)
    weights = sum(layer.glt.weight.numel() for layer in emb.layers)
    assert weights == 8 * 16 // 4 + 24 * 24 // 2 + 32 * 32 // 1 == 1344
    # whole module: map table + (weights + biases + LayerNorm) + reduce
    extra = sum(l.glt.bias.numel() + 2 * l.spec.out_dim // l.spec.groups for l in emb.layers)
    assert count_parameters(emb) == 50 * 8 + 1344 + extra + 32 * 16 + 16


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_gradients_reach_the_map_table(variant):
    torch.manual_seed(0)
    emb = DefineEmbedding(30, 12, n=8, k=32, layers=3, max_groups=4, variant=variant)
    tokens = torch.randint(0, 30, (2, 7))
    out = emb(tokens)
    assert out.shape == (2, 7, 12) and emb.out_dim == 12
    out.square().sum().backward()
    grad = emb.adaptive_input.tables[0].grad
    used = torch.zeros(30, dtype=torch.bool)
    used[tokens.flatten()] = True
    assert grad[used].abs().sum(-1).gt(0).all()  # every looked-up row gets a gradient
    assert grad[~used].abs().sum() == 0  # and nothing else


def test_mixer_variant_differs_from_plain_concatenation():
    torch.manual_seed(0)
    a = DefineEmbedding(30, 12, n=8, k=32, layers=3, max_groups=4, variant="hgt", dropout=0.0)
    b = DefineEmbedding(30, 12, n=8, k=32, layers=3, max_groups=4, variant="hgt-no-mixer", dropout=0.0)
    b.load_state_dict(a.state_dict())  # same shapes, same weights: only the routing differs
    tokens = torch.arange(30).view(3, 10)
    assert not torch.allclose(a(tokens), b(tokens))


def test_adaptive_map():
    emb = DefineEmbedding(100, 16, n=16, k=32, layers=2, max_groups=2, cutoffs=[20, 60], factor=2.0)
    assert emb.adaptive_input.dims == [16, 8, 4]
    assert emb(torch.tensor([[0, 25, 99]])).shape == (1, 3, 16)


def test_export_table_equals_live_module_in_eval_mode():
    torch.manual_seed(0)
    emb = DefineEmbedding(70, 12, n=8, k=32, layers=3, max_groups=4, cutoffs=[10, 30], factor=2.0, dropout=0.3)
    emb.train()
    table = emb.export_table(chunk=16)  # several chunks; eval mode inside, training mode restored
    assert emb.training
    assert count_parameters(table) == 70 * 12
    emb.eval()
    tokens = torch.randint(0, 70, (4, 9))
    torch.testing.assert_close(table(tokens), emb(tokens), rtol=0, atol=1e-6)


def test_cached_checkpoint_gives_the_same_lm_outputs():
    torch.manual_seed(0)
    m = ModelConfig(kind="lstm", d_model=16, n_layers=1)
    m.lstm.hidden_size = 16
    m.embedding.kind = "define"
    m.embedding.define.map_dim, m.embedding.define.expand_dim, m.embedding.define.layers = 8, 32, 3
    m.output.kind, m.output.tie = "adaptive", True  # tied to DeFINE's map table through d_model -> n
    lm = build_language_model(m, 40).eval()
    assert lm.output.table0 is lm.embed.adaptive_input.tables[0]
    state, cached_cfg = cache_define_state_dict(lm.state_dict(), m, 40)
    assert cached_cfg.embedding.kind == "standard" and not cached_cfg.output.tie
    cached = build_language_model(cached_cfg, 40).eval()
    cached.load_state_dict(state)
    tokens = torch.randint(0, 40, (3, 6))
    with torch.no_grad():
        torch.testing.assert_close(cached(tokens, tokens)[0], lm(tokens, tokens)[0], rtol=0, atol=1e-5)


DEFINE_PRESETS = ["awd-lstm-ptb", "awd-lstm-define-ptb", "demo,demo-define", "lstm-define-wt103-n256",
                  "lstm-define-wt103-n384", "lstm-define-wt103-n512", "transformer-xl-define-wt103",
                  "transformer-base-define-wt103"]


@pytest.mark.parametrize("chain", DEFINE_PRESETS)
def test_presets_parse_and_validate(chain):
    from lmlab.core.config import resolve
    from lmlab.core.train.config import TrainConfig
    cfg = resolve(TrainConfig, "train-lm", [chain])
    if "define" in chain:
        assert cfg.model.embedding.kind == "define"
        d = cfg.model.embedding.define
        define_layout(d.map_dim, d.expand_dim, d.layers, d.max_groups, d.variant, d.schedule, d.layout,
                      cfg.model.d_model)  # widths split evenly


def test_ptb_preset_embedding_count_by_hand():
    from lmlab.core.config import resolve
    from lmlab.core.train.config import TrainConfig
    cfg = resolve(TrainConfig, "train-lm", ["awd-lstm-define-ptb"])
    with torch.device("meta"):
        lm = build_language_model(cfg.model, 10000)
    # map 10000 x 128; official layout, g = 16, 8, 4, 2, 1, 16, 8: layers 1-6 widen 128 -> 1024 (k_l =
    # int(linspace(128, 1024, 7)[l]) rounded up to multiples of max(g_l, g_(l+1), 8)), each reads [e ; y_(l-1)];
    # layer 7 reduces [e ; y_6] (1152) to m = 400
    outs, groups = (288, 432, 576, 728, 880, 1024, 400), (16, 8, 4, 2, 1, 16, 8)
    ins = (128,) + tuple(128 + o for o in outs[:-1])
    weights = sum(i * o // g for i, o, g in zip(ins, outs, groups))
    assert weights == 1_237_056
    layer_norms = 2 * sum(o // g for o, g in zip(outs[:-1], groups[:-1]))  # the reduce has none
    expected = 10000 * 128 + weights + sum(outs) + layer_norms
    assert count_parameters(lm.embed) == expected == 2_524_432


def test_cache_define_checkpoint_round_trips_through_the_config():
    from lmlab.core.config import from_dict, to_dict
    from lmlab.core.models.define import cache_define_checkpoint
    torch.manual_seed(0)
    m = ModelConfig(kind="lstm", d_model=16, n_layers=1)
    m.lstm.hidden_size = 16
    m.embedding.kind = "define"
    m.embedding.define.map_dim, m.embedding.define.expand_dim, m.embedding.define.layers = 8, 32, 2
    m.output.tie = False
    lm = build_language_model(m, 40).eval()
    ckpt = {"config": {"model": to_dict(m), "seed": 1}, "model": lm.state_dict(), "vocab_size": 40,
            "optimizer": {"state": {}}, "kind": "lm"}
    out = cache_define_checkpoint(ckpt)
    assert "optimizer" not in out and out["config"]["seed"] == 1
    cached = build_language_model(from_dict(ModelConfig, out["config"]["model"], "model"), 40).eval()
    cached.load_state_dict(out["model"])
    assert count_parameters(cached.embed) == 40 * 16
    tokens = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(cached(tokens)[0], lm(tokens)[0], rtol=0, atol=1e-5)
