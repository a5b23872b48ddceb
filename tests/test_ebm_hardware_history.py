"""train-ebm, like train-lm: a run stopped and resumed on another torch build keeps a hardware history in its
checkpoints and summary ([first update, hardware] per stretch), and its summary names this process's machine, so a
record made from it says what each stretch ran on."""

import signal

import pytest

from lmlab.core.gebm import train as gebm_train
from lmlab.core.reporting import NullReporter
from lmlab.core.residual import train as residual_train
from reporters import StopAt
from test_gebm_train import tiny_density_cfg
from test_residual_train import StopInPhase, make_cfg, setup  # noqa: F401 (fixture: a tiny data dir and a seeded base LM)

pytestmark = pytest.mark.usefixtures("one_thread")


def _builds(monkeypatch, module):
    """Two torch builds of this machine, switched between processes; returns the switch."""
    real = module.machine_info()
    built = [dict(real, torch="2.13.0+cpu"), dict(real, torch="2.14.1+cpu")]

    def use(i):
        monkeypatch.setattr(module, "machine_info", lambda: built[i])
    use(0)
    return use


def _torches(summary):
    return [(step, hw["torch"]) for step, hw in summary["hardware_history"]]


def test_gebm_run_resumed_on_another_build_lists_both_stretches(tmp_path, monkeypatch):
    use = _builds(monkeypatch, gebm_train)
    first = gebm_train.train(tiny_density_cfg(tmp_path / "run"), StopAt(3, signal.SIGUSR1))
    assert first["stopped_by"] == "SIGUSR1" and _torches(first) == [(0, "2.13.0+cpu")]
    use(1)
    second = gebm_train.train(tiny_density_cfg(tmp_path / "run"), NullReporter())
    assert second["completed"] and _torches(second) == [(0, "2.13.0+cpu"), (3, "2.14.1+cpu")]
    assert second["machine"]["torch"] == "2.14.1+cpu" and "load_avg_at_end" in second["machine"]
    again = gebm_train.train(tiny_density_cfg(tmp_path / "again"), NullReporter())
    assert [step for step, _ in again["hardware_history"]] == [0]


def test_residual_run_resumed_on_another_build_lists_both_stretches(setup, monkeypatch):  # noqa: F811
    root, ckpt = setup
    use = _builds(monkeypatch, residual_train)
    first = residual_train.train(make_cfg(root, ckpt, "run-hw"), StopInPhase(2, "nce"))
    assert first["stopped_by"] == "SIGTERM" and _torches(first) == [(0, "2.13.0+cpu")]
    use(1)
    second = residual_train.train(make_cfg(root, ckpt, "run-hw"), NullReporter())
    assert second["stopped_by"] is None and _torches(second) == [(0, "2.13.0+cpu"), (2, "2.14.1+cpu")]
    assert second["machine"]["torch"] == "2.14.1+cpu" and "load_avg_at_end" in second["machine"]
