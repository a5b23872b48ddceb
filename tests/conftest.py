"""Shared fixtures: tiny corpora and data dirs made by the tests themselves, so nothing needs the network."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMLAB_SHARED_DATA", REPO.parent / "shared" / "data"))

WORDS = ("the cat dog sat on a mat and ran to house with big small red blue green tree under over "
         "quick brown fox jumps lazy river stone bird sings morning night").split()


def load_bench(name: str):
    """A script under bench/ as a module (bench/ is not a package): its functions for a test to call."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_corpus(path: Path, lines: int, seed: int = 0) -> Path:
    """A tiny synthetic English-like corpus with a learnable bigram structure."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(4, 12)
        w = rng.choice(WORDS)
        sent = [w]
        for _ in range(n - 1):
            # strong bigram regularity: mostly the next word in the list
            w = WORDS[(WORDS.index(w) + 1) % len(WORDS)] if rng.random() < 0.7 else rng.choice(WORDS)
            sent.append(w)
        out.append(" ".join(sent))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("text")
    return {"train": make_corpus(d / "train.txt", 600, 1), "valid": make_corpus(d / "valid.txt", 60, 2),
            "test": make_corpus(d / "test.txt", 60, 3)}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_text) -> Path:
    from lmlab.core.prep import prep
    from lmlab.core.textio import TextSource
    out = tmp_path_factory.mktemp("data") / "tiny"
    prep(out, {k: [TextSource(str(v))] for k, v in tiny_text.items()})
    return out


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread contention (restored afterwards for other tests).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole module, its module-scoped fixtures included (they train or decode before the first
    test). Use with `pytestmark = pytest.mark.usefixtures("one_thread_module")`: pytest sets up a mark's fixtures
    before the module-scoped ones a test asks for by name."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_train_config(data_dir: Path, run_dir: Path, **overrides):
    """A seconds-long LSTM config on the tiny data."""
    from lmlab.core.config import merge
    from lmlab.core.train.config import TrainConfig
    base = {"data": {"dir": str(data_dir), "batch_size": 8, "bptt": 16, "eval_batch_size": 2},
            "model": {"kind": "lstm", "d_model": 16, "n_layers": 1, "lstm": {"hidden_size": 16, "dropout": 0.1}},
            "optim": {"name": "adamw", "lr": 0.02, "clip": 1.0},
            "schedule": {"name": "constant", "epochs": 0, "max_steps": 12},
            "run": {"dir": str(run_dir), "eval_interval": 4, "keep": 1, "log_interval_s": 1000.0},
            "hardware": {"device": "cpu", "threads": 1}, "seed": 7}
    cfg = merge(TrainConfig(), base)
    return merge(cfg, overrides) if overrides else cfg


def invoke(*args, input=None):
    """Run an `lmlab` command in-process (typer's CliRunner); exceptions propagate."""
    from typer.testing import CliRunner
    from lmlab.cli.main import app
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def train_tiny_lm(data_dir: Path, run_dir: Path, steps: int) -> Path:
    """The tiny LSTM config trained for `steps` updates, evaluated every 30; returns its checkpoints dir."""
    from lmlab.core.config import merge
    from lmlab.core.reporting import NullReporter
    from lmlab.core.train.lm_trainer import train_lm
    train_lm(merge(tiny_train_config(data_dir, run_dir), {"schedule": {"max_steps": steps}, "run": {"eval_interval": 30}}),
             NullReporter())
    return run_dir / "checkpoints"


def tiny_lm_argv(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """`python -m lmlab train-lm` on the tiny one-layer 16-wide LSTM, one thread, constant lr, for a subprocess."""
    return [sys.executable, "-m", "lmlab", "train-lm", "--data", str(data_dir), "--run-dir", str(run_dir), "--device", "cpu",
            "--set", "data.batch_size=4", "--set", "data.bptt=8", "--set", "model.d_model=16", "--set", "model.n_layers=1",
            "--set", "model.lstm.hidden_size=16", "--set", "hardware.threads=1", "--set", "schedule.name=constant", *extra]


def run_cli(*args: str, input: str | None = None, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `lmlab ...` in a subprocess (what a shell user does)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("LMLAB_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "lmlab", *args], input=input, capture_output=True, text=True,
                          cwd=cwd or REPO, env=full_env, timeout=timeout)


def preset_variables() -> list[str]:
    """Every environment variable a shipped preset requires (`${VAR}` or `${VAR:?what}`, no default)."""
    from lmlab.core.preset_env import VAR
    found = [m.group(1) for p in sorted((REPO / "presets").glob("*.toml")) for m in VAR.finditer(p.read_text())
             if m.group(2) != ":-"]
    return sorted(set(found))


@pytest.fixture()
def preset_env(monkeypatch, tmp_path) -> Path:
    """Those variables set to paths under a scratch dir (which need not exist: for tests that resolve configs
    without reading data)."""
    for var in preset_variables():
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return tmp_path


def needs_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared datasets are only on development and CI machines)")
    return path
