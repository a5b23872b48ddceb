"""A last.pt left unreadable (bad disk, full disk, a copy cut short) falls back to the newest readable
step checkpoint, says so, and keeps the unreadable file."""

import json

from conftest import tiny_train_config
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import merge
from lmlab.core.reporting import Reporter
from lmlab.core.train.lm_trainer import train_lm


class Lines(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines = []

    def log(self, message):
        self.lines.append(message)


def test_corrupt_last_resumes_from_newest_readable_step(tmp_path, tiny_data):
    run = tmp_path / "run"
    part = merge(tiny_train_config(tiny_data, run), {"schedule": {"max_steps": 8}, "run": {"eval_interval": 4, "keep": 2}})
    train_lm(part, Lines())
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*.pt")) == ["step-00000004.pt", "step-00000008.pt"]
    (ckpts / "step-00000008.pt").write_bytes(b"\0" * 100)  # the newest step is unreadable too
    good = (ckpts / "last.pt").read_bytes()
    (ckpts / "last.pt").write_bytes(good[: len(good) // 3])

    reporter = Lines()
    again = merge(tiny_train_config(tiny_data, run), {"schedule": {"max_steps": 12}, "run": {"eval_interval": 4, "keep": 2}})
    summary = train_lm(again, reporter)
    assert summary["step"] == 12
    said = [line for line in reporter.lines if "unreadable" in line]
    assert len(said) == 1 and "step-00000004.pt" in said[0], reporter.lines
    assert any("resumed" in line and "update 4" in line for line in reporter.lines), reporter.lines
    kept = list(ckpts.glob("last.pt.corrupt-*"))
    assert len(kept) == 1 and len(kept[0].read_bytes()) == len(good) // 3
    assert load_checkpoint(ckpts / "last.pt", "lm")["step"] == 12
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metric lines written after the fallback step were not dropped"
