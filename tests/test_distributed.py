"""Data parallelism on CPU with the gloo backend: 2 processes == 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from lmlab.core.checkpoint import load_checkpoint
from test_residual_train import setup  # noqa: F401 (fixture: a tiny data dir and a seeded base LM)

COMMON = ["train-lm", "--device", "cpu", "--steps", "8", "--set", "data.batch_size=4", "--set", "data.bptt=8",
          "--set", "model.d_model=16", "--set", "model.n_layers=1", "--set", "model.lstm.hidden_size=16",
          "--set", "model.lstm.dropout=0.0", "--set", "optim.lr=1.0", "--set", "schedule.name=constant",
          "--set", "run.eval_interval=4", "--set", "hardware.threads=1", "--set", "hardware.dist_timeout_s=60", "-q"]


def _train_losses(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss_nats"] for r in rows if "train_loss_nats" in r]


def _one_and_two_processes(tmp_path, data, extra: list[str], port: int):
    """The same train-lm command as one process (run dir one/) and under torchrun with 2 (two/): their per-update
    train losses and last checkpoints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *COMMON, *extra, "--data", str(data), "--run-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                            "-m", "lmlab", *COMMON, *extra, "--data", str(data), "--run-dir", str(tmp_path / "two")],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    return (_train_losses(tmp_path / "one"), _train_losses(tmp_path / "two"),
            load_checkpoint(tmp_path / "one/checkpoints/last.pt", "lm"), load_checkpoint(tmp_path / "two/checkpoints/last.pt", "lm"))


def _assert_same_training(one, two, a, b, loss_tol: float) -> None:
    """Both runs made 8 updates with per-update train losses within loss_tol and end on the same weights."""
    assert len(one) == len(two) == 8
    assert max(abs(x - y) for x, y in zip(one, two)) < loss_tol, (one, two)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4)


def test_torchrun_two_processes_match_one(tmp_path, tiny_data):
    one, two, a, b = _one_and_two_processes(tmp_path, tiny_data, [], 29571)
    _assert_same_training(one, two, a, b, loss_tol=1e-4)
    # the carried LSTM state of all columns is gathered into the checkpoint
    assert b["carried_state"][0][0].shape == a["carried_state"][0][0].shape
    (tmp_path / "figure.json").write_text(json.dumps({"max_abs_diff_train_loss": max(abs(x - y) for x, y in zip(one, two))}))


def test_torchrun_transformer_with_gradient_accumulation_matches_one_process(tmp_path, tiny_data):
    transformer = ["--set", "model.kind=transformer", "--set", "model.transformer.n_heads=2", "--set", "model.transformer.ffn_dim=32",
                   "--set", "model.transformer.dropout=0.0", "--set", "optim.grad_accum=2", "--set", "optim.lr=0.5"]
    # SGD (COMMON's optimizer): Adam's division by sqrt(v) would blow float-rounding differences of near-zero
    # gradients up to lr-sized steps, hiding whether the two runs computed the same update
    _assert_same_training(*_one_and_two_processes(tmp_path, tiny_data, transformer, 29577), loss_tol=1e-5)


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
    _assert_same_training(*_one_and_two_processes(tmp_path, data, adaptive, 29573), loss_tol=1e-4)


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



def test_torchrun_translation_two_processes_equal_one_accumulating_two_batches(tmp_path):
    """Same global batch: 2 ranks of max_tokens/2 each == 1 process of max_tokens/2 accumulating 2 batches; the
    update is normalised by its target tokens on all ranks together (fairseq), so per-update losses agree."""
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.data import load_split, read_meta, token_batches
    from lmlab.core.seq2seq.prep import prep_parallel
    from seq2seq_fixtures import write_corpus
    data = tmp_path / "data"
    prep_parallel(data, src_lang="de", tgt_lang="en", splits=write_corpus(tmp_path, 120, 10), vocab_size=200)
    train_split = load_split(data, "train", read_meta(data))
    max_positions = Config().model.max_positions
    per_rank = next(t for t in range(100, 400, 10) if len(token_batches(train_split, t, max_positions)) % 2 == 0)
    common = ["train-lm", "--task", "translation", "--data", str(data), "--device", "cpu", "--epochs", "1", "-q",
              "--set", "model.d_model=16", "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1",
              "--set", "model.n_heads=2", "--set", "model.ffn_dim=32", "--set", "model.dropout=0.0",
              "--set", "run.eval_interval=1", "--set", "hardware.threads=1", "--set", "hardware.dist_timeout_s=60"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *common, "--set", f"data.max_tokens={per_rank}",
                             "--set", "optim.grad_accum=2", "--run-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29579",
                            "-m", "lmlab", *common, "--set", f"data.max_tokens={2 * per_rank}", "--run-dir", str(tmp_path / "two")],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(one) == len(two) >= 2
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)


@pytest.fixture(scope="module")
def residual_negatives(setup, tmp_path_factory):
    """Negatives for 40 training windows of the residual tests' data, written by the negatives tool."""
    from lmlab.core.residual.negatives import main as negatives_main
    root, ckpt = setup
    neg = tmp_path_factory.mktemp("neg") / "neg.npz"
    assert negatives_main(["--base-lm", str(ckpt), "--data", str(root / "data"), "--out", str(neg), "--prefix-len", "8",
                           "--continuation-len", "6", "--per-prefix", "3", "--max-windows", "40"]) == 0
    return neg


