"""bench/gebm_wine_official.py: epochs from data updates, the two selection rules, values at fixed epochs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmlab.core.config import merge, to_dict
from lmlab.core.gebm import data as gdata
from lmlab.core.gebm.train import Config

from conftest import load_bench

wine = load_bench("gebm_wine_official")


def run_dir(path: Path, objective: str, rows: list[dict]) -> Path:
    cfg = merge(Config(), {"data": {"kind": "density", "dataset": "synthetic-density", "batch_size": 10},
                           "optim": {"objective": objective, "energy_steps": 5, "energy_steps_init": 20, "init_every": 500}})
    path.mkdir()
    (path / "config.json").write_text(json.dumps(to_dict(cfg)))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"step": 1, "loss": 1.0}, *rows]))
    return path


def test_epochs_selection_rules_and_fixed_epochs(tmp_path):
    n = len(gdata.load_for_config(merge(Config(), {"data": {"kind": "density", "dataset": "synthetic-density"}}).data)["train"])
    g = "nll_gebm_nats"
    gebm = run_dir(tmp_path / "g", "gebm", [
        {"step": 2, f"valid_{g}": 5.0, f"test_{g}": 4.0},     # 20 + 20 energy updates
        {"step": 4, f"valid_{g}": 3.0, f"test_{g}": 3.5},     # + 5 + 5
        {"step": 6, f"valid_{g}": 3.2, f"test_{g}": 3.0}])    # + 5 + 5: min over test here, validation picks step 4
    mle = run_dir(tmp_path / "m", "mle", [{"step": 100, "valid_nll_base_nats": 2.0, "test_nll_base_nats": 2.5}])
    rows, facts = wine.curve(gebm)
    assert facts["train_rows"] == n
    assert [r["epoch"] for r in rows] == pytest.approx([400 / n, 500 / n, 600 / n])  # energy updates x batch 10 / rows
    s = wine.summary(rows, None)
    assert s["validation_selected"]["step"] == 4 and s["validation_selected"]["test"] == 3.5
    assert s["min_over_test"]["step"] == 6 and s["min_over_test"]["test"] == 3.0
    mid = wine.at_epoch(rows, 450 / n)  # halfway between the first two evaluations
    assert mid["test"] == pytest.approx(3.75) and mid["valid"] == pytest.approx(4.0)
    assert wine.curve(mle)[0][0]["epoch"] == pytest.approx(1000 / n)  # one batch per MLE update

    test_json = tmp_path / "t.json"
    test_json.write_text(json.dumps({"nll_gebm_nats": 3.4, "is_samples": 50000, "log_z_se": 0.01}))
    out = tmp_path / "s.json"
    assert wine.main(["--gebm", str(gebm), "--mle", str(mle), "--test-gebm", str(test_json), "--official", "40:13.67",
                      "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["arms"]["GEBM"]["summary"]["validation_selected"]["test_reestimated"] == 3.4
    assert res["official"] == [[40.0, 13.67]]


def test_bad_official_points_are_one_error_line(tmp_path):
    with pytest.raises(SystemExit, match="expected EPOCH:NLL"):
        wine.main(["--gebm", str(tmp_path), "--mle", str(tmp_path), "--official", "forty"])
