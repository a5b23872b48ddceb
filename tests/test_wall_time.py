"""A resumed run's wall time adds up over its processes (the result records report it)."""

from conftest import tiny_train_config
from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
from lmlab.core.config import merge
from lmlab.core.reporting import NullReporter
from lmlab.core.train.lm_trainer import train_lm


def test_wall_time_accumulates_across_resumes(tmp_path, tiny_data):
    part = merge(tiny_train_config(tiny_data, tmp_path / "run"), {"schedule": {"max_steps": 6}})
    first = train_lm(part, NullReporter())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last, "lm")
    assert 0 < state["wall_s"] <= first["wall_s"] + 0.05  # the last save precedes the end-of-run curves
    # Pretend the first process ran for 1000 s, so that a tiny run's rounding cannot hide the sum.
    state["wall_s"] = 1000.0
    save_checkpoint(last, state, "lm")
    second = train_lm(tiny_train_config(tiny_data, tmp_path / "run"), NullReporter())
    assert 1000.0 + second["wall_s_this_process"] - 0.1 <= second["wall_s"]
    assert second["wall_s"] <= 1000.0 + second["wall_s_this_process"] + 0.1  # rounding to 0.1 s
