"""`lmlab runs`: each run dir's state, step and progress, from the run dir alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_cli, tiny_lm_argv
from lmlab.core.runstatus import find_run_dirs, run_status


def _runs(*args: str) -> list[dict]:
    proc = run_cli("runs", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_run_is_training_then_stopped_then_killed_then_finished(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    argv = tiny_lm_argv(tiny_data, run_dir, "--set", "run.eval_interval=5", "-q", "--steps")
    metrics = run_dir / "metrics.jsonl"

    def evals() -> int:
        return metrics.read_text().count('"valid_ppl"') if metrics.exists() else 0

    def train(steps: int) -> subprocess.Popen:  # returns once this process has written a validation row
        before = evals()
        proc = subprocess.Popen([*argv, str(steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: evals() > before and (run_dir / ".lmlab.lock").exists())
        return proc

    proc = train(100000)
    [now] = _runs(str(tmp_path))
    assert now["state"] == "training" and now["holder"] == f"pid {proc.pid} on {socket.gethostname()}", now
    assert now["total_steps"] == 100000 and 0 < now["progress"] < 0.01 and now["best_valid_ppl"] > 1

    proc.send_signal(signal.SIGTERM)  # a cluster's stop: saves, writes its summary, exits 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == json.loads(out.splitlines()[-1]) and summary["stopped_by"] == "SIGTERM"
    [now] = _runs(str(run_dir))
    assert now["state"] == "stopped" and now["stopped_by"] == "SIGTERM" and now["holder"] is None

    proc = train(100000)  # resumed: the old summary goes, so a kill now is not read as the earlier stop
    assert not (run_dir / "summary.json").exists()
    proc.kill()
    proc.wait(timeout=60)
    [now] = _runs(str(run_dir))
    assert now["state"] == "killed" and now["holder"] == f"pid {proc.pid} on {socket.gethostname()}", now

    step = now["step"]
    done = subprocess.run([*argv, str(step + 3)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "summary.json").read_text())["stopped_by"] is None
    [now] = _runs("--state", "finished", str(tmp_path))
    assert now["state"] == "finished" and now["progress"] == 1.0 and now["total_steps"] == step + 3
    assert _runs("--state", "training", str(tmp_path)) == []
    table = run_cli("runs", str(tmp_path)).stdout.splitlines()
    assert table[0].split()[:4] == ["RUN", "STATE", "STEP", "PROGRESS"]
    assert table[1].split()[:5] == [str(run_dir), "finished", str(step + 3), str(step + 3), "100.0%"]


def _run_dir(path: Path, config: dict, rows: list[dict], lock: dict | None = None, summary: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if lock is not None:
        (path / ".lmlab.lock").write_text(json.dumps(lock))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


LM = {"objective": "ce", "schedule": {"epochs": 4, "max_steps": 1000}, "data": {"variable_bptt": False}}


def test_a_language_models_length_is_its_epochs_and_it_finishes_at_the_last(tmp_path):
    rows = [{"step": 10 * e, "epoch": e, "valid_ppl": 100.0 - e, "lr": 1.0 / e} for e in (1, 2)]
    s = run_status(_run_dir(tmp_path / "a", LM, rows + [{"step": 23, "epoch": 2, "lr": 0.5, "train_loss_nats": 4.0}]))
    # 4 epochs of 10 updates (max_steps 1000 does not apply while epochs is set), exact with fixed windows
    assert (s.step, s.total_steps, s.total_is_estimate, s.epoch) == (23, 40, False, 2)
    assert (s.best_valid_ppl, s.last_valid_ppl, s.lr, s.state) == (98.0, 98.0, 0.5, "ended")
    rows += [{"step": 10 * e, "epoch": e, "valid_ppl": 100.0 - e} for e in (3, 4)]
    assert run_status(_run_dir(tmp_path / "b", LM, rows)).state == "finished"  # no summary, but its length reached
    variable = {**LM, "data": {"variable_bptt": True}}
    assert run_status(_run_dir(tmp_path / "c", variable, rows)).state == "ended"  # an estimated length decides nothing


def test_other_trainers_stop_at_the_first_bound(tmp_path):
    # translation logs every 272 updates the epoch (from 0) each update was in; its epochs are 271 updates
    mt = {"task": "translation", "schedule": {"epochs": 20, "max_steps": 100000}}
    rows = [{"step": 272 * e, "epoch": e, "valid_ppl": 9.0} for e in (1, 2)]  # 136..271, then 182..271 updates
    s = run_status(_run_dir(tmp_path / "mt", mt, rows))
    assert (s.total_steps, s.total_is_estimate, s.state) == (20 * 271, True, "ended")
    done = run_status(_run_dir(tmp_path / "mt-done", mt, rows + [{"step": 5420, "epoch": 19, "valid_ppl": 8.0}]))
    assert (done.total_steps, done.total_is_estimate, done.state) == (5420, False, "finished")  # 5420 / 20 = 271 exactly
    short = {"task": "translation", "schedule": {"epochs": 20, "max_steps": 300}}
    assert run_status(_run_dir(tmp_path / "short", short, rows)).total_steps == 300
    gebm = run_status(_run_dir(tmp_path / "gebm", {"schedule": {"max_steps": 8}}, [{"step": 8, "kale_nats": 1.0}]))
    assert (gebm.total_steps, gebm.progress, gebm.state, gebm.best_valid_ppl) == (8, 1.0, "finished", None)


def test_a_lock_left_by_a_dead_or_reused_pid_reads_killed_and_one_elsewhere_training(tmp_path):
    here = socket.gethostname()
    sleeper = subprocess.Popen(["sleep", "60"])  # alive, but not lmlab: the dead holder's pid reused
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for name, lock, state in (("reused", {"host": here, "pid": sleeper.pid}, "killed"),
                                  ("dead", {"host": here, "pid": dead.pid}, "killed"),
                                  ("elsewhere", {"host": here + "-node7", "pid": 1}, "training")):
            s = run_status(_run_dir(tmp_path / name, LM, [{"step": 1}], lock=lock, summary={"stopped_by": "SIGTERM"}))
            assert s.state == state and s.holder == f"pid {lock['pid']} on {lock['host']}", (name, s)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_folders_are_searched_and_a_runs_own_subfolders_are_not_runs(tmp_path):
    a = _run_dir(tmp_path / "tier" / "a-s1", LM, [{"step": 1}])
    b = _run_dir(tmp_path / "tier" / "b-s1", LM, [{"step": 1}])
    (a / "checkpoints").mkdir()
    (a / "checkpoints" / "config.json").write_text("{}")  # not a run dir: inside one
    (tmp_path / "tier" / "notes").mkdir()
    assert find_run_dirs([tmp_path]) == [a, b]
    assert find_run_dirs([a]) == [a]


@pytest.mark.parametrize("args, message", [
    (["/nonexistent"], "lmlab: error: /nonexistent is not a directory (give run dirs or folders holding them)"),
    (["--state", "done", "."], "lmlab: error: --state 'done': expected training, killed, stopped, finished or ended"),
])
def test_bad_input_is_one_line(args, message):
    proc = run_cli("runs", *args)
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr


def test_a_folder_without_runs_is_an_error(tmp_path):
    proc = run_cli("runs", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("lmlab: error: no run dirs"), proc.stderr
    assert "Traceback" not in proc.stderr
