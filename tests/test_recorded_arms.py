"""An arm of an earlier result stands in for its run dir once that is gone (run dirs are scratch, records are kept):
`lmlab plot RECORD.json#train-KEY`, `python -m lmlab.core.records --train KEY=RECORD.json#train-KEY`, and
bench/imm_paired.py --base-record."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import load_bench
from lmlab.core import records
from lmlab.core.errors import LmlabError
from lmlab.core.plot import metric_series, plot_runs, run_labels


def _paired_module():
    return load_bench("imm_paired")


def _run(path, valid, test):
    """A finished train-lm run: metrics rows, its stdout summary and eval-test.json."""
    path.mkdir(parents=True)
    rows = [{"step": 10 * (i + 1), "epoch": i + 1, "valid_ppl": v} for i, v in enumerate(valid)]
    rows.insert(1, {"step": 15, "epoch": 1, "train_loss_nats": 5.0, "tokens": 100, "tokens_per_s": 50.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "eval-test.json").write_text(json.dumps({"ppl": test}))
    summary = {"run_dir": str(path), "step": 10 * len(valid), "best_valid_ppl": min(valid), "wall_s": 100.0,
               "machine": {"cores": 2}}
    (path.parent / f"{path.name}.train.json").write_text(json.dumps(summary) + "\n")
    return path


@pytest.fixture
def earlier(tmp_path, monkeypatch):
    """An earlier paired result (dropout vs imm, seeds 1-2) recorded, then its run dirs deleted."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs" / "old"
    arms = {("dropout", "1"): ([300.0, 200.0, 201.5], 190.0), ("dropout", "2"): ([310.0, 205.25], 196.0),
            ("imm", "1"): ([290.0, 180.0], 170.0), ("imm", "2"): ([295.0, 185.0], 176.0)}
    for (arm, seed), (valid, test) in arms.items():
        _run(runs / f"{arm}-s{seed}", valid, test)
    paired = _paired_module()
    assert paired.main([str(runs), "--seeds", "1", "2", "--json", str(runs / "paired.json")]) == 0
    train = [f"--train={a}-s{s}={runs}/{a}-s{s}.train.json" for a, s in arms]
    assert records.main(["old", "--command", "make old", "--results-dir", "results", "--json",
                         f"paired={runs}/paired.json", *train]) == 0
    curves = {f"{a}-s{s}": metric_series(runs / f"{a}-s{s}", "valid_ppl", x="epoch") for a, s in arms}
    shutil.rmtree(runs)
    return tmp_path / "results" / "old.json", curves


def test_a_records_kept_curve_plots_as_its_run_did(earlier, tmp_path):
    record, curves = earlier
    ref = f"{record}#train-dropout-s1"
    assert metric_series(ref, "valid_ppl", x="epoch") == curves["dropout-s1"] == [(1, 300.0), (2, 200.0), (3, 201.5)]
    assert metric_series(ref, "valid_ppl")[-1] == (30, 201.5)  # x = update
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "metrics.jsonl").write_text('{"step": 5, "epoch": 1, "valid_ppl": 250.0}\n')
    assert run_labels([ref, tmp_path / "new"]) == ["dropout-s1", "new"]
    assert plot_runs([ref, tmp_path / "new"], tmp_path / "mixed.png", x="epoch").stat().st_size > 1000
    with pytest.raises(LmlabError, match="keeps only valid_ppl"):
        metric_series(ref, "train_loss_nats")
    with pytest.raises(LmlabError, match="no 'train-dropout-s9' in its metrics; its train entries: train-dropout-s1"):
        metric_series(f"{record}#train-dropout-s9", "valid_ppl")
    with pytest.raises(LmlabError, match="no such record"):
        metric_series(f"{tmp_path}/absent.json#train-x", "valid_ppl")