@pytest.mark.parametrize("from_file", [True, False])
def test_residual_ranks_take_contiguous_shares_of_the_global_batch(tmp_path, setup, residual_negatives, from_file):
    """Rank r of W scores rows r*B/W..(r+1)*B/W of the batch one process draws (same windows, same file negatives);
    on-the-fly negatives come from a stream per rank, so only their shape is the single-process one."""
    from lmlab.core.distributed import DistInfo
    from lmlab.core.residual.train import ResidualTrainer
    from test_residual_train import make_cfg
    root, ckpt = setup
    extra = {"negatives": {"file": str(residual_negatives)}} if from_file else {}
    trainer = ResidualTrainer(make_cfg(root, ckpt, tmp_path / "run", **extra))  # data.batch_size = 8
    trainer.step = 3
    whole = trainer._batch()
    shares = []
    for rank in (0, 1):
        trainer.dist = DistInfo(rank=rank, world_size=2)
        shares.append(trainer._batch())
    for name, w, s0, s1 in zip(("prefixes", "positives", "negatives"), whole, *shares):
        assert s0.shape[0] == s1.shape[0] == 4, name
        if from_file or name != "negatives":
            assert torch.equal(torch.cat([s0, s1]), w), name
        else:
            assert torch.cat([s0, s1]).shape == w.shape


def _residual_args(root, ckpt, run, steps=6, **sets):
    sets = {"data.dir": root / "data", "data.batch_size": 4, "window.prefix_len": 8, "window.continuation_len": 6,
            "energy.d_model": 16, "energy.n_layers": 1, "energy.n_heads": 2, "energy.dropout": 0.0,
            "negatives.per_prefix": 3, "schedule.warmup_steps": 2, "optim.lr": 1e-3, "valid.max_examples": 16,
            "run.eval_interval": 3, "hardware.threads": 1, "hardware.dist_timeout_s": 60, **sets}
    return ["train-ebm", "--kind", "residual", "--base-lm", str(ckpt), "--device", "cpu", "--steps", str(steps), "-q",
            "--run-dir", str(run), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]


def test_torchrun_residual_ebm_with_a_negatives_file_matches_one_process(tmp_path, setup, residual_negatives):
    """train-ebm --kind residual, data-parallel: each rank scores its share of the global batch of 4 prefixes with
    those prefixes' own negatives from the file, so 2 processes train the same energy as 1 (dropout 0)."""
    root, ckpt = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    from_file = {"negatives.file": residual_negatives}
    single = subprocess.run([sys.executable, "-m", "lmlab", *_residual_args(root, ckpt, tmp_path / "one", **from_file)],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29593",
                            "-m", "lmlab", *_residual_args(root, ckpt, tmp_path / "two", **from_file)],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
    valid = [[r["valid_loss_nats"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
              if "valid_loss_nats" in r] for run in ("one", "two")]
    assert len(valid[0]) == 2 and max(abs(a - b) for a, b in zip(*valid)) < 1e-5, valid
    a = load_checkpoint(tmp_path / "one/checkpoints/last.pt", "residual-ebm")["energy"]
    b = load_checkpoint(tmp_path / "two/checkpoints/last.pt", "residual-ebm")["energy"]
    # The attention's key bias (rows d..2d of in_proj_bias) has a zero gradient in exact arithmetic (a softmax is
    # unchanged by a shift shared by all keys), so both runs' gradients there are rounding noise (~1e-11), which
    # AdamW's division by sqrt(v) turns into lr-sized steps of either sign: it may differ by up to 2 x lr x updates
    # without changing any energy (the losses above agree within 1e-5). Every other weight agrees within 1e-5.
    d, key_bias = 16, "encoder.layers.0.self_attn.in_proj_bias"
    torch.testing.assert_close(a[key_bias][d:2 * d], b[key_bias][d:2 * d], atol=2 * 1e-3 * 6, rtol=0)
    a[key_bias][d:2 * d] = b[key_bias][d:2 * d] = 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_torchrun_residual_refuses_an_indivisible_batch(tmp_path, setup):
    """One error line from each rank, before the run dir is created: a global batch of 3 on 2 processes (it names
    the sizes that work), for NCE and for the MLM phase."""
    root, ckpt = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cases = [({"data.batch_size": 3}, "data.batch_size=3 is the global batch and must be divisible by the number of "
                                      "processes (2); the nearest that work are --set data.batch_size=2"),
             ({"mlm.steps": 2, "mlm.batch_size": 3}, "mlm.batch_size=3 is the global batch and must be divisible by "
                                                     "the number of processes (2); the nearest that work are --set mlm.batch_size=2")]
    for extra, message in cases:
        multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                                "29594", "-m", "lmlab", *_residual_args(root, ckpt, tmp_path / "run", **extra)],
                               cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert multi.returncode != 0
        assert multi.stderr.count(f"lmlab: error: {message}") == 2, multi.stderr[-2000:]  # then torchrun's own report
        assert not (tmp_path / "run").exists()


