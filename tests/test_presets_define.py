"""The DeFINE paper presets against the paper's parameter counts (Mehta et al., ICLR 2020).

Table 1a (LSTM on WikiText-103), Table 1c (AWD-LSTM on PTB), Table 2 (Transformer-XL on WikiText-103),
Table 3 (Transformer on WMT14 En-De) and the Table 4 ablation. Models are built on the meta device from
the preset and a vocabulary size alone (no data, no memory): WikiText-103 267,735 words, PTB 10,000,
WMT14 32,000 (the presets' joint BPE; the paper does not state its vocabulary). Paper figures are in
millions as printed. Where the paper's own figures cannot all hold at once, docs/define.md says why.
"""

import pytest
import torch

from lmlab.core.config import resolve
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.lm import count_parameters
from lmlab.core.train.config import TrainConfig

WT103, PTB, WMT = 267_735, 10_000, 32_000
M = 1e6


def _lm_config(chain: str, **define):
    cfg = resolve(TrainConfig, "train-lm", [chain])
    for key, value in define.items():
        setattr(cfg.model.embedding.define, key, value)
    return cfg


def lm_counts(cfg, vocab: int) -> dict[str, int]:
    """Parameters of the context model, the DeFINE unit (without its map), input-output (map + output
    layer, tied tables once) and in total, as the paper's tables split them."""
    with torch.device("meta"):
        lm = build_language_model(cfg.model, vocab)
    total, body = count_parameters(lm), count_parameters(lm.body)
    embed = count_parameters(lm.embed)
    unit = embed - count_parameters(lm.embed.adaptive_input) if hasattr(lm.embed, "adaptive_input") else 0
    return {"body": body, "unit": unit, "io": total - body - unit, "total": total}


def close(ours: float, paper_millions: float, rel: float) -> bool:
    """`ours` (a count) is within `rel` of the paper's figure (in millions)."""
    return abs(ours / M - paper_millions) <= rel * paper_millions


# Table 1a rows R3-R5: (n, N) -> DeFINE, context model, input-output (tied), total
TABLE_1A = {"lstm-define-wt103-n256": (256, 3, 0.41, 23.36, 9.25, 33.02),
            "lstm-define-wt103-n384": (384, 7, 1.83, 24.73, 13.90, 40.46),
            "lstm-define-wt103-n512": (512, 11, 3.89, 26.24, 18.55, 48.69)}


@pytest.mark.parametrize("chain", TABLE_1A)
def test_table_1a_lstm_presets(chain):
    n, N, unit, context, io, total = TABLE_1A[chain]
    cfg = _lm_config(chain)
    m, d = cfg.model, cfg.model.embedding.define
    assert (d.map_dim, d.expand_dim, d.layers, m.d_model) == (n, 1024, N, n)  # n, k, N, m = n
    assert (m.n_layers, m.lstm.hidden_size, d.map, m.output.kind, m.output.tie) == (4, 1024, "adaptive", "adaptive", True)
    assert m.embedding.adaptive.cutoffs == [20000, 40000, 200000] and m.embedding.adaptive.factor == 4
    got = lm_counts(cfg, WT103)
    assert close(got["body"], context, 0.001), got  # the 4-layer LSTM exactly
    # our adaptive softmax adds one bias per word (fairseq's, whose counts the paper gives, has none)
    assert close(got["io"] - WT103, io, 0.001), got
    assert close(got["unit"], unit, 0.16), got  # 0.42 / 1.97 / 4.49M (docs/define.md)
    assert close(got["total"], total, 0.02), got


def test_table_1c_awd_lstm_baseline():
    got = lm_counts(resolve(TrainConfig, "train-lm", ["awd-lstm-ptb"]), PTB)
    assert close(got["total"], 24, 0.02) and round(got["total"] / M, 2) == 24.22, got


def _ptb_define():
    cfg = resolve(TrainConfig, "train-lm", ["awd-lstm-ptb", "awd-lstm-define-ptb"])
    m, d = cfg.model, cfg.model.embedding.define
    assert (d.map_dim, d.expand_dim, d.layers, m.d_model) == (128, 1024, 7, 400)  # Sec. 4.1.2: n, k, N, m
    assert (m.n_layers, m.lstm.hidden_size, m.lstm.last_hidden_size, m.output.tie) == (3, 1150, 128, True)
    return lm_counts(cfg, PTB)


