"""A fake SLURM for the tests of pipelines/slurm.sbatch (tests/test_reliability_cluster.py): `srun` and `scontrol`
on PATH, the batch script run as SLURM runs it, what it leaves behind, and the doc text of what the tests observe.

The fake srun runs its command line as given (the script's real torchrun line; CPU, gloo), once per node, forwards
SIGUSR1/SIGTERM to its tasks and implements --kill-on-bad-exit; the fake scontrol logs `requeue JOBID` and answers
`show hostnames` with localhost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra) -> dict:
    """This environment without launcher variables (torchrun's, SLURM's, HW) except those in `extra` (None: unset)."""
    launcher = ("LMLAB_DEBUG", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HW", "GPUS_PER_NODE")
    env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith(("SLURM_", "SRUN_", "PET_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
if [ "$1 $2" = "show hostnames" ]; then echo localhost; fi
"""
FAKE_SRUN = r"""#!/bin/bash
# One task per node (the script's --ntasks-per-node=1): SLURM_NNODES copies of the command line as given, with the
# variables srun sets; USR1/TERM are forwarded to the tasks as srun does; --kill-on-bad-exit=1 SIGKILLs every
# process of the step (its cgroup, here its process tree) when a task exits non-zero. Exit: the largest task status.
echo "srun $*" >> "$FAKE_LOG"
echo "srun env: SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-unset}" >> "$FAKE_LOG"
kill_bad=0
while [ "${1#-}" != "$1" ]; do [ "$1" = --kill-on-bad-exit=1 ] && kill_bad=1; shift; done
tree() { local c; for c in $(pgrep -P "$1"); do echo "$c"; tree "$c"; done; }
tasks=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_PROCID=$node SLURM_NODEID=$node SLURM_LOCALID=0 SLURM_STEP_ID=0 SLURM_NTASKS=$SLURM_NNODES "$@" &
  tasks+=($!)
done
trap 'echo "srun: forwarding SIGUSR1" >> "$FAKE_LOG"; kill -USR1 "${tasks[@]}" 2>/dev/null' USR1
trap 'echo "srun: forwarding SIGTERM" >> "$FAKE_LOG"; kill -TERM "${tasks[@]}" 2>/dev/null' TERM
status=0
for ((left = ${#tasks[@]}; left > 0;)); do
  unset pid
  wait -n -p pid; rc=$?
  [ -n "${pid:-}" ] || continue  # a forwarded signal interrupted wait
  left=$((left - 1)); [ "$rc" -gt "$status" ] && status=$rc
  if [ "$rc" != 0 ] && [ "$kill_bad" = 1 ] && [ "$left" -gt 0 ]; then
    echo "srun: task exited $rc: killing the step" >> "$FAKE_LOG"
    kill -KILL $(tree $$ | grep -vx "$BASHPID") 2>/dev/null
  fi
done
exit "$status"
"""
def submit(tmp_path: Path, name: str, args: list, job_id: int = 4242, nodes: int = 1, **env_extra) -> subprocess.Popen:
    """`sbatch pipelines/slurm.sbatch ARGS`, as the batch shell of job `job_id`; its output goes to NAME.out/.err."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for tool, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (fake / tool).write_text(text)
        (fake / tool).chmod(0o755)
    env = clean_env(**{"PATH": f"{fake}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "slurm.log"), "SLURM_JOB_ID": str(job_id),
                  "SLURM_JOB_NODELIST": "node[001-002]" if nodes > 1 else "node001", "SLURM_NNODES": str(nodes),
                  "SLURM_GPUS_ON_NODE": "1", "SLURM_CPUS_PER_TASK": "3", "HW": "cpu", "PYTHON": sys.executable, **env_extra})
    return subprocess.Popen(["bash", str(REPO / "pipelines" / "slurm.sbatch"), *map(str, args)], cwd=REPO, env=env,
                            stdout=(tmp_path / f"{name}.out").open("w"), stderr=(tmp_path / f"{name}.err").open("w"))


def finish(job: subprocess.Popen, timeout: float = 60) -> float:
    t0 = time.time()
    try:
        job.wait(timeout=timeout)
    finally:
        if job.poll() is None:
            job.kill()
    return round(time.time() - t0, 2)


def wait_for_text(path: Path, text: str, procs, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and text not in (path.read_text() if path.exists() else ""):
        assert all(p.poll() is None for p in procs), path.read_text()[-2000:] if path.exists() else path
        time.sleep(0.1)
    assert text in path.read_text(), f"{text!r} never appeared in {path}"


def summaries(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.startswith("{")]


def checkpoint_step(run: Path) -> int | None:
    """The update of the run's last checkpoint (None: none written)."""
    from lmlab.core.checkpoint import load_checkpoint
    last = run / "checkpoints" / "last.pt"
    return load_checkpoint(last, "lm")["step"] if last.exists() else None


