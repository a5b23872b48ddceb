"""One writer per run dir (issue #13): a second process is refused at once, a lock its dead holder left is
taken over, and a finished or refused run leaves no lock file behind."""

import json
import os
import subprocess
import sys

import pytest

from lmlab.core import runlock
from lmlab.core.errors import LmlabError
from lmlab.core.rundir import RunDir

CONFIG = {"optim": {"lr": 1.0}, "schedule": {"name": "cosine", "epochs": 0, "max_steps": 40}, "data": {"dir": "data/x"},
          "run": {"dir": "x"}}


def _holder(run_dir):
    """A process that prepared `run_dir` as a trainer does and keeps it until its stdin closes."""
    code = ("import sys, json; from lmlab.core.rundir import RunDir; r = RunDir(sys.argv[1]); "
            "r.prepare(json.loads(sys.argv[2])); print('held', flush=True); sys.stdin.read(); r.release()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir), json.dumps(CONFIG)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_and_may_start_once_the_first_ends(tmp_path):
    run_dir = tmp_path / "run"
    first = _holder(run_dir)
    try:
        with pytest.raises(LmlabError, match=rf"run dir {run_dir} is in use by pid {first.pid} on "):
            RunDir(run_dir).prepare(CONFIG)
        assert json.loads((run_dir / runlock.LOCK_NAME).read_text())["pid"] == first.pid  # the refusal changed nothing
    finally:
        first.stdin.close()
        first.wait(timeout=30)
    assert not (run_dir / runlock.LOCK_NAME).exists()  # released on a normal end
    second = RunDir(run_dir)
    second.prepare(CONFIG)
    second.release()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    first = _holder(run_dir)
    first.kill()  # SIGKILL: no cleanup ran, the lock file stays
    first.wait(timeout=30)
    assert json.loads((run_dir / runlock.LOCK_NAME).read_text())["pid"] == first.pid
    run = RunDir(run_dir)
    run.prepare(CONFIG)
    assert json.loads((run_dir / runlock.LOCK_NAME).read_text())["pid"] == os.getpid()
    run.release()
    assert not (run_dir / runlock.LOCK_NAME).exists()


def test_a_refused_prepare_leaves_no_lock_and_the_lock_is_not_content(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(LmlabError, match="is not empty"):
        RunDir(run_dir).prepare(CONFIG)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    fresh = tmp_path / "fresh"
    run = RunDir(fresh)
    run.prepare(CONFIG)  # new dir: locked once created
    assert runlock.held(fresh) and (fresh / runlock.LOCK_NAME).exists()
    run.release()
    RunDir(fresh).prepare(CONFIG)  # no checkpoint yet: the lock file alone does not make the dir "a run"
    runlock.release(fresh)


def test_force_moves_a_locked_run_aside_and_locks_the_new_one(tmp_path):
    run_dir = tmp_path / "run"
    run = RunDir(run_dir)
    run.prepare(CONFIG)
    run.last.write_bytes(b"checkpoint")
    run.release()
    again = RunDir(run_dir)
    assert again.prepare(CONFIG, resume="never", force=True) is False
    (aside,) = tmp_path.glob("run.old-*")
    assert not (aside / runlock.LOCK_NAME).exists() and (run_dir / runlock.LOCK_NAME).exists()
    again.release()


def _started(tmp_path, config):
    run = RunDir(tmp_path / "run")
    run.prepare(config)
    run.last.write_bytes(b"checkpoint")
    run.release()
    return run


def _with(config, **schedule):
    return {**config, "schedule": {**config["schedule"], **schedule}}


def test_a_run_whose_schedule_fixes_its_length_cannot_be_extended(tmp_path):
    _started(tmp_path, CONFIG)
    why = "its cosine learning rate is scheduled over the whole run"
    with pytest.raises(LmlabError, match=r"schedule.max_steps=40, now schedule.max_steps=80, but its cosine .* --steps 40"):
        RunDir(tmp_path / "run").prepare(_with(CONFIG, max_steps=80), length_fixed_by=why)
    with pytest.raises(LmlabError, match=r"schedule.max_steps=40, now schedule.epochs=3.*--steps 40"):
        RunDir(tmp_path / "run").prepare(_with(CONFIG, epochs=3), length_fixed_by=why)
    run = RunDir(tmp_path / "run")
    assert run.prepare(CONFIG, length_fixed_by=why) is True  # the same length resumes
    run.release()
    run = RunDir(tmp_path / "run")
    assert run.prepare(_with(CONFIG, max_steps=80)) is True  # a schedule that does not depend on length may grow
    run.release()


def test_paths_are_compared_after_normalisation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _started(tmp_path, CONFIG)
    for same in ("data/x/", "./data/x", "data//x", str(tmp_path / "data" / "x")):
        run = RunDir(tmp_path / "run")
        assert run.prepare({**CONFIG, "data": {"dir": same}}) is True
        run.release()
    with pytest.raises(LmlabError, match="data.dir='data/x', now data.dir='data/y'"):
        RunDir(tmp_path / "run").prepare({**CONFIG, "data": {"dir": "data/y"}})


def test_a_holder_on_another_host_is_named_with_the_nfs_lease_advice(tmp_path):
    """On NFS a dead node's lock outlives it until the server's lease expires: the refusal names that host and
    says what to do; a holder on this host gets no such advice (its pid is checkable here)."""
    import fcntl
    import socket
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / runlock.LOCK_NAME
    for host, advised in (("node-gone", True), (socket.gethostname(), False)):
        lock.write_text(json.dumps({"host": host, "pid": 4242, "since": "2026-12-03T00:00:00"}))
        fd = os.open(lock, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description: the same lock conflicts
        try:
            with pytest.raises(LmlabError, match=f"in use by pid 4242 on {host}") as err:
                runlock.acquire(run_dir)
            assert ("if node-gone is down, its NFS lock lasts until the server's lease expires" in str(err.value)) == advised
            assert (f"remove {lock} once sure" in str(err.value)) == advised
        finally:
            os.close(fd)


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch, capsys):
    """Some cluster mounts answer flock with ENOLCK: a live holder on this host keeps the run dir; a dead one, one
    on another host (uncheckable, a requeued job's usual case) and an unnamed one are taken over, each named holder
    with one stderr line."""
    import errno
    import socket

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / runlock.LOCK_NAME
    here = socket.gethostname()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    try:
        lock.write_text(json.dumps({"host": here, "pid": alive.pid, "since": "then"}))
        with pytest.raises(LmlabError, match=f"in use by pid {alive.pid} on {here}"):
            runlock.acquire(run_dir)
        assert not runlock.held(run_dir)
        for holder, told in (({"host": here, "pid": dead.pid}, f"pid {dead.pid} on {here}"),
                             ({"host": "node-gone", "pid": alive.pid}, f"pid {alive.pid} on node-gone"), ({}, None)):
            lock.write_text(json.dumps(holder) if holder else "")
            runlock.acquire(run_dir)
            assert json.loads(lock.read_text())["pid"] == os.getpid()
            err = capsys.readouterr().err
            assert (f"has no flock; taking over the lock of {told}" in err) if told else err == ""
            runlock.release(run_dir)
    finally:
        alive.stdin.close()
        alive.wait(timeout=30)


@pytest.mark.parametrize("trainer", ["gebm", "translation"])
def test_a_set_up_failure_after_the_run_dir_opened_releases_its_lock(tmp_path, monkeypatch, trainer):
    """An error between locking the run dir and training (data or model set-up) leaves it unlocked in this process,
    so the corrected command can start at once (a notebook, a test, a driver script)."""
    from lmlab.core.reporting import NullReporter

    def fail(*args, **kwargs):
        raise LmlabError("set-up failed")

    run_dir = tmp_path / "run"
    if trainer == "gebm":
        from lmlab.core.gebm import data as gdata
        from lmlab.core.gebm import train as gebm_train
        from test_gebm_train import tiny_density_cfg
        monkeypatch.setattr(gdata, "load_for_config", fail)
        start = lambda: gebm_train.train(tiny_density_cfg(run_dir), NullReporter())  # noqa: E731
    else:
        from lmlab.core.config import merge
        from lmlab.core.seq2seq import train as seq2seq_train
        from lmlab.core.seq2seq.config import Config
        monkeypatch.setattr(seq2seq_train, "read_meta", fail)
        cfg = merge(Config(), {"data": {"dir": str(tmp_path / "data")}, "run": {"dir": str(run_dir)}, "hardware": {"device": "cpu"}})
        start = lambda: seq2seq_train.train(cfg, NullReporter())  # noqa: E731
    with pytest.raises(LmlabError, match="set-up failed"):
        start()
    assert run_dir.is_dir() and not runlock.held(run_dir) and not (run_dir / runlock.LOCK_NAME).exists()
