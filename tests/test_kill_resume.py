"""SIGKILL at random moments, some inside a checkpoint write: `--resume auto` continues from the last complete
checkpoint and the final model equals (bitwise, CPU) a run that was never killed.

Run as a script this file is the fault driver: it imports lmlab once, then forks one child per attempt
(the child runs the `lmlab` CLI exactly as the shell does, minus interpreter start-up) and SIGKILLs it
either at a random time or as soon as a half-written checkpoint (`.*.tmp`) appears. Checkpoint writes
are slowed down (chunked, with a sleep per chunk) so that such kills really land inside
`atomic_write_bytes`; every kill that leaves a `.tmp` file behind is counted as a mid-write kill.
SIGTERM/SIGUSR1 latency is measured by the same driver (`mode: "signal"`).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHUNK, CHUNK_SLEEP_S = 2048, 0.001


# ---------------------------------------------------------------------------------------------- driver
class _SlowFile:
    """A file whose write() goes out in small chunks with a pause: a slow disk for the kill to land in."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            self._f.write(view[i:i + CHUNK])
            self._f.flush()
            time.sleep(CHUNK_SLEEP_S)
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


class _SlowOs:
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdopen(fd, *args, **kwargs):
        return _SlowFile(os.fdopen(fd, *args, **kwargs))


