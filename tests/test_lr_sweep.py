"""bench/lr_sweep.py: each arm's validation perplexity at the end of the same budget per learning rate, the pick."""

import json

import pytest

from conftest import load_bench


def _module():
    return load_bench("lr_sweep")


def _run(path, curve):
    path.mkdir(parents=True)
    rows = [{"step": s, "valid_ppl": p} for s, p in curve] + [{"step": curve[-1][0], "train_loss_nats": 5.0}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_pick_is_the_lowest_perplexity_at_the_end_not_the_best_on_the_way(tmp_path, capsys):
    sweep = _module()
    _run(tmp_path / "a-lr0.5", [(10, 300.0), (20, 250.0)])
    _run(tmp_path / "a-lr1", [(10, 200.0), (20, 240.0)])  # best on the way, not at the end
    _run(tmp_path / "a-lr2", [(10, 280.0), (20, float("nan"))])  # diverged
    _run(tmp_path / "b-lr0.5", [(10, 400.0), (20, 390.0)])
    _run(tmp_path / "b-lr1", [(10, 350.0), (20, 330.0)])
    _run(tmp_path / "b-lr2", [(10, 320.0), (20, 310.0)])
    assert sweep.main([str(tmp_path), "--arms", "a", "b", "--lrs", "0.5", "1", "2", "--json", str(tmp_path / "s.json")]) == 0
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["arms"]["a"] == {"valid_ppl": {"0.5": 250.0, "1": 240.0, "2": None}, "update": 20, "pick": "1"}
    printed = capsys.readouterr().out
    assert "after 20 updates" in printed and "| a | 250.0 | **240.0** | nan | 1 |" in printed
    assert "| b | 390.0 | 330.0 | **310.0** | 2 |" in printed


def test_unequal_budgets_and_missing_runs_are_one_line(tmp_path):
    sweep = _module()
    _run(tmp_path / "a-lr1", [(10, 200.0)])
    _run(tmp_path / "a-lr2", [(10, 200.0), (20, 190.0)])
    with pytest.raises(SystemExit, match="different updates"):
        sweep.main([str(tmp_path), "--arms", "a", "--lrs", "1", "2"])
    with pytest.raises(SystemExit, match="a-lr3: no such run dir .has the sweep run"):
        sweep.main([str(tmp_path), "--arms", "a", "--lrs", "1", "3"])
