"""metrics.jsonl's tokens_per_s is a training-only rate since the last evaluation: a slow evaluation does not
drag it down (a WikiText-2 validation takes minutes), and the summary's train_tokens_per_s excludes them too."""

import json
import time

from conftest import tiny_train_config
from lmlab.core.config import merge
from lmlab.core.reporting import NullReporter
from lmlab.core.train import lm_trainer


def test_tokens_per_s_excludes_evaluation_time(tmp_path, tiny_data, monkeypatch):
    real = lm_trainer.LMTrainer._evaluate

    def slow_evaluate(self):
        time.sleep(1.0)
        return real(self)

    monkeypatch.setattr(lm_trainer.LMTrainer, "_evaluate", slow_evaluate)
    cfg = merge(tiny_train_config(tiny_data, tmp_path / "run"), {"schedule": {"max_steps": 8}, "run": {"eval_interval": 2}})
    t0 = time.perf_counter()
    summary = lm_trainer.train_lm(cfg, NullReporter())
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "tokens_per_s" in r]
    tokens = train[-1]["tokens"]
    assert wall > 4.0  # four evaluations of >= 1 s each
    assert summary["train_tokens_per_s"] > 2 * tokens / wall  # the sleeps are not in it
    assert train[-1]["train_s"] < wall - 3.5
    # each row's rate covers the updates since the last evaluation only
    after_eval = train[-1]  # update 8 follows the evaluation at update 6: one window of this update's tokens
    assert after_eval["tokens_per_s"] > 2 * tokens / wall


def test_validation_reports_progress(tmp_path, tiny_data, monkeypatch):
    """A long validation logs where it is (throttled; here every call) instead of staying silent."""
    from lmlab.core import reporting

    lines = []

    class Lines(reporting.Reporter):
        def log(self, message):
            lines.append(message)

    monkeypatch.setattr(lm_trainer, "progress_lines", lambda rep, what: reporting.progress_lines(rep, what, every_s=0.0))
    cfg = merge(tiny_train_config(tiny_data, tmp_path / "run"), {"schedule": {"max_steps": 2}, "run": {"eval_interval": 2}})
    lm_trainer.train_lm(cfg, Lines(quiet=True))
    said = [line for line in lines if line.startswith("validating at update 2:")]
    assert said and said[0].endswith("%)"), lines


def test_progress_lines_are_throttled():
    from lmlab.core import reporting
    lines = []

    class Lines(reporting.Reporter):
        def log(self, message):
            lines.append(message)

    progress = reporting.progress_lines(Lines(), "scoring x", every_s=3600.0)
    for done in range(1, 101):
        progress(done, 100)
    assert lines == []  # nothing within the first interval, and never the final call
    progress = reporting.progress_lines(Lines(), "scoring x", every_s=0.0)
    progress(25, 100)
    progress(100, 100)
    assert lines == ["scoring x: 25/100 (25%)"]
