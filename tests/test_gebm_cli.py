"""GEBM through the CLI: `lmlab train-ebm --kind gebm` on red wine, `lmlab sample` to CSV, the evaluate entry point."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SHARED
from lmlab.cli.main import app

RED = SHARED / "uci-wine" / "winequality-red.csv"
# the preset's official recipe, shrunk to seconds: same code path, fewer/smaller updates
TINY = ["schedule.max_steps=2", "optim.energy_steps_init=2", "optim.energy_steps=1", "optim.noise_factor=2",
        "optim.init_log_partition_batches=1", "model.flow_transforms=2", "model.flow_hidden=8",
        "run.eval_interval=2", "eval.is_samples=500", "hardware.threads=1"]


def test_train_sample_evaluate_cli(tmp_path, monkeypatch):
    if not RED.exists():
        pytest.skip(f"shared data not present: {RED}")
    monkeypatch.setenv("LMLAB_REDWINE", str(RED))
    runner = CliRunner()
    run = tmp_path / "R"
    args = ["train-ebm", "--kind", "gebm", "--preset", "gebm-uci-redwine,cpu", "--run-dir", str(run), "--quiet"]
    for kv in TINY:
        args += ["--set", kv]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["completed"] and summary["step"] == 2 and summary["updates"] == 2 + 2 + 2
    best = run / "checkpoints" / "best.pt"
    assert best.exists()

    out = tmp_path / "s.csv"
    res = runner.invoke(app, ["sample", "-c", str(best), "--sampler", "kla", "-n", "64", "--steps", "3",
                              "--step-size", "1e-3", "--beta", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = np.loadtxt(out, delimiter=",")
    assert rows.shape == (64, 11) and np.isfinite(rows).all()  # 11 whitened wine columns
    res = runner.invoke(app, ["sample", "-c", str(best), "-n", "2", "-o", str(out)])
    assert res.exit_code != 0 and "exists" in res.output  # no silent overwrite

    from lmlab.core.gebm.evaluate import main as evaluate_main
    r = evaluate_main([str(best), "--is-samples", "2000", "--device", "cpu", "--out", str(tmp_path / "nll.json")])
    assert r["rows"] == 159 and np.isfinite(r["nll_gebm_nats"]) and np.isfinite(r["nll_gebm_exact_nats"])
    assert json.loads((tmp_path / "nll.json").read_text())["nll_base_nats"] == pytest.approx(r["nll_base_nats"])


def test_device_cuda_n_is_accepted_and_checked(tmp_path):
    """`--device cuda:1`, as --help advertises, reaches the device check (not a choices refusal). (Under torchrun
    GEBM trains data-parallel: tests/test_distributed.py::test_torchrun_gebm_matches_one_process.)"""
    import torch
    from conftest import invoke
    from test_cli import assert_one_line_error
    args = ["train-ebm", "--kind", "gebm", "--set", "data.dataset=synthetic-density", "--set", "data.kind=density",
            "--run-dir", str(tmp_path / "r"), "-q"]
    if not torch.cuda.is_available():
        assert_one_line_error(invoke(*args, "--device", "cuda:1"), "--device cuda:1", "CUDA is not available")
    assert_one_line_error(invoke(*args, "--device", "cuda:x"), "hardware.device")
