"""bench/residual_tier.py, the #18 CPU tier's table: it reads the evaluations the Make target writes, refuses
evaluations of different windows, and says 'yes' only where the upper estimate is below the base LM and the paired
gain exceeds twice its standard error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _joint(gain: float, se: float, upper: float, windows: int = 100) -> dict:
    row = {"n": 64, "lower_ppl": upper - 1, "upper_ppl": upper,
           "paired_gain_lower": {"mean_nats_per_window": gain + 0.1, "se": se, "windows": windows},
           "paired_gain_upper": {"mean_nats_per_window": gain, "se": se, "windows": windows}}
    return {"examples": windows, "prefix_len": 40, "continuation_len": 20, "base_lm": {"ppl": 120.0}, "joint": [row],
            "per_position": {"positions": [{"position": t, "gain_nats_per_token": 0.01 * t, "gain_se": 0.002}
                                           for t in (1, 2, 3)]}}


def _run(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "residual_tier.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path)


def test_table_reads_the_claim_from_the_upper_estimate_and_the_paired_se(tmp_path):
    files = {"good": _joint(0.5, 0.1, 110.0), "noisy": _joint(0.15, 0.1, 110.0), "worse": _joint(0.5, 0.1, 125.0),
             "balm": {"examples": 100, "continuation_len": 20, "ppl": 118.0}}
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = _run(tmp_path, "--joint", "good=good.json", "--joint", "noisy=noisy.json", "--joint", "worse=worse.json",
               "--lm", "balm=balm.json", "--figure", "pos.png", "--json", "summary.json")
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| joint")}
    assert rows["joint good"].rstrip(" |").endswith("yes")
    assert rows["joint noisy"].rstrip(" |").endswith("no")  # 0.15 < 2 x 0.1
    assert rows["joint worse"].rstrip(" |").endswith("no")  # upper estimate above the base LM
    assert "| balm | | 118.00 |" in out.stdout and (tmp_path / "pos.png").stat().st_size > 0
    assert "| 3 | 0.0300 ± 0.0020 | 0.0300 ± 0.0020 | 0.0300 ± 0.0020 |" in out.stdout  # the figure's points with SEs
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["joint"]["good"]["paired_gain"]["mean_nats_per_window"] == 0.5 and summary["lm"]["balm"] == 118.0


def test_table_refuses_evaluations_of_other_windows(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_joint(0.5, 0.1, 110.0)))
    (tmp_path / "b.json").write_text(json.dumps(_joint(0.5, 0.1, 110.0, windows=50)))
    out = _run(tmp_path, "--joint", "a=a.json", "--joint", "b=b.json")
    assert out.returncode != 0 and "not the same tokens" in out.stderr


def test_algorithm_1_cost_and_memory_by_prompts_are_tabled(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_joint(0.5, 0.1, 110.0)))
    gen = {"prefixes": 16, "candidates": 32, "lm_pass_s": 2.0, "algorithm1_s": 2.5, "ratio": 1.25, "load_avg": [1.0, 1.1, 1.2],
           "memory": [{"prompts": 16, "batch_size": 16, "peak_rss_mb": 400.0}, {"prompts": 256, "batch_size": 16, "peak_rss_mb": 410.4}]}
    (tmp_path / "g.json").write_text(json.dumps(gen))
    out = _run(tmp_path, "--joint", "a=a.json", "--generation", "a=g.json", "--json", "s.json")
    assert out.returncode == 0, out.stderr
    assert "| a | 16 × 32 | 2.000 | 2.500 | 1.25 | 16: 400, 256: 410 (batch 16) | 1.0 1.1 1.2 |" in out.stdout
    assert json.loads((tmp_path / "s.json").read_text())["generation"]["a"]["ratio"] == 1.25


def test_fit_rows_set_the_energys_training_loss_beside_its_validation_and_the_base_lms_train_fit(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_joint(0.5, 0.1, 110.0)))
    (tmp_path / "train.json").write_text(json.dumps({"examples": 4000, "continuation_len": 20, "ppl": 55.0}))
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "train_loss_nats": 1.386 - 0.001 * s} for s in range(1, 101)]
    rows += [{"step": 50, "valid_loss_nats": 1.380}, {"step": 100, "valid_loss_nats": 1.385}]
    rows = [{"step": 0, "mlm_step": 100, "mlm_loss_nats": 6.5}, {"step": 0, "mlm_step": 200, "mlm_loss_nats": 6.0}] + rows
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _run(tmp_path, "--joint", "a=a.json", "--run", "a=run", "--base-train", "train.json", "--json", "s.json")
    assert out.returncode == 0, out.stderr
    assert "perplexity 55.00 on 4000 training windows against 120.00 on the test windows" in out.stdout
    assert "| a | 100 | 1.2905 | 1.3800 | 1.3800 (50) | 200, 6.000 |" in out.stdout  # train: mean over updates 91..100
    fit = json.loads((tmp_path / "s.json").read_text())["nce_fit"]["a"]
    assert fit["best_valid_step"] == 50 and fit["updates"] == 100