def test_a_new_record_reuses_an_arm_as_recorded_and_says_so(earlier, tmp_path):
    record, _ = earlier
    _run(tmp_path / "runs" / "new" / "define-s1", [280.0, 190.0], 180.0)
    assert records.main(["new", "--command", "make new", "--results-dir", "results",
                         "--train", f"standard-s1={record}#train-dropout-s1",
                         "--train", "define-s1=runs/new/define-s1.train.json"]) == 0
    new = json.loads((tmp_path / "results" / "new.json").read_text())
    old = json.loads(record.read_text())
    standard = new["metrics"]["train-standard-s1"]
    assert standard["recorded_in"] == str(record) and standard["recorded_commit"] == old["commit"]
    assert {k: v for k, v in standard.items() if not k.startswith("recorded_")} == old["metrics"]["train-dropout-s1"]
    assert new["wall_s"] == 100.0  # the new arm's wall time only: the recorded arm's belongs to its own record
    with pytest.raises(SystemExit, match="--train s=.*no 'train-nope'"):
        records.main(["bad", "--command", "x", "--results-dir", "results", "--train", f"s={record}#train-nope"])


def test_paired_base_figures_from_a_record_equal_those_of_its_runs(earlier, tmp_path):
    record, _ = earlier
    paired = _paired_module()
    new = tmp_path / "runs" / "new"
    for seed, (valid, test) in {"1": ([250.0, 195.0], 185.0), "2": ([260.0, 200.0], 193.0)}.items():
        _run(new / f"define-s{seed}", valid, test)
    assert paired.main([str(new), "--base", "dropout", "--arm", "define", "--claim", "not-above", "--seeds", "1", "2",
                        "--base-record", str(record), "--json", str(new / "p.json")]) == 0
    out = json.loads((new / "p.json").read_text())
    assert out["valid_ppl"]["per_seed"] == {"1": {"dropout": 200.0, "define": 195.0}, "2": {"dropout": 205.25, "define": 200.0}}
    assert out["test_ppl"]["per_seed"]["2"] == {"dropout": 196.0, "define": 193.0}
    assert out["base_record"]["seeds"] == ["1", "2"] and out["base_record"]["commit"] == json.loads(record.read_text())["commit"]
    # seed 2's base from a run dir instead: the same figures
    _run(tmp_path / "base" / "dropout-s2", [310.0, 205.25], 196.0)
    assert paired.main([str(new), "--base", "dropout", "--arm", "define", "--seeds", "1", "2", "--base-dir",
                        str(tmp_path / "base"), "--base-record", str(record), "--recorded-seeds", "1",
                        "--json", str(new / "q.json")]) == 0
    mixed = json.loads((new / "q.json").read_text())
    assert mixed["valid_ppl"]["per_seed"] == out["valid_ppl"]["per_seed"] and mixed["base_record"]["seeds"] == ["1"]
    with pytest.raises(SystemExit, match="holds no base run of seed.s. 3; it has 1 2"):
        paired.main([str(new), "--base", "dropout", "--arm", "define", "--seeds", "1", "3", "--base-record", str(record)])


def test_a_comparison_without_a_claim_prints_no_verdict(earlier, tmp_path, capsys):
    record, _ = earlier
    paired = _paired_module()
    new = tmp_path / "runs" / "new"
    for seed in ("1", "2"):
        _run(new / f"control-s{seed}", [240.0, 201.0], 191.0)
    assert paired.main([str(new), "--base", "dropout", "--arm", "control", "--claim", "none", "--seeds", "1", "2",
                        "--base-record", str(record), "--json", str(new / "c.json")]) == 0
    printed = capsys.readouterr().out
    assert "claim" not in printed and "control − dropout = -1.62" in printed
    assert json.loads((new / "c.json").read_text())["valid_ppl"]["difference"]["shows_claim"] is None


