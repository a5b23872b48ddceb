"""docs/ figures are generated from results/ records (`make results`), never typed: the committed docs equal what the
records render, a hand edit of a generated figure is caught, and a record assembled from a pipeline's files
carries the command, commit, date, machine (load at start and end), wall time and metrics."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest

from conftest import REPO
from lmlab.core import records, results_doc, results_views

DOCS_WITH_REGIONS = sorted(p.name for p in (REPO / "docs").glob("*.md") if results_doc.REGION.search(p.read_text()))


def test_committed_docs_equal_what_the_records_render():
    problems = results_doc.update_docs(REPO / "docs", REPO / "results", check=True)
    assert not problems, "\n".join(problems)[:3000] + "\n(run `make results`)"


def test_every_record_has_a_region_and_every_region_renders():
    recs = records.read_records(REPO / "results")
    assert {"demo", "bench", "reliability-doc"} <= set(recs)
    names = set()
    for doc in (REPO / "docs").glob("*.md"):
        names.update(results_doc.region_names(doc.read_text()))
    assert set(recs) <= names
    for name in names:  # every region renders (from its record, or as "not yet recorded")
        assert results_doc.render(name, recs).strip()
    keys = {m["key"] for doc in (REPO / "docs").glob("*.md") for m in results_doc.REGION.finditer(doc.read_text())}
    assert set(results_doc.VIEWS) <= keys, "a view no doc shows"
    papers = {"define.md", "imm.md", "residual.md", "gebm.md", "translation.md", "bench.md"}
    assert papers | {"results.md"} <= set(DOCS_WITH_REGIONS)
    in_results = set(results_doc.region_names((REPO / "docs/results.md").read_text()))
    assert names - in_results == set(), "docs/results.md must show every result a paper doc shows"


def _copy(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copytree(REPO / "results", tmp_path / "results")
    return tmp_path / "docs", tmp_path / "results"


def test_a_hand_edit_of_a_generated_figure_is_caught_and_make_results_restores_it(tmp_path):
    docs, res = _copy(tmp_path)
    path = docs / "results.md"
    original = path.read_text()
    start = original.index("<!-- generated:bench -->")
    end = original.index("<!-- /generated:bench -->")
    region = original[start:end]
    row = next(line for line in region.splitlines() if line.startswith("| prep"))
    edited_row = row.replace("|", "| 1", 2).replace("| 1", "|", 1)  # a digit typed into the table
    assert edited_row != row
    path.write_text(original[:start] + region.replace(row, edited_row) + original[end:])
    problems = results_doc.update_docs(docs, res, check=True)
    assert len(problems) == 1 and "results.md" in problems[0] and edited_row in problems[0]
    assert results_doc.main(["--check", "--docs", str(docs), "--results", str(res)]) == 1
    assert results_doc.update_docs(docs, res) == []  # make results
    assert path.read_text() == original


@pytest.mark.parametrize("doc", DOCS_WITH_REGIONS)
def test_a_hand_edit_of_any_region_of_any_doc_is_caught(tmp_path, doc):
    """Every region of every doc (whole records, views, "not yet recorded"): a digit typed into it is caught by
    --check and removed by `make results`."""
    docs, res = _copy(tmp_path)
    path = docs / doc
    original = path.read_text()
    for m in results_doc.REGION.finditer(original):
        start = m.start("body")
        path.write_text(original[:start] + "7" + original[start:])
        problems = results_doc.update_docs(docs, res, check=True)
        assert len(problems) == 1 and doc in problems[0] and f"\n-7{m['body'][:20]}" in problems[0], (m["key"], problems)
        assert results_doc.update_docs(docs, res) == []
        assert path.read_text() == original, m["key"]


def test_a_figure_typed_outside_the_record_or_a_stale_record_is_caught(tmp_path):
    docs, res = _copy(tmp_path)
    rec = json.loads((res / "bench.json").read_text())
    figure = re.search(r"\| (\d{1,3}(?:,\d{3})+) \|", rec["markdown"]).group(1)  # the table's first large figure
    rec["markdown"] = rec["markdown"].replace(figure, "2,000,000")  # the record changed, docs not regenerated
    (res / "bench.json").write_text(json.dumps(rec))
    assert any("results.md" in p for p in results_doc.update_docs(docs, res, check=True))
    (res / "orphan.json").write_text(json.dumps({**rec, "name": "orphan"}))
    assert results_doc.update_docs(docs, res) == []  # make results renders (and warns about the orphan)
    assert "2,000,000" in (docs / "results.md").read_text()
    assert results_doc.update_docs(docs, res, check=True) == [
        "results/orphan.json: no <!-- generated:orphan --> region in " + f"{docs}/*.md shows it"]


def test_a_region_without_a_record_says_not_yet_recorded_and_names_the_target():
    text = "a\n<!-- generated:imm-ptb -->\nold typed figure 81.6\n<!-- /generated:imm-ptb -->\nb\n"
    out = results_doc.render_text(text, {})
    assert "old typed figure" not in out and "Not yet recorded: `make imm-ptb`" in out
    assert out.startswith("a\n") and out.endswith("b\n")


def _lm_files(tmp_path):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {"kind": "lstm", "n_layers": 2, "lstm": {"hidden_size": 200},
                                                           "output": {"tie": False}}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "tokens": 4000, "tokens_per_s": 1234.56}) + "\n"
                                       + json.dumps({"step": 10, "valid_ppl": 150.0}) + "\n")
    machine = {"cpu_model": "Test CPU", "cores": 2, "torch": "2.13.0+cpu", "gpu": None,
               "load_avg_1_5_15": [1.5, 1.0, 0.5], "load_avg_at_end": [2.5, 1.2, 0.6]}
    summary = {"run_dir": str(run), "step": 10, "wall_s": 61.0, "machine": machine, "stopped_by": None,
               "params_total": 4653200, "params_embedding": 2000000}
    (tmp_path / "x.train.json").write_text(json.dumps(summary))
    for split, ppl, tokens in (("valid", 120.0, 73759), ("test", 115.0, 82429)):
        (run / f"eval-{split}.json").write_text(json.dumps({"tokens": tokens, "nats_per_token": 4.79,
                                                            "bits_per_token": 6.9, "ppl": ppl}))
    return run


def test_record_cli_assembles_a_record_from_a_pipelines_files(tmp_path):
    run = _lm_files(tmp_path)
    argv = ["ptb-x", "--kind", "lm", "--command", "make ptb-x HW=cpu", "--train", str(tmp_path / "x.train.json"),
            "--json", f"valid={run}/eval-valid.json", "--json", f"test={run}/eval-test.json",
            "--paper", "valid_ppl=120.7", "--paper", "test_ppl=114.5", "--paper-source", "Zaremba et al. 2014, Table 1",
            "--results-dir", str(tmp_path / "results")]
    assert records.main(argv) == 0
    rec = json.loads((tmp_path / "results" / "ptb-x.json").read_text())
    assert rec["command"] == "make ptb-x HW=cpu" and rec["kind"] == "lm" and rec["wall_s"] == 61.0
    assert len(rec["commit"]) == 40 and rec["date"][:2] == "20"
    assert rec["machine"]["cpu_model"] == "Test CPU" and rec["machine"]["load_avg_at_end"] == [2.5, 1.2, 0.6]
    train = rec["metrics"]["train"]
    assert train["model"] == "LSTM 2x200" and train["tokens_per_s"] == 1234.6 and "machine" not in train
    assert train["valid_curve"] == [[10, None, 150.0]]  # the curve survives the run dir
    assert rec["paper"] == {"valid_ppl": 120.7, "test_ppl": 114.5, "source": "Zaremba et al. 2014, Table 1"}
    out = results_doc.render("ptb-x", {"ptb-x": rec})
    assert "`make ptb-x HW=cpu`" in out and "Test CPU, 2 cores" in out and "1.50 at start, 2.50 at end" in out
    assert "| test | LSTM 2x200 | 82,429 | 4.790 | 6.900 | **115.0** | 114.5 |" in out
    assert "4,653,200 parameters" in out and "1 min 01 s" in out


def test_record_cli_takes_seeds_as_make_holds_them(tmp_path):
    """IMM_CPU_SEEDS='1 2' reaches the record as one space-separated argument; repeated flags add up."""
    argv = ["s", "--command", "make s", "--seed", "1 2", "--seed", "3", "--results-dir", str(tmp_path)]
    assert records.main(argv) == 0
    assert json.loads((tmp_path / "s.json").read_text())["seeds"] == [1, 2, 3]
    with pytest.raises(SystemExit):
        records.main(["s", "--command", "make s", "--seed", "one", "--results-dir", str(tmp_path)])


def test_record_cli_refuses_a_stopped_run(tmp_path):
    _lm_files(tmp_path)
    summary = json.loads((tmp_path / "x.train.json").read_text())
    (tmp_path / "x.train.json").write_text(json.dumps({**summary, "stopped_by": "SIGTERM"}))
    try:
        records.main(["x", "--command", "c", "--train", str(tmp_path / "x.train.json"), "--results-dir", str(tmp_path)])
    except SystemExit as exc:
        assert "did not complete" in str(exc)
    else:
        raise AssertionError("a stopped run was recorded")


def test_record_since_a_start_file_gives_wall_time_and_load_at_both_ends(tmp_path, monkeypatch):
    import time
    start = {"cpu_model": "Test CPU", "cores": 2, "torch": "t", "gpu": None, "load_avg_1_5_15": [0.5, 0.5, 0.5],
             "time": time.time() - 90}
    (tmp_path / "start.json").write_text(json.dumps(start))
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp_path / "t.md").write_text("# Title\n\n| a |\n|---|\n| 1 |\n")
    monkeypatch.setattr("lmlab.core.machine.load_average", lambda: [3.0, 2.0, 1.0])
    records.main(["t", "--command", "make t", "--since", str(tmp_path / "start.json"), "--jsonl", f"rows={tmp_path}/rows.jsonl",
                  "--markdown", str(tmp_path / "t.md"), "--results-dir", str(tmp_path / "r")])
    rec = json.loads((tmp_path / "r" / "t.json").read_text())
    assert 89 < rec["wall_s"] < 120 and rec["machine"]["load_avg_at_end"] == [3.0, 2.0, 1.0]
    assert "time" not in rec["machine"] and rec["metrics"]["rows"] == [{"a": 1}, {"a": 2}] and rec["kind"] == "markdown"
    assert results_doc.render("t", {"t": rec}).endswith("## Title\n\n| a |\n|---|\n| 1 |")


def test_a_resumed_run_says_its_throughput_and_load_are_its_last_processs(tmp_path):
    _lm_files(tmp_path)
    summary = json.loads((tmp_path / "x.train.json").read_text())
    (tmp_path / "x.train.json").write_text(json.dumps({**summary, "wall_s": 100.0, "wall_s_this_process": 40.0}))
    records.main(["x", "--kind", "lm", "--command", "make x", "--train", str(tmp_path / "x.train.json"),
                  "--results-dir", str(tmp_path / "r")])
    out = results_doc.render("x", records.read_records(tmp_path / "r"))
    assert "1,235 training tokens/s in its last (resumed) process; 40 tokens/s over the whole wall time" in out
    assert "1.50 at the start of its last (resumed) training process, 2.50 at end; wall 1 min 40 s" in out


def test_an_lm_record_shows_its_validation_curve_beside_the_papers_figure():
    rec = {"name": "z", "kind": "lm", "command": "make z", "commit": "0" * 40, "dirty": False, "date": "2026-12-03",
           "machine": {}, "wall_s": 60.0, "paper": {"valid_ppl": 120.7, "test_ppl": 114.5, "source": "Zaremba"},
           "metrics": {"train": {"valid_curve": [[100, 1, 250.04], [200, 2, 180.0], [300, 3, 181.25]]},
                       "valid": {"tokens": 10, "nats_per_token": 4.8, "bits_per_token": 6.9, "ppl": 121.5}}}
    out = results_doc.render("z", {"z": rec})
    assert ("Validation perplexity by epoch (the trainer's evaluation): 1: 250.0 · 2: 180.0 · 3: 181.2 "
            "(best 180.0; the paper's final valid perplexity: 120.7).") in out
    rec["metrics"]["train"]["valid_curve"] = [[100, 1, 250.0], [200, 1, 180.0]]  # two evaluations in one epoch
    assert "by update (the trainer's evaluation): 100: 250.0 · 200: 180.0" in results_doc.render("z", {"z": rec})


def test_pm_shows_the_spread_to_two_significant_digits():
    assert results_views.pm(0.07009, 0.003196) == "0.0701 ± 0.0032"
    assert results_views.pm(17.71, 2.49) == "17.7 ± 2.5"
    assert results_views.pm(-0.0517, 0.004) == "-0.0517 ± 0.0040"
    assert results_views.pm(8.0, 0.0) == "8 ± 0"


def _toy_record():
    arm = lambda m, sd, d, se: {"mean": m, "sd": sd, "diff_vs_generator": d, "diff_se": se}  # noqa: E731
    summary = {a: {"mmd2": arm(v, 0.01, v - 0.5, 0.02), "sw1": arm(v, 0.1, 0.0, 0.0), "hq_frac": arm(v, 0.1, 0.0, 0.0),
                   "mode_tv": arm(v, 0.1, 0.0, 0.0), "modes_covered": arm(8, 0, 0, 0), "modes": arm(8, 0, 0, 0)}
               for a, v in (("generator", 0.5), ("ula", 0.25))}
    seed = {a: {"mmd2": v, "sw1": v, "hq_frac": v} for a, v in (("generator", 0.5), ("ula", 0.25))}
    return {"name": "toy", "command": "make toy", "commit": "a" * 40, "dirty": False, "date": "2026-01-01",
            "machine": {"load_avg_1_5_15_start": [1.0, 1, 1], "load_avg_1_5_15_end": [2.0, 2, 2]}, "wall_s": 5,
            "arms": {"generator": {"sampler": "none", "beta": 100.0}, "ula": {"sampler": "ula", "beta": 100.0}},
            "config": {"penalty": 0.1},
            "metrics": {"summary": summary, "per_seed": {"0": seed, "1": seed},
                        "train": {"0": {"kale_last10pct_mean": 0.5}},
                        "penalty1_ablation": {"0": {"train": {"kale_last10pct_mean": 0.01}, "metrics": seed}}}}


def test_a_view_renders_one_table_of_its_record_with_a_one_line_provenance(monkeypatch):
    rec = _toy_record()
    monkeypatch.setitem(results_doc.VIEWS, "toy:arms", results_views.view_gebm_toy_arms)
    monkeypatch.setitem(results_doc.VIEWS, "toy:ablation", results_views.view_gebm_toy_ablation)
    text = ("<!-- generated:toy:arms -->\nold 0.9\n<!-- /generated:toy:arms -->\n"
            "<!-- generated:toy:ablation -->\n<!-- /generated:toy:ablation -->\n")
    out = results_doc.render_text(text, {"toy": rec})
    assert "old 0.9" not in out and out.count("From `results/toy.json` (`make toy`; commit aaaaaaaaaa, 2026-01-01).") == 2
    assert "| generator alone, G(z₀) | 0.500 ± 0.010 | 0.50 ± 0.10 | 0.50 ± 0.10 | 0.50 ± 0.10 | 8/8 |" in out
    assert "| ULA, β 100 | -0.250 ± 0.020 | 0 ± 0 | 0 ± 0 | 0 ± 0 |" in out  # paired to the generator
    assert "| ULA, β 100 | 0.250 / 0.250 | 0.250 / 0.250 |" in out  # per seed
    assert "| seed | quantity | penalty 0.1 | penalty 1 |" in out
    assert "| 0 | KALE, mean of the last 10% of training | 0.500 | 0.010 |" in out
    assert results_doc.region_names(out) == ["toy", "toy"]  # a view shows its record: no orphan
    assert "Not yet recorded: `make toy`" in results_doc.render_text(text, {})


def test_an_unknown_view_is_one_problem_line_not_a_traceback(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("<!-- generated:gebm-toy:nope -->\n<!-- /generated:gebm-toy:nope -->\n")
    problems = results_doc.update_docs(tmp_path / "docs", REPO / "results", check=True)
    assert any("x.md: no such view: gebm-toy:nope" in p for p in problems)
    with pytest.raises(ValueError, match="no such view"):
        results_doc.render("gebm-toy", {}, "nope")


def test_provenance_reads_the_toy_writers_load_keys():
    rec = _toy_record()
    assert "load average (1 min) 1.00 at start, 2.00 at end" in results_doc.provenance(rec)
    rec["machine"] = {"load_avg_1_5_15": [3.0, 1, 1], "load_avg_end": [4.0, 1, 1]}
    assert "load average (1 min) 3.00 at start, 4.00 at end" in results_doc.provenance(rec)


def test_a_list_of_rows_in_metrics_renders_as_a_table():
    """A `--jsonl` entry (e.g. make imm-bench's steps) is a table, a row per line, not dropped from the page."""
    rec = {"name": "x", "command": "make x", "metrics": {"steps": [{"j": 1, "ratio": 2.05}, {"j": 5, "ratio": 3.24, "k": 10}]}}
    out = results_doc.render_metrics(rec)
    assert "| j | ratio | k |" in out and "| 1 | 2.05 |  |" in out and "| 5 | 3.24 | 10 |" in out
    assert "| metric | value |" not in out  # no empty key/value table above it


def test_the_residual_bracket_view_tables_each_n_with_its_paired_gain_and_the_algorithm_1_cost():
    gain = lambda m: {"mean_nats_per_window": m, "se": 0.1, "windows": 32}  # noqa: E731
    joint = [{"n": 1, "lower_ppl": 144.0, "upper_ppl": None, "paired_gain_lower": gain(0.76), "paired_gain_upper": None},
             {"n": 2, "lower_ppl": 144.5, "upper_ppl": 145.5, "paired_gain_lower": gain(0.9), "paired_gain_upper": gain(0.6)}]
    rec = {"metrics": {"test": {"examples": 32, "prefix_len": 24, "continuation_len": 16, "base_lm": {"ppl": 151.3},
                                "joint": joint},
                       "generation": {"prefixes": 2, "candidates": 32, "top_k": 10, "ratio": 1.123}}}
    out = results_views.view_residual_bracket(rec)
    assert "| base LM |  | 151.30 |  |  |" in out
    assert "| joint | 1 | 144.00 | — | 0.76 ± 0.10 |" in out  # n = 1 has only the lower estimate
    assert "| joint | 2 | 144.50 | 145.50 | 0.60 ± 0.10 |" in out  # the upper estimate's gain where there is one
    assert "took 1.12× one batched base-LM sampling pass" in out
    # the whole-record rendering shows the rows' flat columns, never a dict's repr
    assert "mean_nats_per_window" not in results_doc.render_metrics(rec)


def test_the_define_cache_view_sets_the_live_and_cached_scores_side_by_side_with_their_difference():
    score = lambda ckpt, nats, rate: {"checkpoint": f"runs/r/checkpoints/{ckpt}", "source": "data/demo:valid",  # noqa: E731
                                      "tokens": 21197, "nats_per_token": nats, "ppl": math.exp(nats), "tokens_per_s": rate}
    rec = {"metrics": {"best": score("best.pt", 5.514783011233308, 1877.4),
                       "cached": score("cached.pt", 5.514783011227684, 2249.7),
                       "cache": {"embedding_params_before": 778504, "embedding_params_after": 1999200}}}
    out = results_views.view_define_cache(rec)
    assert "| `best.pt` | DeFINE unit | 778,504 | 5.514783011233 | 248.34 | 1,877 |" in out
    assert "| `cached.pt` | V x m table | 1,999,200 | 5.514783011228 | 248.34 | 2,250 |" in out
    assert "cached − live: -5.6e-12 nats/token over 21,197 tokens of `data/demo:valid`" in out
    assert "1.20× as fast" in out
    assert "define-cache:equivalence" in results_doc.VIEWS


def test_the_gebm_wine_view_sets_the_gebm_beside_the_mle_flow_with_its_is_checks():
    test_gebm = {"rows": 159, "nll_gebm_nats": 13.69, "nll_gebm_se": 0.27, "nll_gebm_exact_nats": 13.695,
                 "nll_gebm_exact_se": 0.27, "nll_base_nats": 15.41, "nll_base_se": 0.32, "log_z_is": -0.0097,
                 "log_z_se": 0.0081, "is_ess_frac": 0.2335, "is_samples": 50000}
    test_mle = {"rows": 159, "nll_gebm_nats": None, "nll_base_nats": 12.88, "nll_base_se": 0.31}
    rec = {"metrics": {"train-gebm": {"updates": 508, "best_metric": 14.21}, "train-mle": {"updates": 508, "best_metric": 13.25},
                       "test-gebm": test_gebm, "test-mle": test_mle}}
    out = results_views.view_gebm_wine(rec)
    assert ("| GEBM (KALE) | 508 | 14.21 | 13.69 ± 0.27 | 13.70 ± 0.27 | 15.41 ± 0.32 | -0.0097 ± 0.0081 "
            "| 0.23 of 50,000 |") in out
    assert "| RealNVP by MLE | 508 | 13.25 | 12.88 ± 0.31 |" in out
    assert "GEBM − MLE on test: +0.81 nats/row; the energy over its base: -1.72; log Ẑ is 1.2 s.e. from 0." in out
    assert results_doc.VIEWS["gebm-whitewine:nll"] is results_views.view_gebm_wine


def test_the_gebm_image_view_tables_the_generator_and_the_latent_sampler_on_the_same_features():
    fid_kid = {"extractor": "small-random-conv", "real_images": 1000, "fake_images": 1000,
               "sampler_config": {"sampler": "kla", "steps": 100}, "fid_generator": 0.02648, "kid_generator": 0.000816,
               "kid_generator_std": 1.4e-05, "fid_gebm_kla": 0.02622, "kid_gebm_kla": 0.000802, "kid_gebm_kla_std": 1.4e-05}
    rec = {"metrics": {"train": {"step": 200, "updates": 1390}, "fid-kid": fid_kid}}
    out = results_views.view_gebm_images(rec)
    assert "features of the small-random-conv extractor; trained 200 base steps (1,390 updates)" in out
    assert "| generator alone, G(z₀) | 0.02648 | 0.000816 ± 0.000014 |" in out
    assert "| GEBM, KLA (100 steps) | 0.02622 | 0.000802 ± 0.000014 |" in out
    assert "GEBM, KLA (100 steps) − generator alone: FID -0.00026, KID -1.4e-05." in out
    assert results_doc.VIEWS["gebm-cifar10:fid"] is results_views.view_gebm_images  # the GPU run's record too


def test_a_residual_energys_train_summary_names_its_energy_and_a_gebms_names_no_shape(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"energy": {"kind": "bit", "n_layers": 2, "d_model": 64}}))
    assert records.train_summary_facts({"run_dir": str(run)})["model"] == "BIT energy, 2 layers x 64"
    (run / "config.json").write_text(json.dumps({"model": {"energy": "flow-combined", "generator": "dcgan"}}))
    assert "model" not in records.train_summary_facts({"run_dir": str(run)})


