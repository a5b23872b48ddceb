"""Which config differences stop a resume: an objective's own section does not, for a run that never reads it."""

import pytest

from lmlab.core.errors import LmlabError
from lmlab.core.rundir import RunDir


def _config(objective="ce", j=5, lr=1.0):
    return {"objective": objective, "imm": {"j": j, "k": 10}, "noising": {"gamma": 0.2},
            "optim": {"lr": lr}, "run": {"dir": "x"}}


def _started(tmp_path, config):
    run = RunDir(tmp_path / "run")
    run.prepare(config)
    run.last.write_bytes(b"checkpoint")  # what a first save leaves behind
    return run


def test_unused_objective_section_may_change(tmp_path):
    _started(tmp_path, _config("ce", j=5))
    assert RunDir(tmp_path / "run").prepare(_config("ce", j=0)) is True  # IMM's default changed; a CE run resumes


def test_used_objective_section_may_not_change(tmp_path):
    _started(tmp_path, _config("imm", j=5))
    with pytest.raises(LmlabError, match="imm.j=5, now imm.j=0"):
        RunDir(tmp_path / "run").prepare(_config("imm", j=0))


def test_other_keys_still_refused(tmp_path):
    _started(tmp_path, _config("ce"))
    with pytest.raises(LmlabError, match="optim.lr"):
        RunDir(tmp_path / "run").prepare(_config("ce", lr=2.0))


def test_a_plateau_stop_may_move_on_resume(tmp_path):
    """The stop rules of the plateau schedule set a run's length, like epochs: a stopped run may go on to a later
    stop (e.g. the official count of decays in all after an lr floor stopped it)."""
    config = {**_config("ce"), "schedule": {"name": "plateau", "min_lr": 0.005, "max_decays": 0}}
    _started(tmp_path, config)
    later = {**config, "schedule": {"name": "plateau", "min_lr": 0.0, "max_decays": 8}}
    assert RunDir(tmp_path / "run").prepare(later) is True
