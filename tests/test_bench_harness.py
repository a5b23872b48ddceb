"""The benchmark harness's pure parts: median ratios, alternation, the results-region writer, the log
parsers, a missing fairseq reported as skipped, and the lmlab -> fairseq weight mapping (checked against
a hand-written fairseq-layout forward pass). Nothing here times anything."""

from __future__ import annotations

import json
import math
import stat
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_common as bc  # noqa: E402
import bench_data  # noqa: E402
import fairseq_convert  # noqa: E402
import lm_arms  # noqa: E402
from fairseq_env import find_fairseq  # noqa: E402


def test_median_ratio_pairs_rounds_and_ignores_missing():
    assert bc.median_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0  # ratios 2, 2, 3
    assert bc.median_ratio([2.0, None, 9.0, 5.0], [1.0, 2.0, 3.0, 0.0]) == 2.5  # ratios 2, 3
    assert math.isnan(bc.median_ratio([1.0], [None]))
    r = bc.median_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert (r.lo, r.hi) == (2.0, 3.0)  # the spread of the per-round ratios travels with the median
    assert "| 2 (2–3) |" in bc.markdown_table(["ratio"], [[r]])
    assert "| 2 |" in bc.markdown_table(["ratio"], [[bc.median_ratio([2.0], [1.0])]])  # one round: no spread
    assert math.isnan(bc.median([None, None]))


def test_alternate_runs_arms_round_by_round():
    calls = []
    arms = {"a": lambda: calls.append("a") or {"x": 1.0}, "b": lambda: calls.append("b") or {"x": 2.0}}
    res = bc.alternate(arms, 3, log=lambda m: None)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert [r["x"] for r in res["b"]] == [2.0, 2.0, 2.0]


