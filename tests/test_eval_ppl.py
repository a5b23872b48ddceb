"""eval-ppl scores every token once whatever the batch size; the trainer's validation protocol is unchanged;
n-gram baselines count <unk>. The conditioning each token gets is checked against a by-hand recomputation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke, train_tiny_lm
from lmlab.core.evaluate import eval_recurrent, eval_streams, evaluate_lm, unigram_ppl

@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    return train_tiny_lm(tiny_data, tmp_path_factory.mktemp("eval") / "lm", steps=30) / "last.pt"


@pytest.fixture(scope="module")
def lstm(trained):
    from lmlab.core.checkpoint import load_checkpoint
    from lmlab.core.generate import load_lm
    model, _, info = load_lm(load_checkpoint(trained, ("lm",)), torch.device("cpu"))
    return model, info


@pytest.fixture(scope="module")
def valid(tiny_data):
    from lmlab.core.data import DataDir
    stream = np.asarray(DataDir(tiny_data).split("valid"))
    assert (len(stream) - 1) % 7 and (len(stream) - 1) % 64  # the remainder path is exercised
    return stream


def _old_eval_recurrent(model, stream, columns, bptt):
    """The PTB columns loop as it was before eval-ppl changed (the trainer's validation), verbatim."""
    length = len(stream) // columns
    data = torch.from_numpy(np.asarray(stream[: length * columns], dtype=np.int64)).view(columns, length)
    state = model.init_state(columns, "cpu")
    total, count = 0.0, 0
    steps = max(data.size(1) - 1, 0)
    with torch.no_grad():
        for i in range(0, steps, bptt):
            seq = min(bptt, steps - i)
            nll, state = model(data[:, i: i + seq], data[:, i + 1: i + 1 + seq], state)
            total += nll.double().sum().item()
            count += nll.numel()
    return total, count


# ------------------------------------------------------------------------------------------ LSTM
@pytest.mark.parametrize("columns", [1, 2, 10])
def test_trainer_validation_protocol_is_bit_identical_to_before(lstm, valid, columns):
    model, _ = lstm
    total, count = _old_eval_recurrent(model, valid, columns, 16)
    r = evaluate_lm(model, valid, columns=columns, bptt=16)  # what LMTrainer._evaluate calls
    assert r["tokens"] == count == columns * (len(valid) // columns - 1)
    assert r["nats_per_token"] == total / count  # bitwise, not approx


def test_one_stream_is_bit_identical_to_the_old_batch_1(lstm, valid):
    model, _ = lstm
    new = eval_streams(model, valid, streams=1, bptt=16)
    old = eval_recurrent(model, valid, columns=1, bptt=16)
    assert new["tokens"] == old["tokens"] == len(valid) - 1 and new["nats_per_token"] == old["nats_per_token"]
    assert new["burn_in_tokens"] == 0


@pytest.mark.parametrize("streams", [7, 64])
@pytest.mark.parametrize("burn_in", [0, 3, 16])
def test_each_token_gets_exactly_the_stated_conditioning(lstm, valid, streams, burn_in):
    """Recompute every segment by hand at batch 1: segment c reads from zero state at cL - W, its targets
    are tokens cL+1..(c+1)L, and the last one also predicts the remainder. Same conditioning -> same nats."""
    model, _ = lstm
    r = eval_streams(model, valid, streams=streams, bptt=16, burn_in=burn_in)
    n_pred = len(valid) - 1
    seg = n_pred // streams
    warm = min(burn_in, seg)
    assert r["tokens"] == n_pred and r["streams"] == streams and r["burn_in_tokens"] == warm
    data = torch.from_numpy(valid.astype(np.int64))
    total = 0.0
    with torch.no_grad():
        for c in range(streams):
            start = c * seg - (warm if c else 0)
            end = n_pred if c == streams - 1 else (c + 1) * seg  # last target index, inclusive
            nll, _ = model(data[start:end].view(1, -1), data[start + 1:end + 1].view(1, -1), model.init_state(1, "cpu"))
            total += nll[0, c * seg - start:].double().sum().item()
    assert r["nats_per_token"] * n_pred == pytest.approx(total, rel=1e-6)


def test_batch_size_changes_speed_not_the_scored_tokens(lstm, valid):
    model, info = lstm
    unk = info["specials"].get("unk")
    rs = {b: evaluate_lm(model, valid, columns=b, bptt=16, every_token=True, unk_id=unk) for b in (1, 7, 64)}
    assert {r["tokens"] for r in rs.values()} == {len(valid) - 1}
    assert len({r["unk_tokens"] for r in rs.values()}) == 1
    # segments after the first lose the context before their 16-token burn-in: close, not equal
    for b in (7, 64):
        assert rs[b]["ppl"] == pytest.approx(rs[1]["ppl"], rel=1e-3)


# ------------------------------------------------------------------------------------------ Transformer
def test_transformer_windows_do_not_depend_on_the_batch_size(valid):
    from lmlab.core.config import merge
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.config import ModelConfig
    torch.manual_seed(0)
    cfg = merge(ModelConfig(), {"kind": "transformer", "d_model": 16, "n_layers": 1, "transformer": {"n_heads": 2, "context": 32}})
    model = build_language_model(cfg, int(valid.max()) + 1)
    rs = [evaluate_lm(model, valid, stride=16, batch_size=b, every_token=True) for b in (1, 7, 64)]
    assert {r["tokens"] for r in rs} == {len(valid) - 1}
    for r in rs[1:]:
        assert r["nats_per_token"] == pytest.approx(rs[0]["nats_per_token"], rel=1e-6)


def test_transformer_windows_project_only_the_scored_positions(valid):
    """The output layer sees the scored tokens alone (a full window's last stride, not its context positions), and
    each token's NLL is what the whole window's projection gives it."""
    from lmlab.core.config import merge
    from lmlab.core.evaluate import eval_sliding
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.config import ModelConfig
    torch.manual_seed(0)
    cfg = merge(ModelConfig(), {"kind": "transformer", "d_model": 16, "n_layers": 1, "transformer": {"n_heads": 2, "context": 32}})
    model = build_language_model(cfg, int(valid.max()) + 1).eval()
    rows, nll = [], model.output.nll
    model.output.nll = lambda h, y: rows.append(h.shape[0] * h.shape[1]) or nll(h, y)
    got = eval_sliding(model, valid, 32, 16, batch_size=4)
    del model.output.nll
    assert sum(rows) == got["tokens"] == len(valid) - 1  # not the ~2x the windows' positions
    data = torch.from_numpy(np.asarray(valid, dtype=np.int64))
    total = 0.0
    with torch.no_grad():  # by hand: every window projected whole, its scored tail summed
        for begin in range(0, len(valid) - 1, 16):
            end = min(begin + 16, len(valid) - 1)
            start = max(0, end - 32)
            full, _ = model(data[start:end][None], data[start + 1:end + 1][None])
            total += full[0, begin - start:].double().sum().item()
    assert got["nats_per_token"] == pytest.approx(total / (len(valid) - 1), rel=1e-6)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_text_input_is_one_stream(trained):
    outs = [json.loads(invoke("eval-ppl", "-c", str(trained), "-i", "-", "-q", "--batch-size", str(b),
                              input="the cat sat on the mat .\n").stdout) for b in (1, 7, 64)]
    assert [o["tokens"] for o in outs] == [7, 7, 7]  # 7 words + <eos>, all predicted but the first
    assert all(o["streams"] == 1 for o in outs)
    assert outs[1]["ppl"] == pytest.approx(outs[0]["ppl"], rel=1e-6) and outs[2]["ppl"] == pytest.approx(outs[0]["ppl"], rel=1e-6)


def test_cli_split_token_count_is_the_same_for_every_batch_size(trained, tiny_data, valid):
    outs = {b: json.loads(invoke("eval-ppl", "-c", str(trained), "--data", str(tiny_data), "--split", "valid", "-q",
                                 "--batch-size", str(b)).stdout) for b in (1, 7, 64)}
    assert {o["tokens"] for o in outs.values()} == {len(valid) - 1}
    assert outs[7]["ppl"] == pytest.approx(outs[1]["ppl"], rel=1e-3) and outs[64]["ppl"] == pytest.approx(outs[1]["ppl"], rel=1e-3)
    assert outs[7]["burn_in_tokens"] == 35 and outs[1]["burn_in_tokens"] == 0


def test_cli_windows_scores_each_continuation_given_its_prefix(trained, tiny_data, valid, lstm):
    from lmlab.core.generate import sequence_logprob
    model, _ = lstm
    out = json.loads(invoke("eval-ppl", "-c", str(trained), "--data", str(tiny_data), "--split", "valid", "-q",
                            "--windows", "6,4", "--max-examples", "5", "--batch-size", "2").stdout)
    rows = torch.from_numpy(np.asarray(valid[:50], dtype=np.int64)).view(5, 10)  # windows of 6 + 4, back to back
    expected = -sequence_logprob(model, rows[:, :6], rows[:, 6:]).double().sum().item() / 20
    assert out["examples"] == 5 and out["tokens"] == 20 and out["continuation_len"] == 4
    assert out["nats_per_token"] == pytest.approx(expected, rel=1e-6)
    bad = invoke("eval-ppl", "-c", str(trained), "--data", str(tiny_data), "--windows", "6")
    assert bad.exit_code != 0 and "--windows '6'" in bad.output and "Traceback" not in bad.output
    assert invoke("eval-ppl", "-c", str(trained), "--data", str(tiny_data), "--max-examples", "5").exit_code != 0


# ------------------------------------------------------------------------------------------ n-gram <unk>
@pytest.fixture(scope="module")
def unk_data(tmp_path_factory, tiny_text):
    from lmlab.core.prep import prep
    from lmlab.core.textio import TextSource
    out = tmp_path_factory.mktemp("unk") / "d"
    prep(out, {k: [TextSource(str(v))] for k, v in tiny_text.items()}, vocab_size=12)  # most words become <unk>
    return out


@pytest.mark.parametrize("ngram", ["unigram", "kn-bigram"])
def test_ngram_baselines_count_unk(unk_data, ngram):
    from lmlab.core.data import DataDir
    d = DataDir(unk_data)
    stream = np.asarray(d.split("valid"))
    expected = int((stream[1:] == d.unk_id).sum())
    assert expected > 0
    out = json.loads(invoke("eval-ppl", "--ngram", ngram, "--data", str(unk_data), "--split", "valid").stdout)
    assert out["unk_tokens"] == expected and out["tokens"] == len(stream) - 1


def test_unigram_by_hand():
    train, stream = np.array([0, 1, 1, 2]), np.array([2, 1, 0, 2])  # vocab 4, unk id 2
    r = unigram_ppl(train, stream, 4, unk_id=2)
    p = (np.array([1, 2, 1, 0]) + 1) / 8
    assert r["tokens"] == 3 and r["unk_tokens"] == 1
    assert r["nats_per_token"] == pytest.approx(-np.log(p[[1, 0, 2]]).mean()) and math.isfinite(r["ppl"])


def test_eval_ppl_finds_the_training_data_dir_from_any_directory(tmp_path, tiny_data, monkeypatch):
    """A checkpoint records its data dir as given (here relative) and, since #14, absolute: eval-ppl run from
    elsewhere uses the absolute one; with neither there it is one line naming both and --data (not "rerun prep")."""
    import shutil
    from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
    project = tmp_path / "project"
    shutil.copytree(tiny_data, project / "data" / "tiny")
    monkeypatch.chdir(project)
    ckpt = train_tiny_lm(Path("data/tiny"), project / "runs" / "lm", steps=2) / "last.pt"
    state = load_checkpoint(ckpt, ("lm",))
    assert state["config"]["data"]["dir"] == "data/tiny" and state["data_dir_abs"] == str(project / "data" / "tiny")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = invoke("eval-ppl", "-c", str(ckpt), "--split", "valid", "-q")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["source"] == f"{project / 'data' / 'tiny'}:valid"

    (project / "data" / "tiny").rename(project / "data" / "moved")
    res = invoke("eval-ppl", "-c", str(ckpt), "--split", "valid", "-q")
    assert res.exit_code != 0
    assert res.output.strip().splitlines() == [
        f"lmlab: error: the data dir checkpoint {ckpt} was trained on is not found: data/tiny (relative to {elsewhere}) "
        f"nor {project / 'data' / 'tiny'}; pass --data DIR (the prepped data dir it was trained on)"]
    res = invoke("eval-ppl", "-c", str(ckpt), "--split", "valid", "-q", "--data", str(project / "data" / "moved"))
    assert res.exit_code == 0, res.output

    old = {k: v for k, v in state.items() if k not in ("data_dir_abs", "format", "format_version", "kind", "lmlab_version")}
    save_checkpoint(tmp_path / "old.pt", old, "lm")  # a checkpoint from before #14: the relative path only
    res = invoke("eval-ppl", "-c", str(tmp_path / "old.pt"), "--split", "valid", "-q")
    assert res.exit_code != 0 and "(the checkpoint records no absolute path); pass --data DIR" in res.output