def left_running(run: Path) -> list[str]:
    """Processes still training into `run` (a worker orphaned by its torchrun would be one)."""
    out = subprocess.run(["pgrep", "-af", f"--run-dir {run}"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "lmlab" in l]


def slurm_log(tmp_path: Path) -> list[str]:
    return (tmp_path / "slurm.log").read_text().splitlines()


def smoke_dir(tmp_path: Path, tiny_data: Path) -> Path:
    """pipelines/smoke.mk's scratch dir with its data already made (the tiny corpus), so make goes straight to training."""
    smoke = tmp_path / "smoke"
    (smoke / "text").mkdir(parents=True)
    earlier = time.time() - 60
    for split in ("train", "valid"):
        (smoke / "text" / f"{split}.txt").write_text("the cat\n")
        os.utime(smoke / "text" / f"{split}.txt", (earlier, earlier))  # older than the data: make will not re-prep
    shutil.copytree(tiny_data, smoke / "data", copy_function=shutil.copy)  # mtime: now
    return smoke


# Loaded by every Python of the job (PYTHONPATH): rank 0's checkpoint writes take 3 s, as a big model's do, so the
# other node's rank is done well before rank 0.
SLOW_RANK0_SAVE = """import os
if os.environ.get("RANK") == "0":
    import time
    import lmlab.core.checkpoint as checkpoint
    _save = checkpoint.save_checkpoint

    def save_checkpoint(*args, **kwargs):
        time.sleep(3)
        return _save(*args, **kwargs)

    checkpoint.save_checkpoint = save_checkpoint
"""


SLURM_CHAIN = """\
`bash pipelines/slurm.sbatch ...` run as SLURM runs the batch script, with fake `srun` and `scontrol` on PATH
(`tests/test_reliability_cluster.py`): srun runs its command line as given, once per node, forwards SIGUSR1/SIGTERM
to its tasks and, for `--kill-on-bad-exit=1`, SIGKILLs the step's processes when a task exits non-zero; scontrol logs
`requeue JOBID`. The signal goes to the batch shell only, as `--signal=B:USR1@90` sends it. CPU, gloo, one worker
per node.

Who gets the signal, and what each process does with it:

- **lmlab mode** (`sbatch pipelines/slurm.sbatch lmlab train-lm ...`): batch shell (trap) -> `srun` it started ->
  `torchrun` on every node (`--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1`; without `SIGUSR1` in that
  list torchrun dies of the signal and its workers, in their own sessions, train on unsaved) -> every worker. The
  ranks agree to stop at the next update, rank 0 writes `checkpoints/last.pt`, every rank waits for it (a barrier
  in `core/distributed.py`: the first torchrun to exit ends the step, and `--kill-on-bad-exit` would kill rank 0
  mid-write) and exits 0. torchrun still exits 1 after forwarding a signal, so the shell does not read the status:
  on SIGUSR1 it calls `scontrol requeue $SLURM_JOB_ID` and exits 0; the requeued job runs the same command, which
  resumes (`--resume auto`).
- **make mode** (`sbatch pipelines/slurm.sbatch make TARGET`): batch shell -> the `srun` processes below make (its
  training steps, `LMLAB_TRAIN=srun ... torchrun ...`), never make itself (GNU make takes SIGUSR1 as "toggle
  debug output" and carries on) -> torchrun -> workers, as above. The step's recipe then fails before
  `$(train_done)`, so its stamp (`runs/X.train.json`) is not written and make stops; the requeued make reruns
  that step, which resumes. If make is running no training step (a prep, an eval), the shell sends make SIGTERM
  instead: make stops that recipe (as on any interrupt, it deletes a target the recipe had begun to change) and
  the requeued make redoes it.
- **SIGTERM** to the batch shell (`scancel --batch`, preemption): the same chain, no requeue, exit 0.
- **A failed job** (training exits non-zero with no signal): the script exits with that status and is not requeued
  (bad preset in lmlab mode; a bad `--set` key inside a make training step).
"""


def render_slurm(observed: dict) -> str:
    rows = ["| scenario | exit | seconds to exit after the signal (the whole job if none) | lmlab stopped by | checkpoint step | `scontrol requeue` | workers left running |",
            "|---|---|---|---|---|---|---|"]
    for name, o in observed.items():
        stopped = ", ".join(o["stopped_by"]) or ("- (ran to its end)" if o.get("stamp") else "- (rank 0 killed before printing)")
        step = f"{o['step']} (resumed from {o['resumed_at']})" if "resumed_at" in o else str(o["step"])
        rows.append(f"| {name} | {o['exit']} | {o['seconds']} | {stopped} | {step} | "
                    f"{'called' if o['requeue'] else 'not called'} | {len(o['orphans'])} |")
    srun = {name: o["srun"] for name, o in observed.items() if "srun" in o}
    lines = "\n".join(f"- {name}: `{cmd}`" for name, cmd in srun.items())
    return SLURM_CHAIN + "\n" + "\n".join(rows) + "\n\nsrun was called as:\n\n" + lines
