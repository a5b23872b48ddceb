"""A plateau decay that reloads the best weights (the official IMM schedule) and a run that stops right after it:
the checkpoint written at that evaluation must hold the reloaded weights, the ones the next update starts from, so
a run killed (or ended and extended) there resumes exactly where an uninterrupted run goes on."""

import json

import torch

from conftest import tiny_train_config
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.reporting import NullReporter
from lmlab.core.train.lm_trainer import train_lm

# SGD at a high lr with patience 0: validation worsens at update 8, the lr halves and the weights of update 4 return
PLATEAU = dict(optim={"name": "sgd", "lr": 4.0}, run={"eval_interval": 4},
               schedule={"name": "plateau", "patience": 0, "decay": 2.0, "reload_best": True})


def _valid_rows(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if "valid_loss_nats" in l]


def _config(tiny_data, run_dir, steps):
    return tiny_train_config(tiny_data, run_dir, **{**PLATEAU, "schedule": {**PLATEAU["schedule"], "max_steps": steps}})


def test_a_run_resumed_after_a_decay_that_reloaded_the_best_weights_goes_on_as_the_whole_run(tmp_path, tiny_data):
    whole = tmp_path / "whole"
    train_lm(_config(tiny_data, whole, 16), NullReporter())
    rows = _valid_rows(whole)
    assert [r["lr"] for r in rows] == [4.0, 4.0, 2.0, 2.0]  # evaluated before the decay at update 8, after it at 12
    assert rows[1]["valid_loss_nats"] > rows[0]["valid_loss_nats"]  # the decay at 8 reloaded update 4's weights

    cut = tmp_path / "cut"  # ends at update 8, after that evaluation's decay, reload and save: a kill there is the same
    train_lm(_config(tiny_data, cut, 8), NullReporter())
    best = load_checkpoint(cut / "checkpoints" / "best.pt", "lm")
    last = load_checkpoint(cut / "checkpoints" / "last.pt", "lm")
    assert best["step"] == 4 and last["step"] == 8
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])  # the reloaded weights

    train_lm(_config(tiny_data, cut, 16), NullReporter())  # the same run, longer (a plateau run's length may grow)
    assert _valid_rows(cut) == rows
    a = load_checkpoint(whole / "checkpoints" / "last.pt", "lm")["model"]
    b = load_checkpoint(cut / "checkpoints" / "last.pt", "lm")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
