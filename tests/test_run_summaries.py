"""What a finished (or stopped) training run reports, and small promises of the CLI's text and packaging.

- A run stopped before its first evaluation has no best validation figure: the summary says null,
  not 1.01e304 or Infinity (which is not even JSON).
- params_embedding + params_body + params_output == params_total, tied or not.
- The bleu command is registered unconditionally; zuko is not a dependency; help text names only
  switches that exist.
"""

from __future__ import annotations

import inspect
import json
import re
import signal

import pytest

from conftest import REPO, tiny_train_config
from lmlab.core.config import merge
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig
from lmlab.core.models.lm import count_parameters
from lmlab.core.reporting import NullReporter
from reporters import StopAt
from test_residual_train import setup  # noqa: F401 (the residual tests' fixture: a tiny data dir and base LM)


pytestmark = pytest.mark.usefixtures("one_thread")


def _strict_json(summary):
    json.loads(json.dumps(summary, default=str, allow_nan=False))  # raises on inf/nan


# ---- best validation figure before the first evaluation ------------------------------------------

def test_lm_run_stopped_before_its_first_eval_reports_null(tmp_path, tiny_data):
    from lmlab.core.train.lm_trainer import train_lm
    cfg = merge(tiny_train_config(tiny_data, tmp_path / "r"), {"schedule": {"max_steps": 50}, "run": {"eval_interval": 1000}})
    out = train_lm(cfg, StopAt(2))
    assert out["stopped_by"] == "SIGTERM" and out["step"] == 2
    assert out["best_valid_nats"] is None and out["best_valid_ppl"] is None
    assert out["wall_s"] >= 0 and "machine" in out  # kept beside the fix
    _strict_json(out)
    done = train_lm(cfg, NullReporter())  # rerun: resumes, evaluates at the end
    assert done["best_valid_ppl"] is not None and done["best_valid_ppl"] < 1e4


def test_seq2seq_run_stopped_before_its_first_eval_reports_null(tmp_path):
    from lmlab.core.seq2seq.prep import prep_parallel
    from lmlab.core.seq2seq.train import train
    from seq2seq_fixtures import write_corpus
    from test_seq2seq_train import config
    prep_parallel(tmp_path / "data", src_lang="de", tgt_lang="en", splits=write_corpus(tmp_path, 60, 10), vocab_size=120)
    cfg = config(tmp_path / "data", tmp_path / "run", steps=6)
    cfg.run.eval_interval = 100
    out = train(cfg, StopAt(1))
    assert out["stopped"] == "SIGTERM" and out["best_valid_nll_nats"] is None and out["best_valid_ppl"] is None
    _strict_json(out)


def test_gebm_run_stopped_before_its_first_eval_reports_null(tmp_path):
    from lmlab.core.gebm.train import train
    from test_gebm_train import tiny_density_cfg
    cfg = tiny_density_cfg(tmp_path / "run")
    cfg.run.eval_interval = 100
    out = train(cfg, StopAt(1, signal.SIGUSR1))
    assert out["stopped_by"] == "SIGUSR1" and out["step"] == 1 and out["best_metric"] is None
    _strict_json(out)


def test_residual_run_stopped_before_its_first_eval_reports_null(setup):
    from lmlab.core.residual.train import train
    from test_residual_train import make_cfg
    root, ckpt = setup
    cfg = make_cfg(root, ckpt, "run-stopped")
    cfg.run.eval_interval = 100
    out = train(cfg, StopAt(1))
    assert out["stopped_by"] == "SIGTERM" and out["step"] == 1 and out["best_valid_nats"] is None
    _strict_json(out)


# ---- parameter counts ----------------------------------------------------------------------------

@pytest.mark.parametrize("embedding,output,tie", [("standard", "linear", False), ("standard", "linear", True),
                                                  ("adaptive", "adaptive", True)])
def test_parameter_split_adds_up_to_the_total(embedding, output, tie):
    cfg = ModelConfig(kind="lstm", d_model=16, n_layers=1)
    cfg.lstm.hidden_size = 16
    cfg.embedding.kind, cfg.output.kind, cfg.output.tie = embedding, output, tie
    cfg.embedding.adaptive.cutoffs = cfg.output.adaptive.cutoffs = [20, 50]
    model = build_language_model(cfg, 100)
    from lmlab.core.models.lm import parameter_counts  # what train-lm's summary and --print-config report
    counts = parameter_counts(model)
    assert counts["params_embedding"] + counts["params_body"] + counts["params_output"] == counts["params_total"]
    assert counts["params_total"] == sum(p.numel() for p in model.parameters())
    if (embedding, tie) == ("standard", True):
        assert counts["params_output"] == 100  # the bias only: the 100 x 16 table is the embedding's
    if not tie:
        assert counts["params_output"] == count_parameters(model.output) == 100 * 16 + 100


# ---- CLI text and packaging ----------------------------------------------------------------------

def test_bleu_registration_does_not_swallow_import_errors():
    source = (REPO / "cli" / "main.py").read_text()
    assert "except ImportError" not in source
    from lmlab.cli.main import app
    assert "bleu" in {c.name for c in app.registered_commands}


def test_zuko_is_not_a_dependency_since_nothing_imports_it():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    assert not [d for d in declared if d.startswith("zuko")]
    assert "matplotlib>=3.7" in project["dependencies"]
    for path in [*REPO.glob("core/**/*.py"), *REPO.glob("cli/*.py"), *REPO.glob("bench/**/*.py")]:
        assert not re.search(r"^\s*(import|from)\s+zuko", path.read_text(), re.M), path
    assert "zuko" not in (REPO / "README.md").read_text()


def test_help_and_docstrings_name_only_switches_that_exist():
    from lmlab.cli import common
    from lmlab.core.signals import StopFlag
    for path in [*REPO.glob("cli/*.py"), *REPO.glob("core/**/*.py")]:
        assert "`--debug`" not in path.read_text(), f"{path}: there is no --debug flag; LMLAB_DEBUG=1 is the switch"
    assert "LMLAB_DEBUG=1" in inspect.getdoc(common.handle_errors)
    if "SIGINT" not in StopFlag.SIGNALS:  # Ctrl-C is not turned into a graceful stop: the docstring must not say it is
        assert inspect.getdoc(StopFlag).startswith("Set by SIGTERM/SIGUSR1;")
