"""AWD-LSTM's variable-length BPTT (data.variable_bptt; Merity et al. 2018, Sec. 4.1, awd-lstm-lm main.py):
the length rule, the lr scaled by length / bptt for the update (and restored), an epoch covering the stream
once, and a resumed run equal to an uninterrupted one."""

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_train_config
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import merge
from lmlab.core.errors import LmlabError
from lmlab.core.reporting import NullReporter
from lmlab.core.train.batches import VariableBPTT, expected_window_length
from lmlab.core.train.lm_trainer import LMTrainer, train_lm

pytestmark = pytest.mark.usefixtures("one_thread")

ON = {"data": {"variable_bptt": True}}


def _config(tiny_data, run_dir, **over):
    return merge(tiny_train_config(tiny_data, run_dir, **ON), over) if over else tiny_train_config(tiny_data, run_dir, **ON)


def test_lengths_follow_the_reference_rule():
    v = VariableBPTT(70, seed=4)
    draws = np.array([v.draw() for _ in range(20000)])
    # the same rule written out over the same generator: bptt w.p. 0.95 else bptt / 2, then max(5, int(N(., 5)))
    rng, expected = np.random.Generator(np.random.PCG64(4)), []
    for _ in range(20000):
        base = 70 if rng.random() < 0.95 else 35.0
        expected.append(max(5, int(rng.normal(base, 5))))
    assert draws.tolist() == expected
    short = (draws < 52.5).mean()  # the bptt / 2 branch (3.5 sd from either mean)
    assert 0.04 < short < 0.06
    assert abs(draws[draws > 52.5].mean() - 69.5) < 0.15  # int() floors a positive draw: half a token less
    assert abs(draws.mean() - expected_window_length(70)) < 0.2
    assert expected_window_length(70) == pytest.approx(0.95 * 69.5 + 0.05 * 34.5, abs=1e-6)
    v = VariableBPTT(6, seed=7)
    tiny = [v.draw() for _ in range(2000)]
    assert min(tiny) == 5 and max(tiny) > 6  # floored at 5


def test_draws_leave_the_global_streams_alone_and_resume_from_their_state():
    torch_before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    v = VariableBPTT(35, seed=1)
    first = [v.draw() for _ in range(10)]
    state = json.loads(json.dumps(v.state_dict()))  # plain data
    later = [v.draw() for _ in range(10)]
    w = VariableBPTT(35, seed=99)
    w.load_state_dict(state)
    assert [w.draw() for _ in range(10)] == later and first != later
    assert torch.equal(torch.get_rng_state(), torch_before) and (np.random.get_state()[1] == np_before).all()


def test_update_lr_is_scaled_by_window_length_and_restored(tmp_path, tiny_data):
    cfg = _config(tiny_data, tmp_path / "r", optim={"name": "sgd", "lr": 0.5, "clip": 0.0},
                  model={"lstm": {"dropout": 0.0}})
    trainer = LMTrainer(cfg, NullReporter())
    lengths, seen = [], []
    span = trainer.batches.span

    def recording_span(start, length):
        x, y = span(start, length)
        lengths.append(x.shape[1])
        return x, y
    trainer.batches.span = recording_span
    step = trainer.optimizer.step

    def checking_step(*a, **k):
        group = trainer.optimizer.param_groups[0]
        before = [(p, p.detach().clone(), p.grad.clone()) for p in group["params"] if p.grad is not None]
        out = step(*a, **k)
        seen.append(group["lr"])
        for p, old, grad in before:  # plain SGD: the update is exactly the scaled lr times the gradient
            torch.testing.assert_close(p.detach(), old - group["lr"] * grad, rtol=0, atol=1e-6)
        return out
    trainer.optimizer.step = checking_step
    for _ in range(30):
        metrics, _ = trainer.train_update()
        assert trainer.optimizer.param_groups[0]["lr"] == 0.5  # restored: the schedule's lr
        assert metrics["lr"] == 0.5 and metrics["window_tokens"] == lengths[-1]
    assert seen == [0.5 * n / 16 for n in lengths]
    assert len(set(lengths)) > 3, "the lengths should vary"


def test_grad_accum_scales_by_the_mean_length(tmp_path, tiny_data):
    trainer = LMTrainer(_config(tiny_data, tmp_path / "r", optim={"name": "sgd", "lr": 0.5, "grad_accum": 3}), NullReporter())
    lengths, seen = [], []
    span, step = trainer.batches.span, trainer.optimizer.step
    trainer.batches.span = lambda s, n: (lambda xy: (lengths.append(xy[0].shape[1]), xy)[1])(span(s, n))
    trainer.optimizer.step = lambda *a, **k: (seen.append(trainer.optimizer.param_groups[0]["lr"]), step(*a, **k))[1]
    trainer.train_update()
    assert len(lengths) == 3 and seen == [0.5 * sum(lengths) / 3 / 16]


