"""Cluster faults: a rank that dies mid-run stops the job with a clear error (no hang), and
pipelines/slurm.sbatch forwards SIGUSR1/SIGTERM to the job step and requeues (fake `srun`/`scontrol` on PATH)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from fake_slurm import (SLOW_RANK0_SAVE, checkpoint_step, clean_env, finish, left_running, render_slurm,
                        slurm_log, smoke_dir, submit, summaries, wait_for_text)
from test_reliability_doc import record, writing

TRAIN = ["train-lm", "--device", "cpu", "--set", "data.batch_size=4", "--set", "data.bptt=8", "--set", "model.d_model=16",
         "--set", "model.n_layers=1", "--set", "model.lstm.hidden_size=16", "--set", "run.save_interval=1",
         "--set", "run.eval_interval=1000000", "--set", "hardware.threads=1", "--set", "hardware.dist_timeout_s=30"]


def _wait_for(path: Path, procs, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists():
        assert all(p.poll() is None for p in procs), [(p.communicate()[1] or "")[-2000:] for p in procs]
        time.sleep(0.1)
    assert path.exists(), f"{path} never appeared"


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_a_dead_rank_stops_the_job_with_a_clear_error(tmp_path, tiny_data):
    """Rank 1 is SIGKILLed mid-training, under torchrun and under an srun-style launch (no agent to clean up)."""
    observed = {}
    # srun-style: two independent processes, rank and world size from the environment
    run = tmp_path / "srun"
    args = [sys.executable, "-m", "lmlab", *TRAIN, "--steps", "100000", "--data", str(tiny_data), "--run-dir", str(run), "-q"]
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29613", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    ranks = [subprocess.Popen(args, cwd=REPO, env=clean_env(**common, RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        _wait_for(run / "checkpoints" / "last.pt", ranks)
        ranks[1].kill()
        t0 = time.time()
        _, err = ranks[0].communicate(timeout=120)
        seconds = time.time() - t0
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    last = err.rstrip().splitlines()[-1]
    observed["srun-style (2 processes, no agent)"] = {"rank0_exit": ranks[0].returncode, "seconds_to_exit": round(seconds, 2),
                                                      "rank0_last_stderr_line": last[:160]}
    assert ranks[0].returncode not in (0, None) and seconds < 90
    assert last.startswith("lmlab: error: rank 0: lost another process") and "Traceback" not in err, err[-2000:]

    # torchrun: its agent notices the dead worker and stops the job
    run = tmp_path / "torchrun"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29614",
                             "-m", "lmlab", *TRAIN, "--steps", "100000", "--data", str(tiny_data), "--run-dir", str(run), "-q"],
                            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run / "checkpoints" / "last.pt", [proc])
        workers = {_rank_of(pid): pid for pid in _children(proc.pid)}
        assert 1 in workers, workers
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.time()
        _, err = proc.communicate(timeout=150)
        seconds = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    rank0 = [l for l in err.splitlines() if "lmlab: error:" in l]
    observed["torchrun --nproc_per_node 2"] = {"torchrun_exit": proc.returncode, "seconds_to_exit": round(seconds, 2),
                                               "rank0_error_line": rank0[-1][:160] if rank0 else None,
                                               "torchrun_reports_failed_rank": "exitcode  : -9" in err or "SIGKILL" in err}
    record("dead-rank", observed, render=_render_dead_rank)
    assert proc.returncode != 0 and seconds < 120
    assert observed["torchrun --nproc_per_node 2"]["torchrun_reports_failed_rank"], err[-3000:]


def _render_dead_rank(observed: dict) -> str:
    rows = ["| launch | exit | seconds from the kill to the job's exit | what the user sees |", "|---|---|---|---|"]
    for launch, o in observed.items():
        line = o.get("rank0_last_stderr_line") or o.get("rank0_error_line") or "torchrun: ChildFailedError naming rank 1 (SIGKILL)"
        rows.append(f"| {launch} | {o.get('rank0_exit', o.get('torchrun_exit'))} | {o['seconds_to_exit']} | `{line}` |")
    return ("Rank 1 was SIGKILLed after the first checkpoint; `hardware.dist_timeout_s=30` bounds any collective that "
            "waits on it.\n\n" + "\n".join(rows))


# ------------------------------------------------------------------------------------------------ slurm
# pipelines/slurm.sbatch run as SLURM runs it (bash, SLURM_* variables, signals to the batch shell only, as
# --signal=B:USR1@90 sends them), with the fake srun and scontrol of tests/fake_slurm.py on PATH.
TORCHRUN_SIGNALS = "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
_SLURM: dict[str, dict] = {}  # what the requeue scenarios observed, for docs/reliability.md (_record_slurm)


@pytest.fixture(autouse=True)
def _no_process_left_behind(tmp_path):
    """A failing test must not leave a 100000-step run behind (a worker orphaned by its torchrun would train on)."""
    yield
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_slurm_lmlab_mode_usr1_saves_and_requeues_then_the_requeued_job_resumes(tmp_path, tiny_data):
    """`sbatch slurm.sbatch lmlab train-lm ...`: USR1 near the time limit -> saved + requeued; the requeued job (same
    command) resumes from that step; SIGTERM (scancel --batch) -> saved, not requeued."""
    run = tmp_path / "run"
    args = ["lmlab", *TRAIN, "--steps", "100000", "--data", tiny_data, "--run-dir", run]
    job = submit(tmp_path, "first", args)
    _wait_for(run / "checkpoints" / "last.pt", [job])
    job.send_signal(signal.SIGUSR1)
    seconds = finish(job)
    err = (tmp_path / "first.err").read_text()
    log = slurm_log(tmp_path)
    srun = next(l for l in log if l.startswith("srun "))
    stopped = summaries(tmp_path / "first.out")
    step = checkpoint_step(run)
    observed = {"lmlab mode, SIGUSR1": {"exit": job.returncode, "seconds": seconds, "stopped_by": [s["stopped_by"] for s in stopped],
                                        "step": step, "requeue": log.count("scontrol requeue 4242"), "orphans": left_running(run),
                                        "srun": srun.replace(str(tmp_path), "$TMP").replace(str(tiny_data), "$DATA")}}
    assert job.returncode == 0, err[-3000:]
    assert [s["stopped_by"] for s in stopped] == ["SIGUSR1"], err[-3000:]  # the worker itself saved, on USR1
    assert 0 < step < 100000 and stopped[0]["step"] == step
    assert log.count("scontrol requeue 4242") == 1 and not left_running(run)
    assert srun.startswith("srun --kill-on-bad-exit=1 torchrun --nnodes 1 --nproc_per_node 1 --rdzv_id 4242 ")
    assert TORCHRUN_SIGNALS in srun and "--rdzv_endpoint localhost:24242" in srun  # port 20000 + job id % 20000
    assert srun.endswith(f"--run-dir {run} --preset cpu")  # HW appended, as make mode appends $(HW)
    assert "srun env: SRUN_CPUS_PER_TASK=3" in log  # srun does not inherit --cpus-per-task (Slurm >= 22.05)

    # the requeued job: SLURM reruns the same script with the same arguments and job id
    job = submit(tmp_path, "requeued", args)
    wait_for_text(tmp_path / "requeued.err", f"resumed {run} at update {step} ", [job])
    deadline = time.time() + 60
    while checkpoint_step(run) <= step and job.poll() is None and time.time() < deadline:  # the requeued job trains on
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    seconds = finish(job)
    err = (tmp_path / "requeued.err").read_text()
    stopped = summaries(tmp_path / "requeued.out")
    observed["requeued job, then SIGTERM"] = {"exit": job.returncode, "seconds": seconds, "resumed_at": step,
                                              "stopped_by": [s["stopped_by"] for s in stopped], "step": checkpoint_step(run),
                                              "requeue": slurm_log(tmp_path).count("scontrol requeue 4242") - 1,
                                              "orphans": left_running(run)}
    _record_slurm(observed)
    assert job.returncode == 0, err[-3000:]
    assert [s["stopped_by"] for s in stopped] == ["SIGTERM"] and checkpoint_step(run) == stopped[0]["step"] > step
    assert slurm_log(tmp_path).count("scontrol requeue 4242") == 1 and not left_running(run)  # TERM: no requeue


def test_slurm_make_mode_usr1_reaches_the_training_step_and_the_requeued_make_resumes_it(tmp_path, tiny_data):
    """`sbatch slurm.sbatch make TARGET`: make's training step (pipelines/smoke.mk, srun + torchrun through
    LMLAB_TRAIN) gets the USR1, saves, and leaves no stamp, so the requeued make reruns the step, which resumes."""
    smoke = smoke_dir(tmp_path, tiny_data)
    run, stamp = smoke / "run", smoke / "run.train.json"
    train = [a for a in TRAIN[1:] if a != "--device" and a != "cpu"]  # make mode: --preset demo,$(HW) with HW=cpu

    def make_args(steps):
        return ["make", stamp, f"SMOKE_DIR={smoke}", f"PYTHON={sys.executable}",
                "SMOKE_TRAIN_ARGS=" + " ".join([*train, "--steps", str(steps)])]

    job = submit(tmp_path, "first", make_args(100000), job_id=7001)
    _wait_for(run / "checkpoints" / "last.pt", [job])
    job.send_signal(signal.SIGUSR1)
    seconds = finish(job)
    err = (tmp_path / "first.err").read_text()
    log = slurm_log(tmp_path)
    step = checkpoint_step(run)
    stopped = summaries(Path(f"{stamp}.tmp"))
    srun = next(l for l in log if l.startswith("srun "))
    observed = {"make mode, SIGUSR1": {"exit": job.returncode, "seconds": seconds, "stopped_by": [s["stopped_by"] for s in stopped],
                                       "step": step, "requeue": log.count("scontrol requeue 7001"), "stamp": stamp.exists(),
                                       "orphans": left_running(run), "srun": srun.replace(str(tmp_path), "$TMP")}}
    assert job.returncode == 0, err[-3000:]
    assert [s["stopped_by"] for s in stopped] == ["SIGUSR1"] and 0 < step < 100000, err[-3000:]
    assert not stamp.exists()  # the step is not done: make will rerun it
    assert log.count("scontrol requeue 7001") == 1 and "srun: forwarding SIGUSR1" in log and not left_running(run)
    assert srun.startswith("srun --kill-on-bad-exit=1 torchrun --nnodes 1 --nproc_per_node 1 --rdzv_id 7001 ") and TORCHRUN_SIGNALS in srun
    assert "--preset demo,cpu" in srun

    # the requeued job, here given a budget it can finish (schedule.max_steps may change on resume)
    job = submit(tmp_path, "requeued", make_args(step + 3), job_id=7001)
    seconds = finish(job)
    err = (tmp_path / "requeued.err").read_text()
    observed["requeued make, runs to the end"] = {"exit": job.returncode, "seconds": seconds, "resumed_at": step,
                                                  "step": checkpoint_step(run), "stamp": stamp.exists(), "stopped_by": [],
                                                  "orphans": left_running(run),
                                                  "requeue": slurm_log(tmp_path).count("scontrol requeue 7001") - 1}
    _record_slurm(observed)
    assert job.returncode == 0, err[-3000:]
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss_nats" in r] == list(range(1, step + 4))  # resumed: no step twice
    assert stamp.exists() and json.loads(stamp.read_text())["step"] == step + 3 == checkpoint_step(run)
    assert slurm_log(tmp_path).count("scontrol requeue 7001") == 1


def test_slurm_make_mode_usr1_between_training_steps_stops_make_and_requeues(tmp_path):
    """USR1 while make runs no training step (a prep or an eval): make is stopped (it kills that recipe and deletes its
    partial target) instead of running on into the next training step past the time limit."""
    (tmp_path / "Makefile").write_text(f"{tmp_path}/prepped:\n\ttouch {tmp_path}/started && sleep 60 && touch $@\n")
    job = submit(tmp_path, "job", ["make", "-f", tmp_path / "Makefile", tmp_path / "prepped"], job_id=6060)
    _wait_for(tmp_path / "started", [job])
    job.send_signal(signal.SIGUSR1)
    seconds = finish(job)
    err = (tmp_path / "job.err").read_text()
    assert job.returncode == 0 and seconds < 20, err
    assert "make runs no training step; stopping make" in err and not (tmp_path / "prepped").exists()
    assert slurm_log(tmp_path).count("scontrol requeue 6060") == 1


def test_slurm_two_nodes_usr1_every_rank_waits_for_rank0s_checkpoint(tmp_path, tiny_data):
    """Two nodes (two srun tasks, each a torchrun with one worker). After USR1 the ranks leave together: a rank that
    exited first would end its torchrun with status 1, and srun --kill-on-bad-exit would kill rank 0 mid-write."""
    site, run = tmp_path / "site", tmp_path / "run"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_RANK0_SAVE)
    train = [a if a != "run.save_interval=1" else "run.save_interval=0" for a in TRAIN]  # the stop's is the only save
    args = ["lmlab", *train, "--steps", "100000", "--data", tiny_data, "--run-dir", run]
    job = submit(tmp_path, "job", args, job_id=5151, nodes=2, PYTHONPATH=str(site))
    wait_for_text(run / "metrics.jsonl", '"step": 2,', [job])
    job.send_signal(signal.SIGUSR1)
    seconds = finish(job)
    err = (tmp_path / "job.err").read_text()
    log = slurm_log(tmp_path)
    stopped = summaries(tmp_path / "job.out")  # rank 0's summary, if it printed it before the step was killed
    stop_steps = {int(n) for n in re.findall(r"SIGUSR1: saved \S+ at update (\d+);", err)}  # logged by every rank
    _record_slurm({"two nodes, SIGUSR1 (rank 0's writes slowed to 3 s)": {
        "exit": job.returncode, "seconds": seconds, "stopped_by": [s["stopped_by"] for s in stopped], "step": checkpoint_step(run),
        "stop_step_logged": sorted(stop_steps), "requeue": log.count("scontrol requeue 5151"), "orphans": left_running(run)}})
    assert job.returncode == 0, err[-3000:]
    assert next(l for l in log if l.startswith("srun ")).startswith("srun --kill-on-bad-exit=1 torchrun --nnodes 2 ")
    # Every rank stopped at the same update, and rank 0 wrote that update's checkpoint before any rank left. (The
    # first torchrun to exit still ends the step with status 1, which may kill rank 0 before it prints its summary.)
    assert len(stop_steps) == 1 and stop_steps == {checkpoint_step(run)}, (log, err[-3000:])
    assert [(s["stopped_by"], s["step"]) for s in stopped] in ([], [("SIGUSR1", checkpoint_step(run))])
    assert log.count("scontrol requeue 5151") == 1 and not left_running(run)


@pytest.mark.parametrize("mode", ["lmlab", "make"])
def test_slurm_script_does_not_requeue_a_failed_job(tmp_path, tiny_data, mode):
    if mode == "lmlab":
        args = ["lmlab", "train-lm", "--preset", "no-such-preset"]
    else:  # a training step that fails inside srun + torchrun
        smoke = smoke_dir(tmp_path, tiny_data)
        args = ["make", smoke / "run.train.json", f"SMOKE_DIR={smoke}", f"PYTHON={sys.executable}",
                "SMOKE_TRAIN_ARGS=--set model.no_such_key=1"]
    job = submit(tmp_path, "failed", args, job_id=4343, HW=None if mode == "lmlab" else "cpu")  # None: the default HW
    finish(job, timeout=180)
    err = (tmp_path / "failed.err").read_text()
    log = slurm_log(tmp_path)
    assert job.returncode not in (0, None) and not any("requeue" in l for l in log), err[-2000:]
    assert any(l.startswith("lmlab: error: ") for l in err.splitlines()), err[-2000:]  # the worker's one-line error
    if mode == "lmlab":
        assert any(l.startswith("lmlab: error: unknown preset") for l in err.splitlines()), err[-2000:]
        assert next(l for l in log if l.startswith("srun ")).endswith("train-lm --preset no-such-preset --preset slurm")
    else:
        assert "no_such_key" in err and not (tmp_path / "smoke" / "run.train.json").exists()


def test_slurm_script_outside_slurm_or_without_a_mode_is_one_error_line(tmp_path):
    script = str(REPO / "pipelines" / "slurm.sbatch")
    outside = subprocess.run(["bash", script, "lmlab", "train-lm"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert outside.returncode == 2 and outside.stderr == "lmlab: error: pipelines/slurm.sbatch runs under SLURM: submit it with sbatch\n"
    job = submit(tmp_path, "job", ["train-lm"])
    assert finish(job) is not None and job.returncode == 2
    assert (tmp_path / "job.err").read_text().startswith("lmlab: error: usage: sbatch pipelines/slurm.sbatch lmlab COMMAND")


def test_srun_tasks_without_a_rendezvous_are_refused(tmp_path, tiny_data):
    """`srun --ntasks 2 lmlab train-lm ...` outside the sbatch script: two copies would each train alone into one
    run dir; each stops with a one-line error naming what to do."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lmlab", *TRAIN, "--steps", "3", "--data", str(tiny_data), "--run-dir", str(run)],
                          cwd=REPO, env=clean_env(SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_JOB_ID="99"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode not in (0, None) and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("lmlab: error: SLURM_NTASKS=2 but no MASTER_ADDR"), proc.stderr
    assert "pipelines/slurm.sbatch" in proc.stderr and "torchrun" in proc.stderr and not run.exists()


def test_the_global_batch_is_shared_and_an_impossible_split_names_the_sizes_that_work():
    from lmlab.core.errors import LmlabError
    from lmlab.core.train.batches import StreamBatches
    stream = np.arange(20 * 10)
    one = StreamBatches(stream, 20, 4).columns  # (20, 10): one column per batch row
    four = [StreamBatches(stream, 20, 4, rank=r, world_size=4).columns for r in range(4)]
    assert [c.shape for c in four] == [(5, 10)] * 4 and torch.equal(torch.cat(four), one)  # 4 ranks x 5 = the same 20
    with pytest.raises(LmlabError) as e:
        StreamBatches(stream, 20, 4, world_size=32)
    assert "--set data.batch_size=32," in str(e.value) and "divides 20 (1, 2, 4, 5, 10, 20)" in str(e.value)
    with pytest.raises(LmlabError, match=r"data.batch_size=16 or --set data.batch_size=24"):
        StreamBatches(stream, 20, 4, world_size=8)


def test_the_sbatch_header_examples_divide_their_global_batch():
    """The examples at the top of pipelines/slurm.sbatch run: their presets' batch divides nodes x GPUs per node."""
    from lmlab.cli.common import resolve_config
    from lmlab.core.train.config import TrainConfig
    header = (REPO / "pipelines" / "slurm.sbatch").read_text()
    default_gpus = int(re.search(r"#SBATCH --gpus-per-node=(\d+)", header)[1])
    make_presets = {"ptb-zaremba-large": ["ptb", "zaremba-large"]}
    examples = re.findall(r"#   sbatch --nodes (\d+)(?: --gpus-per-node (\d+))? pipelines/slurm.sbatch (.*)", header)
    assert len(examples) == 2
    for nodes, gpus, command in examples:
        words = command.split()
        presets = make_presets[words[1]] if words[0] == "make" else words[words.index("--preset") + 1].split(",")
        batch = resolve_config(TrainConfig, "train-lm", presets, None).data.batch_size
        assert batch % (int(nodes) * int(gpus or default_gpus)) == 0, (command, batch)


def _record_slurm(observed: dict) -> None:
    """Write the slurm block of docs/reliability.md once the three scenarios that feed it have run."""
    _SLURM.update(observed)
    if len(_SLURM) == 5:
        record("slurm", dict(_SLURM), render=render_slurm)


# ------------------------------------------------------------------------------------------------ torchrun figure
def test_torchrun_equivalence_figure(tmp_path, tiny_data):
    """The figure of tests/test_distributed.py, rerun only to write the doc (the suite already runs that test)."""
    if not writing():
        pytest.skip("runs only with LMLAB_WRITE_RELIABILITY=1 (tests/test_distributed.py checks the same thing)")
    import test_distributed
    test_distributed.test_torchrun_two_processes_match_one(tmp_path, tiny_data)
    figure = json.loads((tmp_path / "figure.json").read_text())
    record("torchrun-equivalence", figure, render=lambda f: (
        "`tests/test_distributed.py::test_torchrun_two_processes_match_one`: 8 updates of a tiny LSTM, global batch 4, "
        "one process vs `torchrun --nproc_per_node 2` (gloo, 2 columns per rank).\n\n"
        f"max |train loss (1 process) - train loss (2 processes)| over the 8 updates = **{f['max_abs_diff_train_loss']:.3g} nats** "
        "(tolerance 1e-4; final weights equal within atol 1e-5)."))
