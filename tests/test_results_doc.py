"""docs/ figures are generated from results/ records (`make results`), never typed: the committed docs equal what the
records render, a hand edit of a generated figure is caught, and a record assembled from a pipeline's files
carries the command, commit, date, machine (load at start and end), wall time and metrics."""

from __future__ import annotations

import json
import shutil

from conftest import REPO
from lmlab.core import records, results_doc


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


def test_a_figure_typed_outside_the_record_or_a_stale_record_is_caught(tmp_path):
    docs, res = _copy(tmp_path)
    rec = json.loads((res / "bench.json").read_text())
    rec["markdown"] = rec["markdown"].replace("1,062,782", "2,000,000")  # the record changed, docs not regenerated
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
    assert rec["paper"] == {"valid_ppl": 120.7, "test_ppl": 114.5, "source": "Zaremba et al. 2014, Table 1"}
    out = results_doc.render("ptb-x", {"ptb-x": rec})
    assert "`make ptb-x HW=cpu`" in out and "Test CPU, 2 cores" in out and "1.50 at start, 2.50 at end" in out
    assert "| test | LSTM 2x200 | 82,429 | 4.790 | 6.900 | **115.0** | 114.5 |" in out
    assert "4,653,200 parameters" in out and "1 min 01 s" in out


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