def test_dirty_means_code_changed_not_the_pipelines_own_outputs(tmp_path):
    """A pipeline writes its figure and docs before its record: those leave the record clean; a code change does not."""
    import subprocess
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    for rel in ("core/x.py", "docs/figures/f.png", "results/r.json", "docs/a.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("0\n")
    git("add", "-A")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    for rel in ("docs/figures/f.png", "results/r.json", "docs/a.md"):
        (tmp_path / rel).write_text("1\n")
    (tmp_path / "results/r.json").unlink()
    assert records.git_commit(tmp_path)[1] is False
    (tmp_path / "core/x.py").write_text("1\n")
    assert records.git_commit(tmp_path)[1] is True


def _paired_entry(claim: str, base: str, arm: str, metric: str, b: list[float], a: list[float]) -> dict:
    """The shape bench/imm_paired.py and bench/mt_seeds.py write, with the verdict computed as they do."""
    import statistics
    d = [y - x for x, y in zip(b, a)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    mean = statistics.fmean(d)
    shows = None if se is None else {"below": mean < -2 * se, "not-above": mean < 2 * se, "not-worse": mean > -2 * se,
                                     "none": None}[claim]
    summary = lambda v: {"n": len(v), "mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else None}  # noqa: E731
    return {"base": base, "arm": arm, "claim": claim,
            metric: {base: summary(b), arm: summary(a), "difference": {"n": len(d), "mean": mean, "se": se, "shows_claim": shows}}}


def test_the_claims_table_gathers_every_records_paired_comparisons_with_their_verdicts():
    recs = {
        "imm-x": {"metrics": {"paired": _paired_entry("below", "dropout", "imm", "valid_ppl", [100, 102, 104], [90, 93, 95])}},
        "mt-x": {"metrics": {"paired": _paired_entry("not-worse", "standard", "define", "bleu_averaged", [36, 37, 35], [34, 34.5, 33])}},
        "mt-y": {"metrics": {"paired": _paired_entry("not-worse", "standard", "define", "best_valid_ppl", [6, 7, 8], [7, 8, 8])}},
        "ablation": {"metrics": {"x": _paired_entry("none", "imm", "draws", "valid_ppl", [1, 2], [1, 2])}},
        "one-seed": {"metrics": {"paired": _paired_entry("below", "dropout", "imm", "valid_ppl", [100], [90])}},
        "other": {"metrics": {"ppl": 3.0}},
        "gebm-x": {"metrics": {"summary": {"per_seed": {"1": {}, "2": {}}, "arms": [  # bench/gebm_tier.py's shape
            {"arm": "generator alone", "fid": 20.0, "fid_sd": 1.0, "kid": 0.3, "kid_sd": 0.01},
            {"arm": "KLA", "fid": 19.5, "fid_sd": 1.0, "fid_diff": -0.5, "fid_diff_se": 0.1,
             "kid": 0.29, "kid_sd": 0.01, "kid_diff": -0.01, "kid_diff_se": 0.01}]}}},
    }
    recs["mt-y"]["metrics"]["paired"]["best_valid_ppl"]["difference"]["shows_claim"] = None  # mt_seeds: not a claimed metric
    out = results_doc.render_text("<!-- generated:claims -->\n<!-- /generated:claims -->\n", recs)
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    # sorted; left out: claim none (ablation), a metric the claim is not about (mt-y), a record with no comparison
    assert [r.split(" | ")[0] for r in rows] == ["| `gebm-x`"] * 2 + ["| `imm-x`", "| `mt-x`", "| `one-seed`"]
    fid, kid, imm, mt, one = rows
    # the GEBM tier: each sampler against its own run's generator, the claim that sampling lowers FID/KID
    assert "| KLA vs generator | fid | 2 | 20.0 ± 1.0 | 19.5 ± 1.0 | -0.50 ± 0.10 | KLA below generator" in fid
    assert fid.endswith("| **shows** |") and kid.endswith("| does not show |")  # -0.01 is not below -2 x 0.01
    # imm: differences -10, -9, -9: mean -9.33, se 0.333 -> below by more than 2 SE
    assert "| imm vs dropout | valid_ppl | 3 | 102.0 ± 2.0 | 92.7 ± 2.5 | -9.33 ± 0.33 |" in imm and imm.endswith("| **shows** |")
    # mt: differences -2, -2.5, -2: mean -2.17, se 0.167 -> more than 2 SE worse: the no-worse claim is not shown
    assert "| define vs standard | bleu_averaged | 3 |" in mt and "| -2.17 ± 0.17 |" in mt
    assert "define no worse than standard by 2 SE | does not show |" in mt
    assert one.endswith("| one seed: no SE |") and "| -10 |" in one
    # a collection shows no one record: each record still needs its own region
    assert results_doc.region_names("<!-- generated:claims -->\n<!-- /generated:claims -->\n") == []
    assert "No record holds" in results_doc.render_text("<!-- generated:claims -->\n<!-- /generated:claims -->\n", {})
