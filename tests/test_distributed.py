"""Data parallelism on CPU with the gloo backend: 2 processes == 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from lmlab.core.checkpoint import load_checkpoint

COMMON = ["train-lm", "--device", "cpu", "--steps", "8", "--set", "data.batch_size=4", "--set", "data.bptt=8",
          "--set", "model.d_model=16", "--set", "model.n_layers=1", "--set", "model.lstm.hidden_size=16",
          "--set", "model.lstm.dropout=0.0", "--set", "optim.lr=1.0", "--set", "schedule.name=constant",
          "--set", "run.eval_interval=4", "--set", "hardware.threads=1", "--set", "hardware.dist_timeout_s=60", "-q"]


def _train_losses(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss_nats"] for r in rows if "train_loss_nats" in r]


def test_torchrun_two_processes_match_one(tmp_path, tiny_data):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *COMMON, "--data", str(tiny_data), "--run-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
                            "-m", "lmlab", *COMMON, "--data", str(tiny_data), "--run-dir", str(tmp_path / "two")],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4, (one, two)
    a = load_checkpoint(tmp_path / "one/checkpoints/last.pt", "lm")
    b = load_checkpoint(tmp_path / "two/checkpoints/last.pt", "lm")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4)
    # the carried LSTM state of all columns is gathered into the checkpoint
    assert b["carried_state"][0][0].shape == a["carried_state"][0][0].shape
    (tmp_path / "figure.json").write_text(json.dumps({"max_abs_diff_train_loss": max(abs(x - y) for x, y in zip(one, two))}))


def test_torchrun_transformer_with_gradient_accumulation_matches_one_process(tmp_path, tiny_data):
    transformer = ["--set", "model.kind=transformer", "--set", "model.transformer.n_heads=2", "--set", "model.transformer.ffn_dim=32",
                   "--set", "model.transformer.dropout=0.0", "--set", "optim.grad_accum=2", "--set", "optim.lr=0.5"]
    # SGD (COMMON's optimizer): Adam's division by sqrt(v) would blow float-rounding differences of near-zero
    # gradients up to lr-sized steps, hiding whether the two runs computed the same update
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *COMMON, *transformer, "--data", str(tiny_data),
                             "--run-dir", str(tmp_path / "one")], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577",
                            "-m", "lmlab", *COMMON, *transformer, "--data", str(tiny_data), "--run-dir", str(tmp_path / "two")],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
    a = load_checkpoint(tmp_path / "one/checkpoints/last.pt", "lm")["model"]
    b = load_checkpoint(tmp_path / "two/checkpoints/last.pt", "lm")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def _banded_corpus(tmp_path):
    """Frequent words everywhere, rare words only in the second half of the training stream: with 2 ranks the
    first rank's columns hold no target of the adaptive softmax's tail band (those parameters get no .grad)."""
    import random
    from lmlab.core.prep import prep
    from lmlab.core.textio import TextSource
    rng = random.Random(0)
    common = [f"c{i}" for i in range(8)]
    rare = [f"r{i}" for i in range(20)]
    lines = [" ".join(rng.choice(common) for _ in range(8)) for _ in range(150)]
    lines += [" ".join(rng.choice(common + rare) for _ in range(8)) for _ in range(150)]
    text = tmp_path / "text"
    text.mkdir()
    for split, body in (("train", lines), ("valid", lines[::10]), ("test", lines[5::10])):
        (text / f"{split}.txt").write_text("\n".join(body) + "\n")
    out = tmp_path / "banded"
    prep(out, {s: [TextSource(str(text / f"{s}.txt"))] for s in ("train", "valid", "test")})
    return out


def test_torchrun_adaptive_softmax_with_untouched_tail_band(tmp_path):
    data = _banded_corpus(tmp_path)
    adaptive = ["--set", "model.output.kind=adaptive", "--set", "model.output.adaptive.cutoffs=[12]",
                "--set", "model.output.tie=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *COMMON, *adaptive, "--data", str(data), "--run-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29573",
                            "-m", "lmlab", *COMMON, *adaptive, "--data", str(data), "--run-dir", str(tmp_path / "two")],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4, (one, two)
    a = load_checkpoint(tmp_path / "one/checkpoints/last.pt", "lm")["model"]
    b = load_checkpoint(tmp_path / "two/checkpoints/last.pt", "lm")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_torchrun_translation_with_a_batch_count_not_divisible_by_the_world_size(tmp_path):
    """An odd number of token batches on 2 processes: both ranks make the same number of updates (the last
    batch of each shuffled epoch is left out) instead of one waiting for the other until the timeout."""
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.data import load_split, read_meta, token_batches
    from lmlab.core.seq2seq.prep import prep_parallel
    from seq2seq_fixtures import write_corpus
    data = tmp_path / "data"
    prep_parallel(data, src_lang="de", tgt_lang="en", splits=write_corpus(tmp_path, 120, 10), vocab_size=200)
    train_split = load_split(data, "train", read_meta(data))
    max_positions = Config().model.max_positions
    max_tokens = next(t for t in range(200, 800, 10) if len(token_batches(train_split, t // 2, max_positions)) % 2)
    n_batches = len(token_batches(train_split, max_tokens // 2, max_positions))
    args = ["train-lm", "--task", "translation", "--data", str(data), "--device", "cpu", "--epochs", "2", "-q",
            "--set", f"data.max_tokens={max_tokens}", "--set", "model.d_model=16", "--set", "model.encoder_layers=1",
            "--set", "model.decoder_layers=1", "--set", "model.n_heads=2", "--set", "model.ffn_dim=32",
            "--set", "hardware.threads=1", "--set", "hardware.dist_timeout_s=60", "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29575",
                            "-m", "lmlab", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=240)
    assert multi.returncode == 0, multi.stderr[-2000:]
    summary = json.loads(multi.stdout.strip().splitlines()[-1])
    assert n_batches % 2 == 1 and summary["step"] == 2 * (n_batches // 2)
