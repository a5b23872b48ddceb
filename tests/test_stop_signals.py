"""Stop signals (issue #13): a stop that arrives during a long evaluation is met at the next validation batch,
and the resumed run evaluates that update first, ending bit for bit where an uninterrupted run ends; Ctrl-C
saves a checkpoint like SIGTERM and exits 130."""

import json
import os
import signal
import subprocess
import time

import torch

from conftest import tiny_lm_argv, tiny_train_config
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.reporting import NullReporter
from lmlab.core.train import lm_trainer
from lmlab.core.train.lm_trainer import train_lm


def _valid_rows(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if "valid_loss_nats" in l]


def test_a_stop_during_evaluation_saves_and_the_resumed_run_evaluates_first(tmp_path, tiny_data, monkeypatch):
    cfg = dict(schedule={"name": "plateau", "max_steps": 12}, run={"eval_interval": 4})
    whole = tmp_path / "whole"
    train_lm(tiny_train_config(tiny_data, whole, **cfg), NullReporter())

    real, calls = lm_trainer.evaluate_lm, [0]

    def signalled_in_second_evaluation(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # the evaluation at update 8: SIGTERM arrives while it runs
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    cut = tmp_path / "cut"
    monkeypatch.setattr(lm_trainer, "evaluate_lm", signalled_in_second_evaluation)
    summary = train_lm(tiny_train_config(tiny_data, cut, **cfg), NullReporter())
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == 8
    assert load_checkpoint(cut / "checkpoints" / "last.pt", "lm")["eval_pending"] is True
    assert [r["step"] for r in _valid_rows(cut)] == [4]  # the cut evaluation logged nothing

    monkeypatch.setattr(lm_trainer, "evaluate_lm", real)
    resumed = train_lm(tiny_train_config(tiny_data, cut, **cfg), NullReporter())
    assert resumed["stopped_by"] is None and resumed["step"] == 12
    assert _valid_rows(cut) == _valid_rows(whole)  # update 8 was evaluated on resume, as the whole run did
    a = load_checkpoint(whole / "checkpoints" / "last.pt", "lm")["model"]
    b = load_checkpoint(cut / "checkpoints" / "last.pt", "lm")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_ignored_sigint_stays_ignored():
    """A background job of a script starts with SIGINT ignored; the training loop must not start answering it."""
    from lmlab.core.signals import StopFlag
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopFlag():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        with StopFlag() as flag:
            assert signal.getsignal(signal.SIGINT) == flag._handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_saves_a_checkpoint_and_exits_130_then_the_rerun_resumes(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    argv = tiny_lm_argv(tiny_data, run_dir, "--set", "run.eval_interval=1000000", "--steps", "100000")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*argv, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads(out.splitlines()[-1])["stopped_by"] == "SIGINT"
    assert err.strip().splitlines()[-1].startswith("lmlab: interrupted: the checkpoint is saved")
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt", "lm")["step"]
    assert step >= 3
    rerun = subprocess.run([*argv[:-1], str(step + 2), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.splitlines()[-1])["step"] == step + 2


def test_a_run_resumed_on_another_build_says_what_each_stretch_ran_on(tmp_path, tiny_data, monkeypatch):
    """A tier arm is stopped at every session's end and resumed in the next, maybe on another torch build: its
    summary (and the record made from it) lists each stretch's hardware, not only the last process's."""
    from lmlab.core import records, results_doc
    cfg = dict(schedule={"name": "constant", "max_steps": 8}, run={"eval_interval": 4})
    real = lm_trainer.machine_info
    built = [dict(real(), torch="2.13.0+cpu"), dict(real(), torch="2.14.1+cpu")]
    monkeypatch.setattr(lm_trainer, "machine_info", lambda: built[0])
    real_evaluate = lm_trainer.evaluate_lm

    def stop_at_first_evaluation(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(lm_trainer, "evaluate_lm", stop_at_first_evaluation)
    run = tmp_path / "run"
    assert train_lm(tiny_train_config(tiny_data, run, **cfg), NullReporter())["stopped_by"] == "SIGTERM"
    monkeypatch.setattr(lm_trainer, "evaluate_lm", real_evaluate)
    monkeypatch.setattr(lm_trainer, "machine_info", lambda: built[1])
    summary = train_lm(tiny_train_config(tiny_data, run, **cfg), NullReporter())
    assert summary["stopped_by"] is None
    assert [(step, hw["torch"]) for step, hw in summary["hardware_history"]] == [(0, "2.13.0+cpu"), (4, "2.14.1+cpu")]
    (tmp_path / "run.train.json").write_text(json.dumps(summary))
    assert records.main(["r", "--command", "make r", "--train", f"imm-s1={tmp_path / 'run.train.json'}",
                         "--results-dir", str(tmp_path / "results")]) == 0
    text = results_doc.provenance(json.loads((tmp_path / "results" / "r.json").read_text()))
    assert "imm-s1 changed machine or build between its processes: from update 0 on " in text
    assert "torch 2.13.0+cpu" in text and "; from update 4 on " in text and "torch 2.14.1+cpu" in text
    # a run whose processes all ran on one build says nothing more than the machine line
    again = tmp_path / "again"
    summary = train_lm(tiny_train_config(tiny_data, again, **cfg), NullReporter())
    assert [step for step, _ in summary["hardware_history"]] == [0]