def test_replace_region_appends_then_replaces_only_between_markers(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nother engineer's table\n")
    bc.write_region(path, "first")
    text = path.read_text()
    assert text.startswith("# Results\n\nother engineer's table\n\n")
    assert text.endswith(f"{bc.START_MARK}\nfirst\n{bc.END_MARK}\n")
    path.write_text(text + "\nafter\n")
    bc.write_region(path, "second")
    assert path.read_text() == (f"# Results\n\nother engineer's table\n\n{bc.START_MARK}\nsecond\n{bc.END_MARK}\n\nafter\n")
    assert bc.read_region(path) == "second"
    with pytest.raises(ValueError):
        bc.replace_region(f"x\n{bc.START_MARK}\n", "body")


def test_markdown_table_cells():
    table = bc.markdown_table(["a", "b", "c", "d"], [["x|y", None, float("nan"), 1234.5], ["z", 0.5, 12.34, 7]])
    lines = table.splitlines()
    assert lines[0] == "| a | b | c | d |" and lines[1] == "|---|---|---|---|"
    assert lines[2] == "| x\\|y | — | — | 1,234 |"
    assert lines[3] == "| z | 0.5 | 12.3 | 7 |"


def test_missing_fairseq_is_reported_as_skipped(tmp_path):
    env = find_fairseq({"FAIRSEQ_PYTHON": str(tmp_path / "nope" / "python")})
    assert not env.available and "does not exist" in env.reason
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'fairseq'\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = find_fairseq({"FAIRSEQ_PYTHON": str(fake)})
    assert not env.available and "No module named 'fairseq'" in env.reason


def test_the_default_fairseq_interpreter_is_the_repositorys_own_venv_that_make_builds():
    import subprocess
    from bench import fairseq_env
    repo = Path(__file__).resolve().parents[1]
    assert fairseq_env.DEFAULT_PYTHON == str(repo / ".venv-fairseq" / "bin" / "python")  # no machine-specific path
    plan = subprocess.run(["make", "-n", "-B", "fairseq-env", "FAIRSEQ_VENV=/tmp/x-venv"], cwd=repo, capture_output=True,
                          text=True).stdout
    assert "-m venv --system-site-packages /tmp/x-venv" in plan  # the baseline runs on lmlab's own torch
    assert "/tmp/x-venv/bin/pip install -q --no-build-isolation 'fairseq-fixed==0.12.3.1'" in plan


def test_fairseq_train_log_parser_times_updates_after_warmup():
    def line(tag, rec):
        return f"2024-01-01 00:00:00 | INFO | {tag} | {json.dumps(rec)}"
    log = "\n".join([line("train_inner", {"loss": "15", "wps": "100", "wpb": "8192", "num_updates": "1"}),
                     "noise | train_inner | not json",
                     line("train_inner", {"loss": "14", "wps": "1000", "wpb": "8192", "num_updates": "2"}),
                     line("train_inner", {"loss": "13", "wps": "3000", "wpb": "8192", "num_updates": "3"}),
                     line("valid", {"valid_loss": "10", "valid_ppl": "1024"})])
    r = lm_arms.fairseq_train_metrics(log, warmup=1)
    assert r["tokens_per_s"] == pytest.approx(2 * 8192 / (8192 / 1000 + 8192 / 3000))  # 1500
    assert r["valid_loss_nats"] == pytest.approx(10 * math.log(2))
    assert r["train_loss_nats"] == pytest.approx(13 * math.log(2))
    with pytest.raises(ValueError):
        lm_arms.fairseq_train_metrics(log, warmup=3)


def test_fairseq_eval_summary_parser():
    log = ("| INFO | fairseq_cli.eval_lm | Evaluated 28,123 tokens in 10.5s (2678.38 tokens/s)\n"
           "| INFO | fairseq_cli.eval_lm | Loss (base 2): 7.0000, Perplexity: 128.00\n")
    r = lm_arms.fairseq_eval_metrics(log)
    assert r["tokens"] == 28123 and r["tokens_per_s"] == 2678.38
    assert r["nats_per_token"] == pytest.approx(7 * math.log(2)) and r["ppl"] == 128.0


def test_lmlab_metrics_parser_excludes_warmup_time(tmp_path):
    # cumulative: update k at tokens 100k took 10 s for the first, then 1 s each
    rows = [{"step": 1, "tokens": 100, "tokens_per_s": 100 / 10, "train_loss_nats": 9.0},
            {"step": 2, "tokens": 200, "tokens_per_s": 200 / 11, "train_loss_nats": 8.0},
            {"step": 3, "tokens": 300, "tokens_per_s": 300 / 12, "train_loss_nats": 7.0},
            {"step": 3, "valid_loss_nats": 6.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = lm_arms.lmlab_train_metrics(tmp_path / "metrics.jsonl", warmup=1)
    assert r["tokens_per_s"] == pytest.approx(100.0) and r["valid_loss_nats"] == 6.5
    assert lm_arms.lmlab_train_metrics(tmp_path / "metrics.jsonl", warmup=0)["tokens_per_s"] == pytest.approx(25.0)


def test_lmlab_metrics_parser_uses_training_seconds(tmp_path):
    # train_s: 10 s for the first update, then 1 s each; a 50 s evaluation between updates 2 and 3 is not in it
    rows = [{"step": 1, "tokens": 100, "tokens_per_s": 10.0, "train_s": 10.0, "train_loss_nats": 9.0},
            {"step": 2, "tokens": 200, "tokens_per_s": 100 / 11 * 2, "train_s": 11.0, "train_loss_nats": 8.0},
            {"step": 2, "valid_loss_nats": 6.5},
            {"step": 3, "tokens": 300, "tokens_per_s": 100.0, "train_s": 12.0, "train_loss_nats": 7.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert lm_arms.lmlab_train_metrics(tmp_path / "metrics.jsonl", warmup=1)["tokens_per_s"] == pytest.approx(100.0)


def test_flops_per_token_matches_6n_plus_attention():
    # V d + L (4 d^2 + 2 d f) = 10*4 + 1*(64 + 64) = 168 weights; attention 6 L T d = 6*1*8*4
    assert lm_arms.transformer_flops_per_token(10, 4, 1, 8, 8) == 6 * 168 + 6 * 8 * 4


def test_aligned_vocab_puts_fairseq_specials_first(tmp_path):
    from tokenizers import Tokenizer
    n = bench_data.write_aligned(["the", "cat"], tmp_path / "tok.json", tmp_path / "dict.txt")
    tok = Tokenizer.from_file(str(tmp_path / "tok.json"))
    assert n == 6 and tok.encode("the cat dog", add_special_tokens=False).ids == [4, 5, 3]
    assert tok.token_to_id("<eos>") == 2  # fairseq's </s>
    assert (tmp_path / "dict.txt").read_text() == "the 2\ncat 1\n"


def _fairseq_layout_forward(sd: dict, tokens: torch.Tensor, heads: int, layers: int) -> torch.Tensor:
    """Pre-LN decoder written from fairseq's parameter names: learned positions offset by padding_idx + 1,
    separate q/k/v projections, tied output without bias."""
    B, T = tokens.shape
    d = sd["decoder.embed_tokens.weight"].shape[1]
    x = sd["decoder.embed_tokens.weight"][tokens] + sd["decoder.embed_positions.weight"][torch.arange(T) + 2]
    for l in range(layers):
        p = lambda n: sd[f"decoder.layers.{l}.{n}"]  # noqa: E731
        h = F.layer_norm(x, (d,), p("self_attn_layer_norm.weight"), p("self_attn_layer_norm.bias"))
        q, k, v = (F.linear(h, p(f"self_attn.{n}_proj.weight"), p(f"self_attn.{n}_proj.bias")).view(B, T, heads, -1).transpose(1, 2)
                   for n in "qkv")
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // heads)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        x = x + F.linear((att @ v).transpose(1, 2).reshape(B, T, d), p("self_attn.out_proj.weight"), p("self_attn.out_proj.bias"))
        h = F.layer_norm(x, (d,), p("final_layer_norm.weight"), p("final_layer_norm.bias"))
        x = x + F.linear(F.gelu(F.linear(h, p("fc1.weight"), p("fc1.bias"))), p("fc2.weight"), p("fc2.bias"))
    x = F.layer_norm(x, (d,), sd["decoder.layer_norm.weight"], sd["decoder.layer_norm.bias"])
    return F.linear(x, sd["decoder.output_projection.weight"])  # (B, T, V)


def test_conversion_gives_the_same_logits_in_fairseq_layout():
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.config import ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig(kind="transformer", d_model=16, n_layers=2)
    cfg.transformer.n_heads, cfg.transformer.ffn_dim, cfg.transformer.context = 2, 32, 12
    cfg.output.tie = True
    model = build_language_model(cfg, 20).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped tensor cannot go unnoticed
        for name, p in model.named_parameters():
            if name != "output.bias":
                p.add_(torch.randn_like(p) * 0.1)
    lm = model.state_dict()
    d, V, L, f, ctx = 16, 20, 2, 32, 12
    template = {"decoder.embed_tokens.weight": torch.zeros(V, d), "decoder.output_projection.weight": torch.zeros(V, d),
                "decoder.embed_positions.weight": torch.zeros(ctx + 2, d), "decoder.layer_norm.weight": torch.zeros(d),
                "decoder.layer_norm.bias": torch.zeros(d)}
    for l in range(L):
        for n, shape in {"self_attn_layer_norm": (d,), "final_layer_norm": (d,)}.items():
            template[f"decoder.layers.{l}.{n}.weight"] = torch.zeros(shape)
            template[f"decoder.layers.{l}.{n}.bias"] = torch.zeros(shape)
        for n, (o, i) in {"self_attn.q_proj": (d, d), "self_attn.k_proj": (d, d), "self_attn.v_proj": (d, d),
                          "self_attn.out_proj": (d, d), "fc1": (f, d), "fc2": (d, f)}.items():
            template[f"decoder.layers.{l}.{n}.weight"] = torch.zeros(o, i)
            template[f"decoder.layers.{l}.{n}.bias"] = torch.zeros(o)
    sd = fairseq_convert.convert_state(lm, template)
    tokens = torch.randint(0, V, (3, 10))
    with torch.no_grad():
        expected, _ = model(tokens)
    assert torch.allclose(_fairseq_layout_forward(sd, tokens, heads=2, layers=L), expected, atol=1e-5)
    lm["output.bias"] = torch.ones(V)
    with pytest.raises(ValueError, match="bias"):
        fairseq_convert.convert_state(lm, template)


def test_missing_wikitext2_is_one_line_before_any_measuring(tmp_path):
    """No WikiText-2 (a device that got only the repository): one line naming the variable, within seconds, not
    after the FLOP ceiling's matmuls (the first GPU check failed this way, 11 s in, with only make's line to show)."""
    import os
    import subprocess
    env = {**os.environ, "LMLAB_WIKITEXT2": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, str(Path(bench_data.__file__).parent / "vs_fairseq.py"), "--mode", "quick"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "WikiText-2 not found" in lines[0] and "LMLAB_WIKITEXT2" in lines[0]  # no "ceiling" line


def test_the_bench_transformer_arm_trains_fairseqs_model_without_an_output_bias(monkeypatch, tmp_path):
    """fairseq's tied transformer_lm output has no bias: lmlab's arm must train the same function (equal work), so its
    --set list turns the output bias off."""
    from lmlab.core.config import merge, parse_overrides
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.train.config import TrainConfig
    captured = {}
    monkeypatch.setattr(lm_arms, "_lmlab_train", lambda data, run, updates, warmup, sets, preset=None: captured.setdefault("sets", sets))
    lm_arms.train_lmlab_transformer(tmp_path, tmp_path / "run", 5, 2, 32, "cpu", "fp32")
    cfg = merge(TrainConfig(), parse_overrides(captured["sets"]))
    cfg.model.transformer.context = 8  # a small model of the same build: no output bias, tied table
    model = build_language_model(cfg.model, 50)
    assert "output.bias" not in model.state_dict() and model.output.weight is model.embed.table.weight