def _child(args: list[str], log: Path) -> None:
    """Runs in the forked child: the lmlab CLI with slow checkpoint writes; never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        import lmlab.core.checkpoint as ck
        ck.os = _SlowOs()
        from lmlab.cli.main import app
        try:
            app(args=args, prog_name="lmlab", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report anything, then leave without running pytest-style cleanup
        import traceback
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _spawn(args: list[str], log: Path) -> int:
    log.touch()  # the child may be killed before it opens it
    pid = os.fork()
    if pid == 0:
        _child(args, log)
    return pid


def _wait(pid: int, timeout: float) -> int | None:
    """Exit status of `pid`, or None if it is still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def _tmp_files(run: Path) -> list[str]:
    return sorted(p.name for d in (run, run / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp"))


def _last_step(run: Path, kind: str) -> int | None:
    from lmlab.core.checkpoint import load_checkpoint
    last = run / "checkpoints" / "last.pt"
    return int(load_checkpoint(last, kind)["step"]) if last.exists() else None  # raises if a kill corrupted it


def _resumed_at(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if " resumed " in line:
            digits = line.split(" at ")[-1].split()
            for i, word in enumerate(digits):
                if word.isdigit():
                    return int(word)
    return None


def kill_campaign(spec: dict) -> dict:
    """Reference run, then rounds of kill/rerun in fresh run dirs until `kills` kills; compare each round."""
    work, kind, base_args = Path(spec["work"]), spec["kind"], spec["args"]
    rng = random.Random(spec.get("seed", 0))
    ref = work / "reference"
    t0 = time.monotonic()
    code = _wait(_spawn([*base_args, "--run-dir", str(ref)], work / "reference.log"), 600)
    if code != 0:
        raise SystemExit(f"reference run failed ({code}):\n{(work / 'reference.log').read_text()[-3000:]}")
    wall = time.monotonic() - t0
    out = {"kind": kind, "reference_wall_s": round(wall, 2), "kills": 0, "mid_write_kills": 0, "mid_checkpoint_write_kills": 0, "kills_before_first_checkpoint": 0,
           "resumes_from_last_complete": 0, "rounds": 0, "rounds_bitwise_equal": 0, "attempts": 0, "errors": []}
    while out["kills"] < spec["kills"]:
        run = work / f"round{out['rounds']}"
        out["rounds"] += 1
        expected = None  # step of the last complete checkpoint, which the next attempt must resume from
        for attempt in range(200):
            log = work / f"{run.name}-{attempt}.log"
            out["attempts"] += 1
            pid = _spawn([*base_args, "--run-dir", str(run)], log)
            if out["kills"] >= spec["kills"]:
                code = _wait(pid, 600)  # let the round finish
            elif rng.random() < 0.5:  # kill at a random moment
                code = _wait(pid, rng.uniform(0.0, wall))
            else:  # kill inside a checkpoint write: as soon as a temp file exists (+ a random few ms)
                deadline, code = time.monotonic() + 2 * wall + 30, None
                while code is None and time.monotonic() < deadline and not list((run / "checkpoints").glob(".*.tmp")):
                    code = _wait(pid, 0.001)
                if code is None:
                    time.sleep(rng.uniform(0.0, 0.01))
                    code = _wait(pid, 0.0)
            if expected is not None:
                got = _resumed_at(log)
                if got == expected:
                    out["resumes_from_last_complete"] += 1
                elif got is not None or code == 0:
                    out["errors"].append(f"{log.name}: resumed at {got}, last complete checkpoint was {expected}")
            if code is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                out["kills"] += 1
                left = _tmp_files(run)
                out["mid_write_kills"] += bool(left)
                out["mid_checkpoint_write_kills"] += any(".pt." in name or name in (".best.tmp", ".step.tmp") for name in left)
                try:
                    expected = _last_step(run, kind)
                except Exception as exc:  # noqa: BLE001 - a corrupt last.pt is exactly the failure we look for
                    out["errors"].append(f"{log.name}: last.pt unreadable after kill: {exc}")
                    return out
                out["kills_before_first_checkpoint"] += expected is None
                continue
            if code != 0:
                out["errors"].append(f"{log.name}: exit {code}: {log.read_text(errors='replace')[-1500:]}")
                return out
            break
        same = _same_final(ref, run, kind)
        out["rounds_bitwise_equal"] += same is True
        if same is not True:
            out["errors"].append(f"{run.name}: differs from the reference: {same}")
    return out


def _same_final(a: Path, b: Path, kind: str):
    import torch
    from lmlab.core.checkpoint import load_checkpoint
    sa, sb = (load_checkpoint(p / "checkpoints" / "last.pt", kind) for p in (a, b))
    tensors = {"lm": ("model",), "residual-ebm": ("energy",), "gebm": ("base", "energy")}[kind]
    for group in tensors:
        for k, v in sa[group].items():
            if not torch.equal(v, sb[group][k]):
                return f"{group}.{k}"
    if sa["step"] != sb["step"]:
        return f"step {sa['step']} vs {sb['step']}"
    la, lb = (_train_losses(p) for p in (a, b))
    return True if la == lb else f"train losses {la} vs {lb}"


def _train_losses(run: Path) -> list[float]:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [r.get("train_loss_nats", r.get("base_loss_nats")) for r in rows
            if "train_loss_nats" in r or "base_loss_nats" in r]


def signal_latency(spec: dict) -> dict:
    """Per job: start training, wait for its first checkpoint, send the signal; time until exit, exit code, saved step."""
    work, out = Path(spec["work"]), {}
    for job in spec["jobs"]:
        out[job["name"]] = per = {}
        for name in ("SIGTERM", "SIGUSR1"):
            run, log = work / f"{job['name']}-{name}", work / f"{job['name']}-{name}.log"
            pid = _spawn([*job["args"], "--run-dir", str(run)], log)
            deadline, code = time.monotonic() + 300, None
            while code is None and time.monotonic() < deadline and not (run / "checkpoints" / "last.pt").exists():
                code = _wait(pid, 0.01)
            sent = time.monotonic()
            os.kill(pid, getattr(signal, name))
            code = _wait(pid, 120)
            latency = time.monotonic() - sent
            if code is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            per[name] = {"exit_code": code, "seconds_to_exit": round(latency, 3),
                         "checkpoint_step": _last_step(run, job["kind"]), "logged_save": bool(re.search(r"\b(saved|saving)\b", log.read_text(errors="replace")))}
    return out


def run_driver(mode: str, spec: dict, timeout: float = 900) -> dict:
    """Called from the tests: the driver in its own interpreter (forking pytest itself is unsafe)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("LMLAB_DEBUG", None)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(Path(__file__)), mode, json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import torch
    torch.set_num_threads(1)  # before any fork: no OpenMP pool to inherit
    import lmlab.cli.main  # noqa: F401 - imported once here, shared by every forked attempt
    import lmlab.core.train.lm_trainer, lmlab.core.residual.train, lmlab.core.gebm.train  # noqa: E401,F401
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # the optimizer's lazy torch._dynamo import (seconds)
    try:
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            lmlab.cli.main.app(args=["train-lm", "--help"], prog_name="lmlab")
    except SystemExit:
        pass
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"campaign": kill_campaign, "signal": signal_latency}[mode](spec)))
    sys.exit(0)


# ---------------------------------------------------------------------------------------------- tests
import pytest  # noqa: E402

from test_reliability_doc import record  # noqa: E402

LM_ARGS = ["train-lm", "--device", "cpu", "--steps", "30", "--set", "data.batch_size=4", "--set", "data.bptt=8",
           "--set", "model.d_model=16", "--set", "model.n_layers=1", "--set", "model.lstm.hidden_size=16",
           "--set", "model.lstm.dropout=0.1", "--set", "optim.name=adamw", "--set", "optim.lr=0.01",
           "--set", "schedule.name=constant", "--set", "run.eval_interval=10", "--set", "run.save_interval=1",
           "--set", "run.keep=1", "--set", "data.eval_batch_size=2", "--set", "hardware.threads=1", "--seed", "5"]
KILLS = int(os.environ.get("LMLAB_KILLS", "20"))
EBM_KILLS = int(os.environ.get("LMLAB_EBM_KILLS", "5"))  # `make reliability-doc` sets 20


def test_train_lm_survives_sigkill_anywhere(tmp_path, tiny_data):
    spec = {"work": str(tmp_path), "kind": "lm", "kills": KILLS, "seed": 11, "args": [*LM_ARGS, "--data", str(tiny_data)]}
    out = run_driver("campaign", spec)
    record("kill-train-lm", out)
    assert out["errors"] == []
    assert out["kills"] >= KILLS and out["rounds_bitwise_equal"] == out["rounds"] >= 1
    assert out["mid_write_kills"] >= 3, out  # the kills did land inside atomic_write_bytes
    assert out["resumes_from_last_complete"] >= 1


# The full-data IMM tier's arms train for many hours and are stopped at the end of every session: the tier's own
# presets (SGD on the loss summed over time, plateau decay with reload of the best weights, IMM switched on at the
# first evaluation with its lr reset (to a high one here, so that plateau decays follow), carried-state sampled IMM one batch in five with the official clipping and
# the separate single-sample pass) on a tiny LSTM, so a resume must land inside the IMM schedule, the kept-aside
# IMM gradient and the sampler's random stream and still end bitwise where an uninterrupted run ends.
IMM_ARGS = ["train-lm", "--preset", "ptb-lstm-small-dropout,ptb-lstm-small-imm", "--device", "cpu", "--steps", "30",
            "--set", "data.batch_size=4", "--set", "data.bptt=8", "--set", "data.eval_batch_size=2",
            "--set", "model.d_model=16", "--set", "model.lstm.hidden_size=16", "--set", "optim.lr=0.1",
            "--set", "imm.lr_at_start=3", "--set", "imm.start_below_ppl=1e9", "--set", "imm.k=3", "--set", "imm.j=2",
            "--set", "run.eval_interval=6", "--set", "run.save_interval=1", "--set", "run.keep=1",
            "--set", "hardware.threads=1", "--seed", "5"]
IMM_KILLS = int(os.environ.get("LMLAB_IMM_KILLS", "6"))


def test_train_lm_with_imm_survives_sigkill_anywhere(tmp_path, tiny_data):
    spec = {"work": str(tmp_path), "kind": "lm", "kills": IMM_KILLS, "seed": 13, "args": [*IMM_ARGS, "--data", str(tiny_data)]}
    out = run_driver("campaign", spec)
    record("kill-train-lm-imm", out)
    assert out["errors"] == []
    assert out["kills"] >= IMM_KILLS and out["rounds_bitwise_equal"] == out["rounds"] >= 1
    assert out["resumes_from_last_complete"] >= 1
    rows = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lrs = [r["lr"] for r in rows if "valid_ppl" in r]
    assert lrs[:3] == [0.1, 3.0, 1.5], lrs  # IMM's switch-on reset the lr, then plateau decays reloaded the best weights
    assert sum("imm_loss_nats" in r for r in rows) >= 3  # sampled IMM batches, one in five once on


@pytest.fixture(scope="module")
def base_lm(tmp_path_factory, tiny_data):
    """A tiny Transformer LM checkpoint (random weights: the residual energy only needs a frozen base)."""
    import torch
    from lmlab.core.checkpoint import save_checkpoint
    from lmlab.core.config import to_dict
    from lmlab.core.data import DataDir
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.config import ModelConfig
    data = DataDir(tiny_data)
    cfg = ModelConfig(kind="transformer", d_model=16, n_layers=1)
    cfg.transformer.n_heads, cfg.transformer.context = 2, 32
    torch.manual_seed(0)
    lm = build_language_model(cfg, data.vocab_size)
    path = tmp_path_factory.mktemp("base") / "lm.pt"
    save_checkpoint(path, {"model": lm.state_dict(), "config": {"model": to_dict(cfg), "data": {"dir": str(tiny_data)}},
                           "vocab_size": data.vocab_size, "specials": data.specials, "tokenizer_json": data.tokenizer_json,
                           "tokenizer_sha256": data.tokenizer_sha256}, "lm")
    return path


def residual_args(tiny_data, base_lm, steps=12):
    return ["train-ebm", "--kind", "residual", "--base-lm", str(base_lm), "--device", "cpu", "--seed", "3",
            "--set", f"data.dir={tiny_data}", "--set", "window.prefix_len=8", "--set", "window.continuation_len=6",
            "--set", "energy.d_model=16", "--set", "energy.n_layers=1", "--set", "energy.n_heads=2",
            "--set", "energy.dropout=0.1", "--set", "negatives.per_prefix=3", "--set", f"schedule.max_steps={steps}",
            "--set", "data.batch_size=4", "--set", "schedule.warmup_steps=2", "--set", "optim.lr=1e-3",
            "--set", "valid.max_examples=8", "--set", "run.eval_interval=4", "--set", "run.save_interval=1",
            "--set", "run.keep=1", "--set", "hardware.threads=1"]


def gebm_args(steps=6):
    return ["train-ebm", "--kind", "gebm", "--device", "cpu", "--seed", "3", "--set", "data.kind=image",
            "--set", "data.dataset=synthetic-images", "--set", "data.subset=64", "--set", "model.width=4",
            "--set", "model.latent_dim=8", "--set", f"schedule.max_steps={steps}", "--set", "optim.energy_steps=2",
            "--set", "optim.energy_steps_init=3", "--set", "data.batch_size=16", "--set", "optim.init_log_partition_batches=2",
            "--set", "run.eval_interval=1", "--set", "run.keep=1", "--set", "run.log_every=1", "--set", "hardware.threads=1"]


@pytest.mark.parametrize("kind", ["residual", "gebm"])
def test_train_ebm_survives_sigkill_anywhere(tmp_path, tiny_data, base_lm, kind):
    args = residual_args(tiny_data, base_lm) if kind == "residual" else gebm_args()
    ckpt_kind = "residual-ebm" if kind == "residual" else "gebm"
    out = run_driver("campaign", {"work": str(tmp_path), "kind": ckpt_kind, "kills": EBM_KILLS, "seed": 12, "args": args})
    record(f"kill-train-ebm-{kind}", out)
    assert out["errors"] == []
    assert out["kills"] >= EBM_KILLS and out["rounds_bitwise_equal"] == out["rounds"] >= 1
    assert out["mid_write_kills"] >= 1, out


def test_signals_save_and_exit_zero_quickly(tmp_path, tiny_data, base_lm):
    """SIGTERM/SIGUSR1 (SLURM preemption) on train-lm and both train-ebm kinds: checkpoint, exit 0, bounded time."""
    lm = [*LM_ARGS[:4], "100000", *LM_ARGS[5:], "--data", str(tiny_data)]
    jobs = [{"name": "train-lm", "kind": "lm", "args": lm},
            {"name": "train-ebm-residual", "kind": "residual-ebm", "args": residual_args(tiny_data, base_lm, steps=100000)},
            {"name": "train-ebm-gebm", "kind": "gebm", "args": gebm_args(steps=100000)}]
    out = run_driver("signal", {"work": str(tmp_path), "jobs": jobs})
    record("signals", out, render=_render_signals)
    for job, per in out.items():
        for name, r in per.items():
            assert r["exit_code"] == 0 and r["logged_save"] and r["checkpoint_step"] > 0, (job, name, r)
            assert r["seconds_to_exit"] < 60, (job, name, r)  # one update + one checkpoint, on a loaded machine


def _render_signals(out: dict) -> str:
    rows = ["| command | signal | exit code | seconds from signal to exit | checkpoint step saved |", "|---|---|---|---|---|"]
    rows += [f"| `{job}` | {name} | {r['exit_code']} | {r['seconds_to_exit']} | {r['checkpoint_step']} |"
             for job, per in out.items() for name, r in per.items()]
    return ("Each run was started with a huge step budget, signalled once its first checkpoint existed, and timed "
            "until exit (forked driver, `python tests/test_kill_resume.py signal ...`).\n\n" + "\n".join(rows))
