"""A resumed run's wall time adds up over its processes (the result records report it)."""

from conftest import tiny_train_config
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import merge
from lmlab.core.reporting import NullReporter
from lmlab.core.train.lm_trainer import train_lm


def test_wall_time_accumulates_across_resumes(tmp_path, tiny_data):
    part = merge(tiny_train_config(tiny_data, tmp_path / "run"), {"schedule": {"max_steps": 6}})
    first = train_lm(part, NullReporter())
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "lm")["wall_s"]
    assert 0 < saved <= first["wall_s"]  # the last save precedes the end-of-run curves
    second = train_lm(tiny_train_config(tiny_data, tmp_path / "run"), NullReporter())
    assert second["wall_s"] >= saved + second["wall_s_this_process"] - 0.2  # rounding to 0.1 s
    assert second["wall_s_this_process"] < second["wall_s"]