def test_table_1c_awd_lstm_define_ptb():
    got = _ptb_define()
    # AWD-LSTM 400 -> 1150 -> 1150 -> 128 (4h(i + h) + 8h per layer), the 10k x 128 map tied to the output, its bias
    lstm = sum(4 * h * (i + h) + 8 * h for i, h in ((400, 1150), (1150, 1150), (1150, 128)))
    assert got["body"] == lstm == 18_383_760
    assert got["body"] + got["io"] == lstm + PTB * 128 + PTB == 19_673_760
    assert got["unit"] == 1_244_432, got  # n=128, k=1024, N=7, m=400 under the official layer rule
    assert close(got["total"], 20, 0.05), got  # 20.92M: 17% fewer than the baseline in the paper, 14% here


@pytest.mark.xfail(strict=True, reason="the paper's 20M leaves < 0.8M for a DeFINE unit with k=1024, N=7, m=400; "
                                       "ours is 1.24M (its Table 1a gives 1.83M at N=7, n=384): docs/define.md")
def test_table_1c_ptb_total_within_2_percent():
    assert close(_ptb_define()["total"], 20, 0.02)


def _txl():
    cfg = resolve(TrainConfig, "train-lm", ["transformer-xl-define-wt103"])
    m, d = cfg.model, cfg.model.embedding.define
    assert (d.map_dim, d.expand_dim, d.layers, m.d_model) == (256, 4096, 3, 384)  # Table 2: n, k, N, m
    assert (m.n_layers, m.transformer.ffn_dim, m.embedding.adaptive.factor) == (16, 1920, 1)  # full-width map
    return cfg, lm_counts(cfg, WT103)


def test_table_2_transformer_xl_define():
    cfg, got = _txl()
    assert close(got["unit"], 1.92, 0.12), got  # 1.71M
    assert close(got["io"], 69.20, 0.01), got  # map 267,735 x 256 + output: one 384 -> 256 projection, not 4
    # Our pre-LN block has 384-wide heads with biases and learned positions; Transformer-XL's (the paper's
    # 36.25M) has 10 x 41-wide heads without biases, a relative-position projection and two bias vectors.
    d, ffn, L, T = 384, 1920, 16, cfg.model.transformer.context
    ours = L * (d * 3 * d + 3 * d + d * d + d + 2 * d * ffn + ffn + d + 4 * d) + T * d + 2 * d
    xl = L * (d * 3 * 410 + 410 * d + d * 410 + 2 * d * ffn + ffn + d + 4 * d) + 2 * 410
    assert got["body"] == ours and round(xl / M, 2) == 36.25
    assert close(got["total"] - got["body"] + xl, 107.37, 0.02), got  # with the paper's context model


@pytest.mark.xfail(strict=True, reason="lmlab's Transformer has no Transformer-XL relative-position parameters: "
                                       "context model 33.2M vs 36.25M, total 103.8M vs 107.37M (-3.3%)")
def test_table_2_total_within_2_percent():
    assert close(_txl()[1]["total"], 107.37, 0.02)


def _seq2seq_count(chain: str, **model) -> float:
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.model import build_seq2seq
    cfg = resolve(Config, "train-lm", [chain])
    for key, value in model.items():
        setattr(cfg.model, key, value)
    with torch.device("meta"):
        return count_parameters(build_seq2seq(cfg.model, WMT, WMT))


def test_table_3_wmt14_define():
    from lmlab.core.seq2seq.config import Config
    cfg = resolve(Config, "train-lm", ["wmt14-en-de-define"])
    m, d = cfg.model, cfg.model.embedding.define
    assert (d.map_dim, d.expand_dim, d.layers, m.d_model) == (128, 1024, 3, 512)  # Sec. 4.2: n, k, N, m
    # the paper's baseline, OpenNMT-py's Transformer base: separate source, target and output tables
    base = _seq2seq_count("wmt14-en-de", share_all_embeddings=False, share_decoder_input_output=False)
    ours = _seq2seq_count("wmt14-en-de-define")
    assert close(base, 92, 0.02) and close(ours, 68, 0.02), (base, ours)  # 93.29M, 69.20M
    assert abs((1 - ours / base) - 0.26) < 0.01  # "reducing total parameters by 26%": 25.8%
    # the official delight sharing (one map, two units, output tied to the map) is far smaller
    delight = _seq2seq_count("wmt14-en-de-define", share_all_embeddings=True, share_map_only=True,
                             share_decoder_input_output=True)
    assert 48e6 < delight < 50e6


