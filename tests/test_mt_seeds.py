"""bench/mt_seeds.py: the seeded Multi30k pair's statistics, by hand, and a recorded pair read as one more seed."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "mt_seeds.py"


def fake_run(run: Path, bleu: float, chrf: float, bleu_best: float, ppl: float, embedding: int) -> dict:
    """The files bench/mt_pair.py reads of one translation run; returns its system dict."""
    (run / "checkpoints").mkdir(parents=True)
    run.with_name(run.name + ".train.json").write_text(json.dumps(
        {"params": embedding + 1000, "embedding_params": embedding, "step": 100, "best_valid_ppl": ppl, "wall_s": 60.0}))
    (run / "checkpoints" / "average.json").write_text(json.dumps({"averaged_from": [{"step": 90}, {"step": 100}]}))
    (run / "test.bleu.json").write_text(json.dumps([{"name": "BLEU", "score": bleu}, {"name": "chrF2", "score": chrf}]))
    (run / "test-best.bleu.json").write_text(json.dumps([{"name": "BLEU", "score": bleu_best}, {"name": "chrF2", "score": 0.0}]))
    return {"params": embedding + 1000, "embedding_params": embedding, "updates": 100, "best_valid_ppl": ppl,
            "train_wall_s": 60.0, "averaged_updates": [90, 100], "test_best": {"BLEU": bleu_best, "chrF2": 0.0},
            "test_average": {"BLEU": bleu, "chrF2": chrf}}


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def tier(tmp_path):
    """Seeds 1 and 2 as run dirs, seed 1234 as a `make mt-multi30k-*` record."""
    runs = tmp_path / "seeds"
    # (standard, define) BLEU averaged per seed
    for seed, (bs, bd) in {"1": (36.0, 35.0), "2": (37.0, 35.5)}.items():
        fake_run(runs / f"standard-s{seed}", bs, 60.0, bs - 0.5, 6.5, 640)
        fake_run(runs / f"define-s{seed}", bd, 59.0, bd - 0.5, 7.5, 440)
    record = tmp_path / "mt-multi30k-en-de.json"
    record.write_text(json.dumps({"commit": "abcdef0123", "metrics": {"pair": {"systems": {
        "standard": fake_run(tmp_path / "r" / "standard", 35.0, 61.0, 34.0, 6.0, 640),
        "define": fake_run(tmp_path / "r" / "define", 35.1, 60.0, 34.1, 7.0, 440)}}}}))
    return runs, record


def test_the_paired_difference_and_its_se_by_hand(tier, tmp_path):
    runs, record = tier
    out_json = tmp_path / "out.json"
    proc = run_script(runs, "--seeds", "1", "2", "--recorded", f"1234={record}", "--json", out_json)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(out_json.read_text())
    assert out["seeds"] == ["1234", "1", "2"]
    d = [35.1 - 35.0, 35.0 - 36.0, 35.5 - 37.0]  # define − standard, BLEU averaged, per seed
    se = statistics.stdev(d) / math.sqrt(3)
    bleu = out["bleu_averaged"]
    assert bleu["difference"]["mean"] == pytest.approx(statistics.fmean(d))
    assert bleu["difference"]["se"] == pytest.approx(se)
    assert bleu["standard"]["mean"] == pytest.approx(36.0) and bleu["define"]["mean"] == pytest.approx(35.2)
    assert bleu["standard"]["sd"] == pytest.approx(1.0)
    # mean −0.8, se 0.47: within −2 SE, so "no worse" holds; chrF2 is 1 lower in every seed (se 0): it does not
    assert bleu["difference"]["not_worse_by_2se"] is True
    assert out["chrf2_averaged"]["difference"]["not_worse_by_2se"] is False
    # lower is better for perplexity: +1 in every seed is worse
    assert out["best_valid_ppl"]["difference"]["mean"] == pytest.approx(1.0)
    assert out["best_valid_ppl"]["difference"]["not_worse_by_2se"] is False
    assert out["recorded"]["1234"].endswith("(commit abcdef0)")
    # the shape docs/results.md's claims table reads: the claim, and a verdict only on the metrics it is about
    assert out["claim"] == "not-worse" and (out["base"], out["arm"]) == ("standard", "define")
    assert out["bleu_averaged"]["difference"]["shows_claim"] is True
    assert out["chrf2_averaged"]["difference"]["shows_claim"] is False
    assert out["best_valid_ppl"]["difference"]["shows_claim"] is None
    assert "| BLEU averaged | mean ± sd | 36.00 ± 1.00 | 35.20 ± 0.26 | -0.80 ± 0.47 (SE) |" in proc.stdout
    assert "BLEU averaged: define − standard = -0.80 ± 0.47 (SE, 3 seeds): this shows" in proc.stdout
    assert "chrF2 averaged: define − standard = -1.00 ± 0.00 (SE, 3 seeds): this does not show" in proc.stdout
    assert "31% fewer parameters" in proc.stdout


def test_bad_input_is_one_line(tier, tmp_path):
    runs, record = tier
    for args, says in [(["--seeds", "1"], "at least two seeds"),
                       (["--seeds", "1", "--recorded", str(record)], "expected SEED="),
                       (["--seeds", "1", "--recorded", f"7={tmp_path / 'none.json'}"], "not a translation pair record"),
                       (["--seeds", "1", "3"], "not found"),
                       (["--seeds", "1", "2", "--recorded", f"1={record}"], "seed 1 is given twice")]:
        proc = run_script(runs, *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert says in proc.stderr, proc.stderr