def test_torchrun_residual_mlm_phase_matches_one_process(tmp_path, setup, residual_negatives):
    """The BiT MLM pre-training phase, data-parallel: each rank takes its rows of the global batch's windows and
    masks, the loss is the mean over all masked tokens, so 2 processes pre-train (and then NCE-train) as 1 does."""
    root, ckpt = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    sets = {"negatives.file": residual_negatives, "mlm.steps": 3, "mlm.lr": 1e-3}
    single = subprocess.run([sys.executable, "-m", "lmlab", *_residual_args(root, ckpt, tmp_path / "one", steps=3, **sets)],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29596",
                            "-m", "lmlab", *_residual_args(root, ckpt, tmp_path / "two", steps=3, **sets)],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    rows = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("one", "two")}
    for key in ("mlm_loss_nats", "train_loss_nats"):
        one, two = ([r[key] for r in rows[run] if key in r] for run in ("one", "two"))
        assert len(one) == len(two) == 3, key
        assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (key, one, two)


def test_torchrun_residual_ebm_stopped_by_sigterm_resumes_exactly(tmp_path, setup):
    """On-the-fly negatives and dropout draw from (seed, update, rank) streams: a 2-process run stopped by SIGTERM
    (torchrun passes it to both ranks, which stop after the same update) and rerun equals an uninterrupted one."""
    import signal
    import time
    root, ckpt = setup

    def args(run):
        return _residual_args(root, ckpt, run, steps=30, **{"energy.dropout": 0.1, "run.save_interval": 1})

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29597", "-m", "lmlab"]
    whole = subprocess.run([*launch, *args(tmp_path / "whole")], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    cut = subprocess.Popen([*launch, *args(tmp_path / "cut")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env)
    metrics, deadline = tmp_path / "cut/metrics.jsonl", time.monotonic() + 240
    while (not metrics.exists() or len(_train_losses(tmp_path / "cut")) < 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    cut.send_signal(signal.SIGTERM)
    out, err = cut.communicate(timeout=120)
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, out  # rank 0's line alone: two ranks printing to one pipe could interleave
    assert summaries[0]["stopped_by"] == "SIGTERM" and summaries[0]["step"] < 30, err[-2000:]
    again = subprocess.run([*launch, *args(tmp_path / "cut")], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "whole")
    a = load_checkpoint(tmp_path / "whole/checkpoints/last.pt", "residual-ebm")["energy"]
    b = load_checkpoint(tmp_path / "cut/checkpoints/last.pt", "residual-ebm")["energy"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _gebm_args(run, steps=4, **sets):
    """The official UCI recipe in miniature (combined flow energy, latent batch x2, gradient penalty + weight term,
    the gradient transform) on synthetic density data: every term whose mean or normaliser spans the batch."""
    sets = {"data.kind": "density", "data.dataset": "synthetic-density", "data.batch_size": 16, "model.energy": "flow-combined",
            "model.flow_transforms": 2, "model.flow_hidden": 8, "optim.energy_steps": 2, "optim.energy_steps_init": 3,
            "optim.noise_factor": 2, "optim.penalty": 0.1, "optim.penalty_type": "gradient_l2", "optim.grad_transform": True,
            "optim.init_log_partition_batches": 1, "eval.is_samples": 200, "run.log_every": 1, "run.eval_interval": 2,
            "hardware.threads": 1, "hardware.dist_timeout_s": 60, **sets}
    return ["train-ebm", "--kind", "gebm", "--device", "cpu", "--steps", str(steps), "-q", "--run-dir", str(run),
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]


def test_torchrun_gebm_matches_one_process(tmp_path):
    """train-ebm --kind gebm, data-parallel: each rank takes its rows of the global data, latent and penalty draws,
    gradients are averaged and the base step's log-mean-exp spans every latent, so 2 processes train the GEBM that
    1 does (KALE energy and base losses within 1e-5, the same validation NLL)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *_gebm_args(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29599",
                            "-m", "lmlab", *_gebm_args(tmp_path / "two")], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    rows = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("one", "two")}
    for key in ("energy_loss_nats", "grad_penalty", "base_loss_nats", "log_partition_A", "valid_nll_gebm_nats"):
        one, two = ([r[key] for r in rows[run] if key in r] for run in ("one", "two"))
        assert len(one) == len(two) >= 2, key
        assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (key, one, two)
    assert len(rows["one"]) == len(rows["two"])  # rank 0 alone wrote the metrics
    a, b = (load_checkpoint(tmp_path / run / "checkpoints/last.pt", "gebm") for run in ("one", "two"))
    for part in ("base", "energy"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], atol=1e-5, rtol=1e-4)


def test_torchrun_gebm_refuses_an_indivisible_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29598",
                            "-m", "lmlab", *_gebm_args(tmp_path / "run", **{"data.batch_size": 15})],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode != 0
    assert multi.stderr.count("lmlab: error: data.batch_size=15 is the global batch and must be divisible") == 2, multi.stderr[-2000:]
    assert not (tmp_path / "run").exists()