def test_an_epoch_covers_the_stream_once(tmp_path, tiny_data):
    trainer = LMTrainer(_config(tiny_data, tmp_path / "r"), NullReporter())
    xs, ys, ended = [], [], False
    while not ended:
        x, y, ended = trainer._next_window()
        xs.append(x)
        ys.append(y)
    cols = trainer.batches.columns
    assert torch.equal(torch.cat(xs, 1), cols[:, :-1]) and torch.equal(torch.cat(ys, 1), cols[:, 1:])
    assert len({x.shape[1] for x in xs[:-1]}) > 3 and len(xs) != trainer.batches.windows_per_epoch
    # through the update loop: the epoch counter moves at the stream's end, the position starts over
    trainer = LMTrainer(_config(tiny_data, tmp_path / "r2"), NullReporter())
    updates = 0
    while trainer.epoch == 0:
        _, ended = trainer.train_update()
        updates += 1
    assert ended and updates == len(xs) and trainer.position == 0 and trainer.state is None
    assert trainer.tokens_seen == trainer.batches.batch_size * (cols.shape[1] - 1)


def test_epochs_end_on_the_stream_end_not_on_the_estimate(tmp_path, tiny_data):
    cfg = _config(tiny_data, tmp_path / "r", schedule={"epochs": 2}, run={"eval_interval": 0})
    trainer = LMTrainer(cfg, NullReporter())
    estimate = trainer.total_updates
    trainer.fit()
    assert trainer.epoch == 2 and trainer.position == 0
    rows = [json.loads(l) for l in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "valid_loss_nats" in r] == [1, 2]  # evaluated at each epoch's end
    assert abs(trainer.step - estimate) <= 0.2 * estimate


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_data):
    over = {"optim": {"name": "sgd", "lr": 1.0}, "schedule": {"max_steps": 50}, "run": {"eval_interval": 10}}
    train_lm(_config(tiny_data, tmp_path / "full", **over), NullReporter())
    part = _config(tiny_data, tmp_path / "part", **over)
    train_lm(merge(part, {"schedule": {"max_steps": 23}}), NullReporter())  # stopped mid-epoch (about 40 windows)
    middle = load_checkpoint(tmp_path / "part/checkpoints/last.pt", "lm")
    assert 0 < middle["position"] and middle["variable_bptt"] is not None
    train_lm(part, NullReporter())  # the same command again, longer budget: resumes
    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt", "lm")
    b = load_checkpoint(tmp_path / "part/checkpoints/last.pt", "lm")
    assert a["epoch"] >= 1, "the run should cross an epoch end"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (a["position"], a["tokens_seen"]) == (b["position"], b["tokens_seen"])
    losses = [[json.loads(l).get("train_loss_nats") for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
               if "train_loss_nats" in l] for d in ("full", "part")]
    assert losses[0] == losses[1]


def test_fixed_window_checkpoint_is_not_resumed_with_variable_windows(tmp_path, tiny_data):
    run = tmp_path / "r"
    train_lm(merge(tiny_train_config(tiny_data, run), {"schedule": {"max_steps": 4}}), NullReporter())
    config = json.loads((run / "config.json").read_text())
    del config["data"]["variable_bptt"]  # a run started before the option existed
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmlabError, match="fixed-length windows"):
        train_lm(_config(tiny_data, run), NullReporter())


def test_torchrun_two_processes_draw_the_same_lengths_as_one(tmp_path, tiny_data):
    """Every rank draws from the same seeded generator: 2 processes == 1 with the same global batch."""
    common = ["train-lm", "--device", "cpu", "--steps", "8", "--set", "data.batch_size=4", "--set", "data.bptt=8",
              "--set", "data.variable_bptt=true", "--set", "model.d_model=16", "--set", "model.n_layers=1",
              "--set", "model.lstm.hidden_size=16", "--set", "model.lstm.dropout=0.0", "--set", "optim.lr=1.0",
              "--set", "schedule.name=constant", "--set", "run.eval_interval=4", "--set", "hardware.threads=1",
              "--set", "hardware.dist_timeout_s=60", "-q", "--data", str(tiny_data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "lmlab", *common, "--run-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29587",
                            "-m", "lmlab", *common, "--run-dir", str(tmp_path / "two")],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    rows = [[json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines() if "train_loss_nats" in l]
            for d in ("one", "two")]
    assert [r["window_tokens"] for r in rows[0]] == [r["window_tokens"] for r in rows[1]]
    assert len({r["window_tokens"] for r in rows[0]}) > 1
    assert max(abs(a["train_loss_nats"] - b["train_loss_nats"]) for a, b in zip(*rows)) < 1e-4


def test_refused_for_a_transformer(tmp_path, tiny_data):
    with pytest.raises(LmlabError, match="data.variable_bptt: true needs model.kind=lstm"):
        _config(tiny_data, tmp_path / "r", model={"kind": "transformer"})


@pytest.mark.parametrize("preset", ["awd-lstm-ptb", "awd-lstm-define-ptb"])
def test_awd_lstm_presets_use_variable_bptt(preset):
    keys = tomllib.loads((REPO / "presets" / f"{preset}.toml").read_text())["train-lm"]
    assert keys["optim"]["name"] == "nt-asgd" and keys["data"]["variable_bptt"] is True and keys["data"]["bptt"] == 70