def test_table_4_ablation_differences():
    """Table 4 at N=7, n=m=384, k=1024: Linear 42.86, GLT 39.69, HGT 40.73, DeFINE 40.89 (w/o mixer 40.89)."""
    chain = "lstm-define-wt103-n384"
    unit = {v: lm_counts(_lm_config(chain, variant=v), WT103)["unit"]
            for v in ("linear", "group-linear", "group-linear-shuffle", "hierarchical", "hgt", "hgt-no-mixer")}
    assert close(unit["linear"] - unit["hierarchical"], 42.86 - 40.73, 0.10), unit  # 2.27M
    assert close(unit["hierarchical"] - unit["group-linear"], 40.73 - 39.69, 0.10), unit  # 1.09M
    assert unit["hgt-no-mixer"] == unit["hgt"]
    assert unit["group-linear-shuffle"] == unit["group-linear"]  # GLT + Shuffle: the shuffle has no parameters
    # the skip adds 0.65M here, 0.16M in the paper (docs/define.md)
    assert 0.6e6 < unit["hgt"] - unit["hierarchical"] < 0.7e6


def test_cpu_tier_pair_differs_by_the_input_embedding_alone_and_saves_40_percent():
    """make define-ptb-cpu: ptb-lstm-small-define is ptb-lstm-small-dropout (the IMM tier's dropout-only arm, reused as
    the standard arm) with a DeFINE input embedding; the paper's claim needs its embedding >= 40% smaller."""
    from lmlab.core.config import resolve, to_dict
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.lm import parameter_counts
    from lmlab.core.train.config import TrainConfig

    standard = resolve(TrainConfig, "train-lm", ["ptb-lstm-small-dropout"])
    define = resolve(TrainConfig, "train-lm", ["ptb-lstm-small-dropout", "ptb-lstm-small-define"])
    a, b = to_dict(standard), to_dict(define)
    for cfg in (a, b):
        cfg["model"].pop("embedding"), cfg.pop("run")
    # each arm's lr is the pick of one short sweep (results/define-ptb-cpu-lr-sweep.json): standard 1, DeFINE 0.5
    assert (a["optim"].pop("lr"), b["optim"].pop("lr")) == (1.0, 0.5)
    assert a == b and define.model.embedding.kind == "define" and not define.model.output.tie
    counts = {name: parameter_counts(build_language_model(cfg.model, 10_000)) for name, cfg in
              (("standard", standard), ("define", define))}
    assert counts["define"]["params_embedding"] <= 0.6 * counts["standard"]["params_embedding"]
    assert counts["define"]["params_body"] == counts["standard"]["params_body"]
    assert counts["define"]["params_output"] == counts["standard"]["params_output"]


def _make_variable(path, name: str) -> str:
    """A make variable's value as written in a pipeline fragment (continuation lines joined)."""
    import re
    from pathlib import Path
    text = re.sub(r"\\\n\s*", " ", (Path(__file__).resolve().parents[1] / path).read_text())
    return re.search(rf"^{name}\s*\??=\s*(.*)$", text, re.M).group(1).strip()


@pytest.mark.parametrize("direction", ["de-en", "en-de"])
def test_multi30k_cpu_pair_differs_by_the_embedding_alone(direction):
    """Issue #17's CPU-tier MT pair (make mt-multi30k-*): the DeFINE system is the preset plus translation.mk's
    MT_DEFINE_FLAGS (the unit, without the sqrt(d) scale) and nothing else; its embedding is ~31% smaller; both train 20 epochs and keep the checkpoints
    the decoding averages (MT_AVERAGE)."""
    import shlex
    from lmlab.core.config import parse_overrides
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.model import build_seq2seq

    flags = shlex.split(_make_variable("pipelines/translation.mk", "MT_DEFINE_FLAGS"))
    sets = [flags[i + 1] for i, f in enumerate(flags) if f == "--set"]
    assert flags[:2] == ["--embedding", "define"] and len(sets) * 2 + 2 == len(flags)  # no other flag
    standard = resolve(Config, "train-lm", [f"multi30k-{direction}", "cpu"])
    define = resolve(Config, "train-lm", [f"multi30k-{direction}", "cpu"], parse_overrides(["model.embedding.kind=define", *sets]))
    assert (standard.schedule.epochs, standard.run.keep) == (20, int(_make_variable("pipelines/translation.mk", "MT_AVERAGE")))
    assert define.model.embedding.kind == "define" and not define.model.embed_scale  # the unit scales its own output
    define.model.embedding, define.model.embed_scale = standard.model.embedding, standard.model.embed_scale
    assert define == standard  # nothing else differs

    def counts(chain_sets):
        cfg = resolve(Config, "train-lm", [f"multi30k-{direction}", "cpu"], parse_overrides(chain_sets))
        with torch.device("meta"):
            model = build_seq2seq(cfg.model, 5000, 5000)
        return count_parameters(model), count_parameters(model.src_embed)
    (total_s, emb_s), (total_d, emb_d) = counts([]), counts(["model.embedding.kind=define", *sets])
    assert (total_s, emb_s) == (2_029_056, 640_000) and (total_d, emb_d) == (1_837_504, 440_256)
