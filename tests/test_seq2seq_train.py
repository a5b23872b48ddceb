"""Training: a killed run resumes to the same weights; the checkpoint alone translates, in input order."""

import json

import pytest
import torch

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import merge
from lmlab.core.reporting import NullReporter
from lmlab.core.seq2seq.config import Config
from lmlab.core.seq2seq.generate import translate_lines, translate_lines_scored
from lmlab.core.seq2seq.prep import prep_parallel
from lmlab.core.seq2seq.train import train

from reporters import StopAt
from seq2seq_fixtures import write_corpus


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt")
    prep_parallel(root / "data", src_lang="de", tgt_lang="en", splits=write_corpus(root, 120, 10), vocab_size=200)
    return root / "data"


def config(data_dir, run_dir, steps=6):
    return merge(Config(), {"data": {"dir": str(data_dir), "max_tokens": 200},
                            "model": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "n_heads": 2, "ffn_dim": 32,
                                      "dropout": 0.2, "normalize_before": True},
                            "schedule": {"max_steps": steps, "warmup_steps": 2}, "optim": {"lr": 3e-3},
                            "run": {"dir": str(run_dir), "eval_interval": 3}, "hardware": {"device": "cpu"}, "seed": 7})


def test_sigterm_then_resume_equals_uninterrupted(data_dir, tmp_path):
    full = train(config(data_dir, tmp_path / "full"), NullReporter())
    assert full["step"] == 6 and full["stopped"] is None
    first = train(config(data_dir, tmp_path / "cut"), StopAt(4))
    assert first["stopped"] == "SIGTERM" and first["step"] == 4
    second = train(config(data_dir, tmp_path / "cut"), NullReporter())
    assert second["step"] == 6
    # the summary's wall time covers both processes: the first one's is carried in the checkpoint
    assert second["wall_s"] >= first["wall_s"] + second["wall_s_this_process"] - 0.2 and second["machine"]["cores"]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt", "seq2seq")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt", "seq2seq")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert {"train_loss_nats", "valid_nll_nats", "valid_ppl", "lr", "tgt_tokens_per_s"} <= set(rows[-1])


def test_checkpoint_alone_translates_in_order(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "run", steps=3), NullReporter())
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "seq2seq")
    assert state["config"]["model"]["d_model"] == 16 and set(state["tokenizers"]) == {"src", "tgt"}
    lines = ["Ein mann läuft.", "Zwei frauen sitzen auf der bank im park.", "Hund.", "Ein kind spielt ball im park."]
    kw = dict(beam=3, lenpen=1.0, max_len_a=1.0, max_len_b=3, sampling=False, temperature=1.0, top_k=0, top_p=1.0,
              seed=0, device="cpu")
    one = translate_lines(state, lines, batch_size=1, **kw)
    many = translate_lines(state, lines, batch_size=4, **kw)
    assert one == many and len(one) == 4 and all(isinstance(s, str) for s in one)
    scored = translate_lines_scored(state, lines, batch_size=2, **kw)
    assert [s["translation"] for s in scored] == one and all(s["score"] <= 0 for s in scored)


@pytest.mark.parametrize("sharing", [
    {},  # one unit for encoder and decoder, the output tied to its Map through a projection (n = 8 < d_model)
    {"share_map_only": True},  # delight: one Map, two units
    {"share_all_embeddings": False, "share_decoder_input_output": False}])
