"""bench/gpu_check.py: the GPU tier's check reads the trainers' progress lines into a rate and the hours for the whole
budget, and tells a goal that ran until its time limit from one that failed (with the failing line)."""
from __future__ import annotations

import json

from conftest import load_bench

gpu_check = load_bench("gpu_check")


def test_rate_from_first_to_last_line_of_the_last_phase():
    lines = ["python3 -m lmlab train-ebm ...",
             "[lmlab 10:00:00] mlm 1/100 loss=9",
             "[lmlab 10:00:20] mlm 41/100 loss=7",
             "[lmlab 10:00:30] nce 1/3600 loss=0.7",   # compilation and the first update: the rate starts here
             "[lmlab 10:00:40] nce 21/3600 loss=0.69",
             "[lmlab 10:00:50] nce 41/3600 loss=0.68"]
    p = gpu_check.progress_of(lines)
    assert p["phase"] == "nce" and p["done"] == 41 and p["total"] == 3600
    assert p["updates_per_s"] == 2.0  # (41 - 1) / 20 s
    assert abs(p["hours_for_total"] - 0.5) < 1e-12  # 3600 / 2 / 3600


def test_rate_across_midnight_and_with_one_line():
    assert gpu_check.progress_of(["[lmlab 23:59:55] train 1/10", "[lmlab 00:00:05] train 6/10"])["updates_per_s"] == 0.5
    one = gpu_check.progress_of(["[lmlab 12:00:00] train 1/10 loss=1"])
    assert one["updates_per_s"] is None and one["hours_for_total"] is None
    assert gpu_check.progress_of(["no progress here"]) is None
    timed = gpu_check.progress_of(["[lmlab 12:00:00] gebm 50/150000 step=50 s_per_step=0.25"])
    assert timed["updates_per_s"] == 4.0 and abs(timed["hours_for_total"] - 150000 / 4 / 3600) < 1e-9


def test_failure_is_reported_with_its_error_line():
    lines = ["python3 -m lmlab train-ebm ...", "lmlab: error: preset 'x' needs LMLAB_INCEPTION", "make: *** [x] Error 2"]
    assert gpu_check.last_error(lines) == "lmlab: error: preset 'x' needs LMLAB_INCEPTION"
    crashed = ["Traceback (most recent call last):", "FileNotFoundError: WikiText-2 not found", "make: *** [bench] Error 1"]
    assert gpu_check.last_error(crashed) == "FileNotFoundError: WikiText-2 not found"


def test_goals_run_under_make_with_their_limits(tmp_path, monkeypatch):
    # a Makefile whose goals stand for a run that is stopped by the limit and one that fails at once
    (tmp_path / "Makefile").write_text(
        "slow:\n\t@echo '[lmlab 10:00:00] train 1/100'; sleep 30\n"
        "broken:\n\t@echo 'lmlab: error: no such data ($(HW) $(X))'; exit 2\n")
    monkeypatch.chdir(tmp_path)
    rc = gpu_check.main(["--seconds", "2", "--hw", "gpu", "--logs", str(tmp_path / "logs"), "--json",
                         str(tmp_path / "c.json"), "slow=slow", "broken@9=broken,X=1"])
    rows = {r["name"]: r for r in json.loads((tmp_path / "c.json").read_text())["targets"]}
    assert rc == 0
    assert rows["slow"]["status"] == "running at the time limit" and rows["slow"]["exit"] == 124
    assert rows["slow"]["wall_s"] < 20 and rows["slow"]["progress"]["done"] == 1
    assert rows["broken"]["status"] == "failed" and rows["broken"]["limit_s"] == 9
    assert rows["broken"]["last_line"] == "lmlab: error: no such data (gpu 1)"
    assert rows["broken"]["command"] == "make broken HW=gpu X=1"