def test_a_third_seed_joins_both_arms_of_the_recorded_seeds(earlier, tmp_path):
    """--record: the tier's own earlier record gives both arms of seeds 1-2, seed 3 comes from run dirs; the figures
    equal those the deleted run dirs gave (make imm-ptb-cpu IMM_CPU_SEEDS='1 2 3' IMM_CPU_RECORDED_SEEDS='1 2')."""
    record, _ = earlier
    paired = _paired_module()
    runs = tmp_path / "runs" / "old"
    _run(runs / "dropout-s3", [305.0, 202.0], 192.0)
    _run(runs / "imm-s3", [292.0, 183.0], 173.0)
    assert paired.main([str(runs), "--seeds", "1", "2", "3", "--record", str(record), "--recorded-seeds", "1", "2",
                        "--json", str(runs / "p.json")]) == 0
    out = json.loads((runs / "p.json").read_text())
    assert out["valid_ppl"]["per_seed"] == {"1": {"dropout": 200.0, "imm": 180.0}, "2": {"dropout": 205.25, "imm": 185.0},
                                            "3": {"dropout": 202.0, "imm": 183.0}}
    assert out["test_ppl"]["per_seed"]["1"] == {"dropout": 190.0, "imm": 170.0}
    assert out["record"]["seeds"] == ["1", "2"] and out["valid_ppl"]["difference"]["n"] == 3
    with pytest.raises(SystemExit, match="give one"):
        paired.main([str(runs), "--seeds", "1", "--record", str(record), "--base-record", str(record)])


def test_a_chain_of_records_keeps_the_commit_each_seed_was_trained_at(earlier, tmp_path):
    """Seeds 1-2 read from a record that itself read seed 1 from an earlier one: seed 1 keeps that earlier commit."""
    record, _ = earlier
    data = json.loads(record.read_text())
    data["commit"] = "b" * 40
    data["metrics"]["paired"]["record"] = {"path": "results/older.json", "commit": "a" * 40, "seeds": ["1"]}
    record.write_text(json.dumps(data))
    paired = _paired_module()
    new = tmp_path / "runs" / "new"
    assert paired.main([str(new), "--seeds", "1", "2", "--record", str(record), "--json", str(new.parent / "c.json")]) == 0
    out = json.loads((new.parent / "c.json").read_text())
    assert out["record"]["commit"] == {"1": "a" * 40, "2": "b" * 40}


def test_a_record_names_what_each_arm_ran_on_when_its_arms_differ(earlier, tmp_path):
    """Arms recorded a seed at a time may come from different sessions, machines or torch builds: the record keeps
    each arm's (arm_machines) and its provenance names them, where the machine line names only the first arm's."""
    from lmlab.core.results_doc import provenance

    record, _ = earlier
    old = json.loads(record.read_text())
    assert old["arm_machines"] == {f"train-{a}-s{s}": {"cores": 2} for a in ("dropout", "imm") for s in ("1", "2")}
    assert "different machines" not in provenance(old)  # all four arms on one machine: the machine line says it
    new_run = _run(tmp_path / "runs" / "new" / "imm-s3", [280.0, 190.0], 180.0)
    summary_path = new_run.parent / "imm-s3.train.json"
    summary = json.loads(summary_path.read_text())
    summary["machine"] = {"cpu_model": "AMD EPYC", "cores": 2, "torch": "2.14.1", "torch_threads": 1, "load_avg_1_5_15": [1, 1, 1]}
    summary_path.write_text(json.dumps(summary))
    assert records.main(["new", "--command", "make new", "--results-dir", "results",
                         "--train", f"dropout-s1={record}#train-dropout-s1", f"--train=imm-s3={summary_path}"]) == 0
    new = json.loads((tmp_path / "results" / "new.json").read_text())
    assert new["arm_machines"] == {"train-dropout-s1": {"cores": 2},
                                   "train-imm-s3": {"cpu_model": "AMD EPYC", "cores": 2, "torch": "2.14.1", "torch_threads": 1}}
    assert ("Its arms ran on different machines or builds: dropout-s1 on 2 cores; "
            "imm-s3 on AMD EPYC, 2 cores, torch 2.14.1, 1 torch thread.") in provenance(new)
    # a record from before arm_machines: its arm takes that record's own machine
    del old["arm_machines"]
    old["machine"] = {"cpu_model": "Old CPU", "cores": 4, "torch": "2.13.0", "load_avg_1_5_15": [0, 0, 0]}
    record.write_text(json.dumps(old))
    assert records.main(["newer", "--command", "make newer", "--results-dir", "results",
                         "--train", f"imm-s2={record}#train-imm-s2", f"--train=imm-s3={summary_path}"]) == 0
    newer = json.loads((tmp_path / "results" / "newer.json").read_text())
    assert newer["arm_machines"]["train-imm-s2"] == {"cpu_model": "Old CPU", "cores": 4, "torch": "2.13.0"}