def test_cache_define_translation_scores_and_translates_as_the_live_units(data_dir, tmp_path, sharing):
    """DeFINE Sec. 3.3 for translation: `lmlab cache-define` turns each unit into its V x d_model table; the cached
    model's teacher-forced log-probabilities and beam translations equal the live model's."""
    from conftest import invoke
    from lmlab.core.seq2seq.data import collate, load_split, read_meta, token_batches
    from lmlab.core.seq2seq.generate import model_from_state
    define = {"kind": "define", "define": {"map_dim": 8, "expand_dim": 32, "layers": 2, "max_groups": 2}}
    cfg = merge(config(data_dir, tmp_path / "run", steps=3), {"model": {"embedding": define, **sharing}})
    train(cfg, NullReporter())
    best, cached = tmp_path / "run" / "checkpoints" / "best.pt", tmp_path / "cached.pt"
    result = invoke("cache-define", "-c", str(best), "-o", str(cached))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    live, table = load_checkpoint(best, "seq2seq"), load_checkpoint(cached, "seq2seq")
    tables = 1 if not sharing else 2  # encoder and decoder had one unit only in the first case
    assert summary["embedding_params_after"] == tables * live["vocab_size"]["src"] * 16
    a, _ = model_from_state(live)
    b, _ = model_from_state(table)
    meta = read_meta(data_dir)
    split = load_split(data_dir, "valid", meta)
    batch = collate(split, token_batches(split, 200, 1024)[0])
    with torch.no_grad():
        torch.testing.assert_close(b(batch["src"], batch["prev"]).log_softmax(-1), a(batch["src"], batch["prev"]).log_softmax(-1),
                                   rtol=1e-5, atol=1e-5)
    lines = ["das ist ein test", "ein haus"]
    assert translate_lines(table, lines, beam=2) == translate_lines(live, lines, beam=2)


def test_average_is_the_mean_of_the_last_checkpoints_and_translates(data_dir, tmp_path):
    """`lmlab average --last 3 RUN` (Vaswani et al. 2017 §6.1): each floating tensor is the mean of the three newest
    step checkpoints' (not best.pt's, not two of them), the result translates, and a mixed or short input is refused."""
    from conftest import invoke
    cfg = merge(config(data_dir, tmp_path / "run", steps=8), {"run": {"eval_interval": 2, "keep": 3}})
    train(cfg, NullReporter())
    steps = sorted((tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in steps] == ["step-00000004.pt", "step-00000006.pt", "step-00000008.pt"]
    out = tmp_path / "avg.pt"
    result = invoke("average", "--last", "3", str(tmp_path / "run"), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert [x["step"] for x in json.loads(result.stdout)["averaged_from"]] == [4, 6, 8]
    avg, parts = load_checkpoint(out, "seq2seq"), [load_checkpoint(p, "seq2seq") for p in steps]
    assert "optimizer" not in avg and "rng" not in avg and avg["config"] == parts[-1]["config"]
    moved = 0
    for key, value in avg["model"].items():
        mean = sum(p["model"][key].double() for p in parts) / 3
        torch.testing.assert_close(value, mean.to(value.dtype), rtol=0, atol=1e-7)
        moved += not torch.equal(value, parts[-1]["model"][key])
    assert moved > 0  # the checkpoints differ, so the mean is not the last one
    assert len(translate_lines(avg, ["ein mann läuft im park"], beam=2)) == 1

    again = invoke("average", "--last", "3", str(tmp_path / "run"), "-o", str(out))
    assert again.exit_code != 0 and "--force" in again.stderr
    short = invoke("average", "--last", "4", str(tmp_path / "run"), "-o", str(tmp_path / "x.pt"))
    assert short.exit_code != 0 and "fewer than the 4" in short.stderr
    twice = invoke("average", str(steps[0]), str(steps[0]), "-o", str(tmp_path / "y.pt"))
    assert twice.exit_code != 0 and "same update" in twice.stderr
    other = tmp_path / "other"
    train(merge(cfg, {"model": {"ffn_dim": 24}, "run": {"dir": str(other)}}), NullReporter())
    mixed = invoke("average", str(steps[-1]), str(next((other / "checkpoints").glob("step-*.pt"))), "-o", str(tmp_path / "z.pt"))
    assert mixed.exit_code != 0 and "different model configs" in mixed.stderr


def test_summary_counts_completed_epochs(data_dir, tmp_path):
    """A run of schedule.epochs = 2 says epoch 2 (completed), not the index of the epoch its last update was in."""
    cfg = merge(config(data_dir, tmp_path / "run", steps=1000), {"schedule": {"epochs": 2}})
    summary = train(cfg, NullReporter())
    assert summary["epoch"] == 2 and summary["stopped"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and rows[-1]["step"] == summary["step"]
