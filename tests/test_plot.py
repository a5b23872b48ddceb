"""Figures (lmlab.core.plot, matplotlib Agg) and the `lmlab plot` command."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

from lmlab.cli.main import app
from lmlab.core.errors import LmlabError
from lmlab.core.plot import metric_series, plot_runs, plot_series, run_labels, seed_styles, write_curves_png

runner = CliRunner()


def _png(path):
    """(width, height) of a PNG and whether it has a drawing on it (more than a few distinct colours)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)  # (H, W, 3|4) floats
    colours = len(np.unique(img.reshape(-1, img.shape[-1]).round(2), axis=0))
    return (img.shape[1], img.shape[0]), colours


def fake_run(path, valid_ppl, train_every=10, with_epoch=True):
    """A run dir as train-lm writes it: per-update train rows, an eval row every 50 updates."""
    path.mkdir(parents=True)
    rows = []
    for step in range(1, 201):
        if step % train_every == 0:
            rows.append({"step": step, "epoch": step // 100, "train_loss_nats": 6.0 - step / 100})
        if step % 50 == 0:
            row = {"step": step, "split": "valid", "valid_loss_nats": math.log(valid_ppl(step)), "valid_ppl": valid_ppl(step)}
            rows.append({**row, "epoch": step // 100} if with_epoch else row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 201, "trai')  # cut line
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def two_runs(tmp_path):
    return (fake_run(tmp_path / "runs" / "baseline", lambda s: 400.0 - s),
            fake_run(tmp_path / "runs" / "imm", lambda s: 380.0 - s))


def test_plot_series_writes_a_png_of_the_asked_size(tmp_path):
    out = tmp_path / "figs" / "f.png"
    series = {"a": [(0, 5.0), (10, 3.0), (20, 2.5)], "b": [(0, 4.0), (20, float("nan")), (30, None), (40, 1.0)]}
    assert plot_series(series, out, xlabel="step", ylabel="nats", logy=True, width=640, height=400) == out
    (w, h), colours = _png(out)
    assert (w, h) == (640, 400) and colours > 10
    assert [p.name for p in out.parent.iterdir()] == ["f.png"]  # written atomically: no temp file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # the umask's mode, not a temp file's 0600


def test_plot_series_with_no_point_still_writes_a_png(tmp_path):
    plot_series({"empty": [], "nan": [(1, float("nan"))]}, tmp_path / "e.png", width=320, height=200)
    assert _png(tmp_path / "e.png")[0] == (320, 200)


def test_curves_png_keeps_the_trainers_call(tmp_path):
    out = tmp_path / "curves.png"
    write_curves_png(out, {"train": [(s, 6 - s / 100) for s in range(300)], "valid": [(100, 5.2), (200, 4.3)]},
                     title="run", ylabel="loss (nats/token)")
    (w, h), colours = _png(out)
    assert (w, h) == (640, 400) and colours > 10


def test_two_run_dirs_overlaid(two_runs, tmp_path):
    out = plot_runs(two_runs, tmp_path / "cmp.png")
    (w, h), colours = _png(out)
    assert (w, h) == (800, 500) and colours > 10
    assert metric_series(two_runs[0], "valid_ppl") == [(50, 350.0), (100, 300.0), (150, 250.0), (200, 200.0)]
    assert metric_series(two_runs[0], "valid_ppl", x="epoch")[0] == (0, 350.0)
    assert len(metric_series(two_runs[0], "train_loss_nats")) == 20  # the line cut by a kill is skipped


def test_labels_are_run_dir_names_with_parents_only_to_tell_them_apart(tmp_path):
    assert run_labels([tmp_path / "runs/baseline", tmp_path / "runs/imm/"]) == ["baseline", "imm"]
    assert run_labels([tmp_path / "a/lm", tmp_path / "b/lm"]) == ["a/lm", "b/lm"]


def test_paired_seeds_get_a_colour_per_arm_and_a_line_style_per_seed(tmp_path):
    styles = seed_styles(["dropout-s1", "imm-s1", "dropout-s2", "runs/x/imm-s2"])
    assert styles["dropout-s1"]["color"] == styles["dropout-s2"]["color"] != styles["imm-s1"]["color"]
    assert styles["imm-s1"]["color"] == styles["runs/x/imm-s2"]["color"]
    assert styles["dropout-s1"]["linestyle"] == styles["imm-s1"]["linestyle"] != styles["dropout-s2"]["linestyle"]
    assert seed_styles(["dropout-s1", "imm-s2"]) == {}  # one run per seed: nothing paired, the default cycle
    assert seed_styles(["dropout-s1", "imm-s1", "baseline"]) == {}  # a label outside the ARM-sSEED scheme
    # drawn: the two seeds of one arm in one colour (the PNG's pixels of C0 and C1 only, no C2 of a third line)
    out = plot_series({"a-s1": [(0, 1), (1, 2)], "a-s2": [(0, 2), (1, 3)], "b-s1": [(0, 3), (1, 1)]},
                      tmp_path / "p.png", markers=False)
    pixels = mpimg.imread(out)[..., :3].reshape(-1, 3)
    green = np.array([0x2c, 0xa0, 0x2c]) / 255  # matplotlib's C2: the third line's colour without pairing
    assert not (np.abs(pixels - green).max(axis=1) < 0.02).any()


def test_errors_name_the_run_dir_or_metric(two_runs, tmp_path):
    with pytest.raises(LmlabError, match="nope: no such run dir"):
        plot_runs([two_runs[0], tmp_path / "nope"], tmp_path / "x.png")
    with pytest.raises(LmlabError, match=r"no metric 'bleu' \(--metric\); its metrics: epoch, step, train_loss_nats"):
        plot_runs(two_runs, tmp_path / "x.png", metric="bleu")
    no_epoch = fake_run(tmp_path / "old", lambda s: 300.0, with_epoch=False)
    with pytest.raises(LmlabError, match="have no 'epoch'"):
        plot_runs([no_epoch], tmp_path / "x.png", x="epoch")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmlabError, match="metrics.jsonl: not found"):
        plot_runs([tmp_path / "empty"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()  # every run is read before anything is drawn


# ---- the command ---------------------------------------------------------------------------------

def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result):
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_cli_help_runs():
    result = invoke("plot", "--help")
    assert result.exit_code == 0 and "--metric" in result.stdout and "RUN_DIR" in result.stdout
    assert "plot" in invoke("--help").stdout


def test_cli_writes_the_png_and_prints_its_path(two_runs, tmp_path):
    out = tmp_path / "figs" / "imm.png"
    result = invoke("plot", *two_runs, "-o", out, "--metric", "valid_loss_nats", "--x", "epoch", "--title", "IMM")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out) and _png(out)[0] == (800, 500)


def test_cli_missing_run_dir_is_one_line(two_runs, tmp_path):
    line = one_error_line(invoke("plot", two_runs[0], tmp_path / "missing", "-o", tmp_path / "x.png"))
    assert str(tmp_path / "missing") in line and "no such run dir" in line


def test_cli_absent_metric_is_one_line(two_runs, tmp_path):
    line = one_error_line(invoke("plot", *two_runs, "--metric", "valid_bleu", "-o", tmp_path / "x.png"))
    assert "valid_bleu" in line and "metrics.jsonl" in line and "valid_ppl" in line  # says which metrics exist
