"""The commands as a shell user meets them: help, one-line errors, stdout carries data only."""

import json

import pytest
import torch

from conftest import invoke, train_tiny_lm


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    return train_tiny_lm(tiny_data, tmp_path_factory.mktemp("runs") / "lm", steps=60) / "best.pt"


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [l for l in result.stderr.splitlines() if l.strip() and not l.startswith("[lmlab ")]  # progress lines aside
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_root_help_lists_the_working_commands():
    out = invoke("--help").stdout
    for command in ("prep", "train-lm", "train-ebm", "sample", "eval-ppl", "runs"):
        assert command in out


@pytest.mark.parametrize("command", ["prep", "train-lm", "train-ebm", "sample", "eval-ppl", "presets", "cache-define", "runs"])
def test_every_command_help_runs(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_train_lm_help_teaches_the_config_keys():
    out = invoke("train-lm", "--help").stdout
    assert "optim.lr" in out and "model.lstm.dropout" in out and "Examples" in out
    assert "[lstm|transformer]" in out  # a key's choices survive rich markup


def test_train_ebm_help_teaches_both_kinds_keys_in_train_lm_words():
    out = invoke("train-ebm", "--help").stdout
    for key in ("schedule.max_steps", "data.batch_size", "run.eval_interval", "run.keep", "hardware.precision"):
        assert key in out
    assert "--steps" in out and "[kla|ula|none]" not in out  # training keys only: sampling is `lmlab sample`'s


def test_print_config_resolves_presets_flags_and_params(tiny_data):
    result = invoke("train-lm", "--preset", "demo,cpu", "--data", str(tiny_data), "--set", "optim.lr=3", "--print-config")
    cfg = json.loads(result.stdout)
    assert cfg["optim"]["lr"] == 3.0 and cfg["hardware"]["device"] == "cpu" and cfg["data"]["dir"] == str(tiny_data)
    assert cfg["derived"]["params_embedding"] == cfg["derived"]["vocab_size"] * cfg["model"]["d_model"]


def test_eval_ppl_split_stdin_and_unigram(trained, tiny_data, tiny_text):
    split = json.loads(invoke("eval-ppl", "-c", str(trained), "--split", "valid", "-q").stdout)
    assert {"nats_per_token", "bits_per_token", "ppl", "tokens", "unk_tokens"} <= set(split)
    raw = json.loads(invoke("eval-ppl", "-c", str(trained), "-i", "-", "-q", "--batch-size", "1",
                            input=tiny_text["valid"].read_text()).stdout)
    assert raw["tokens"] > 0 and abs(raw["ppl"] - split["ppl"]) / split["ppl"] < 0.05  # same text, other column split
    unigram = json.loads(invoke("eval-ppl", "--ngram", "unigram", "--data", str(tiny_data), "--split", "valid").stdout)
    assert split["ppl"] < unigram["ppl"]


def test_sample_keeps_input_order_and_is_seeded(trained):
    prompts = "the cat\nquick\nthe cat\n"
    a = invoke("sample", "-c", str(trained), "-n", "2", "--max-new-tokens", "5", "--seed", "3", input=prompts)
    b = invoke("sample", "-c", str(trained), "-n", "2", "--max-new-tokens", "5", "--seed", "3", input=prompts)
    assert a.exit_code == 0 and a.stdout == b.stdout and len(a.stdout.splitlines()) == 6
    js = [json.loads(l) for l in invoke("sample", "-c", str(trained), "--json", "--max-new-tokens", "4", input=prompts).stdout.splitlines()]
    assert [j["prompt"] for j in js] == ["the cat", "quick", "the cat"] and all(j["logprob_nats"] <= 0 for j in js)


def test_bad_inputs_give_one_line_and_nonzero_exit(tmp_path, tiny_data, trained, tiny_text):
    assert_one_line_error(invoke("prep", "--train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "d")),
                          "missing.txt", "does not exist")
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(invoke("prep", "--train", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "d")), "empty")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert_one_line_error(invoke("prep", "--train", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "d")),
                          "latin1.txt", "byte offset 3", "--encoding")
    (tmp_path / "nometa").mkdir()
    assert_one_line_error(invoke("train-lm", "--data", str(tmp_path / "nometa"), "--run-dir", str(tmp_path / "r")), "no meta.json")
    assert_one_line_error(invoke("train-lm", "--preset", "nope"), "unknown preset 'nope'")
    assert_one_line_error(invoke("train-lm", "--set", "optim.lr"), "--set")
    # a length the preset's epochs would silently override
    assert_one_line_error(invoke("train-lm", "--data", str(tiny_data), "--run-dir", str(tmp_path / "r"), "--epochs", "2",
                                 "--set", "schedule.max_steps=6"), "schedule.max_steps has no effect", "--steps")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(trained.read_bytes()[:1000])
    assert_one_line_error(invoke("eval-ppl", "-c", str(broken)), "broken.pt", "truncated or corrupt")
    # a checkpoint scored on a data dir with another vocabulary
    from lmlab.core.prep import prep
    from lmlab.core.textio import TextSource
    (tmp_path / "other.txt").write_text("entirely different words here\n" * 5)
    other = prep(tmp_path / "other", {"test": [TextSource(str(tmp_path / "other.txt"))], "train": [TextSource(str(tmp_path / "other.txt"))]}).out
    assert_one_line_error(invoke("eval-ppl", "-c", str(trained), "--data", str(other), "--split", "test"), "another vocabulary")
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()


def test_existing_prep_output_is_not_overwritten(tmp_path, tiny_text):
    out = tmp_path / "d"
    assert invoke("prep", "--train", str(tiny_text["train"]), "--out", str(out), "-q").exit_code == 0
    before = (out / "meta.json").read_text()
    assert_one_line_error(invoke("prep", "--train", str(tiny_text["valid"]), "--out", str(out)), "--force")
    assert (out / "meta.json").read_text() == before


def test_kn_bigram_baseline_beats_unigram_and_is_written_next_to_the_data(tmp_path, tiny_text):
    from lmlab.core.prep import prep
    from lmlab.core.textio import TextSource
    data = prep(tmp_path / "d", {k: [TextSource(str(v))] for k, v in tiny_text.items()}).out
    uni = json.loads(invoke("eval-ppl", "--ngram", "unigram", "--data", str(data), "--split", "valid").stdout)
    kn = json.loads(invoke("eval-ppl", "--ngram", "kn-bigram", "--data", str(data), "--split", "valid").stdout)
    assert kn["tokens"] == uni["tokens"] and kn["ppl"] < 0.5 * uni["ppl"]  # the corpus has a strong bigram structure
    assert (data / "kn_bigram.safetensors").exists()


def test_prep_routes_parallel_text_to_the_translation_prep(tmp_path):
    for lang, words in (("de", "ein hund läuft"), ("en", "a dog runs")):
        (tmp_path / f"train.{lang}").write_text("\n".join(f"{words} {i}" for i in range(50)) + "\n", encoding="utf-8")
    result = invoke("prep", "--src-lang", "de", "--tgt-lang", "en", "--split", f"train={tmp_path / 'train'}",
                    "--out", str(tmp_path / "d"), "--vocab-size", "300", "-q")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["splits"]["train"]["pairs"] == 50
    assert_one_line_error(invoke("prep", "--split", "a", "--split", "b"), "--src-lang")


def _checked_keys(cls, prefix=""):
    import dataclasses
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(value):
            yield from _checked_keys(type(value), f"{prefix}{f.name}.")
        elif f.metadata.get("check") is not None:
            yield f"{prefix}{f.name}", f.metadata["check"]


CONFIGS = ["lmlab.core.train.config:TrainConfig", "lmlab.core.residual.config:Config", "lmlab.core.gebm.config:Config",
           "lmlab.core.seq2seq.config:Config", "lmlab.core.prep_config:PrepConfig"]


@pytest.mark.parametrize("ref", CONFIGS)
def test_every_range_checked_key_refuses_a_bad_value_naming_itself(ref):
    import importlib
    from lmlab.core.config import merge, set_dotted
    from lmlab.core.errors import LmlabError
    module, name = ref.split(":")
    cls = getattr(importlib.import_module(module), name)
    keys = list(_checked_keys(cls))
    assert len(keys) >= 3
    for key, check in keys:
        assert check.problem(check.bad), (key, check.bad)
        override = {}
        set_dotted(override, key, check.bad)
        with pytest.raises(LmlabError) as exc:
            merge(cls(), override, "--set")
        assert str(exc.value).startswith(f"{key}: "), str(exc.value)


def test_config_errors_through_the_cli_name_the_key_and_where_it_came_from(tmp_path):
    assert_one_line_error(invoke("train-lm", "--set", "data.batch_size=0", "--print-config"), "data.batch_size", ">= 1")
    preset = tmp_path / "bad.toml"
    preset.write_text('description = "x"\n[train-lm]\nmodel.lstm.dropout = 1.5\n')
    assert_one_line_error(invoke("train-lm", "--preset", str(preset), "--print-config"), "model.lstm.dropout", f"preset '{preset}'")
    result = invoke("train-lm", "--preset", "demo,cpu", "--set", "optim.lr=0.5", "--print-config")
    assert result.exit_code == 0 and json.loads(result.stdout)["optim"]["lr"] == 0.5


def test_plain_progress_prints_the_first_update_on_a_freshly_booted_machine(monkeypatch):
    """time.monotonic() counts from boot: on a node up for less than interval_s the first line must still print
    (it did not: the last-logged time started at 0, so a fresh SLURM node showed nothing until the last update)."""
    import io
    from lmlab.core import reporting
    monkeypatch.setattr(reporting.time, "monotonic", lambda: 120.0)  # up two minutes
    stream = io.StringIO()
    reporter = reporting.Reporter(stream=stream, interval_s=1000)
    reporter.start(8, "train")
    for step in range(1, 9):
        reporter.update(step)
    assert [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()] == ["train 1/8", "train 8/8"]


def test_plain_progress_says_the_time_to_the_budgets_end_at_this_processs_rate(monkeypatch):
    """A batch job's progress line ends with eta=…: the updates left at the rate since this process's first update
    (a resumed run's own rate, not its whole history's); none on the first line (no rate yet) or the last."""
    import io
    from lmlab.core import reporting
    clock = [1000.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    reporter = reporting.Reporter(stream=stream, interval_s=0)
    reporter.start(100_000, "train")
    for step in (40_000, 40_002, 40_004):  # resumed at 40,000, then 2 updates a second
        reporter.update(step)
        clock[0] += 1.0
    reporter.update(99_998)
    reporter.update(100_000)
    lines = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines[:3] == ["train 40000/100000", "train 40002/100000 eta=8h19m", "train 40004/100000 eta=8h19m"]
    assert lines[3:] == ["train 99998/100000 eta=0s", "train 100000/100000"]
    assert [reporting.duration(s) for s in (44.6, 60, 3599, 3600, 7260)] == ["45s", "1m", "59m", "1h00m", "2h01m"]


@pytest.mark.parametrize("interval_s, lines", [(0, 8), (1000, 2)])
def test_run_log_interval_s_spaces_the_plain_progress_lines(tmp_path, tiny_data, interval_s, lines):
    from conftest import run_cli
    result = run_cli("train-lm", "--data", str(tiny_data), "--run-dir", str(tmp_path / "r"), "--device", "cpu",
                     "--steps", "8", "--set", "data.batch_size=4", "--set", "data.bptt=8", "--set", "model.d_model=16",
                     "--set", "model.n_layers=1", "--set", "model.lstm.hidden_size=16", "--set", "hardware.threads=1",
                     "--set", "run.eval_interval=1000", "--set", f"run.log_interval_s={interval_s}")
    assert result.returncode == 0, result.stderr
    progress = [l for l in result.stderr.splitlines() if " train " in l and "/8 " in l]
    assert len(progress) == lines, result.stderr  # every update, or the first and the last only


def test_cache_define_scores_as_the_live_unit_and_refuses_what_it_cannot_cache(tmp_path, tiny_data, trained):
    from conftest import tiny_train_config
    from lmlab.core.reporting import NullReporter
    from lmlab.core.train.lm_trainer import train_lm
    run = tmp_path / "define"
    define = {"kind": "define", "define": {"map_dim": 8, "expand_dim": 32, "layers": 3}}
    train_lm(tiny_train_config(tiny_data, run, model={"embedding": define}, schedule={"max_steps": 6}), NullReporter())
    best, cached = run / "checkpoints" / "best.pt", tmp_path / "cached.pt"
    result = invoke("cache-define", "-c", str(best), "-o", str(cached))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    vocab = torch.load(best, weights_only=True)["vocab_size"]
    assert summary["embedding_params_after"] == vocab * 16 < summary["embedding_params_before"]  # V x d_model table
    live = json.loads(invoke("eval-ppl", "-c", str(best), "--split", "valid", "--device", "cpu", "-q").stdout)
    table = json.loads(invoke("eval-ppl", "-c", str(cached), "--split", "valid", "--device", "cpu", "-q").stdout)
    assert abs(live["nats_per_token"] - table["nats_per_token"]) < 1e-6 and live["tokens"] == table["tokens"]
    assert_one_line_error(invoke("cache-define", "-c", str(best), "-o", str(cached)), "exists", "--force")
    assert_one_line_error(invoke("cache-define", "-c", str(trained), "-o", str(tmp_path / "x.pt")), "not define")


def test_a_finished_run_prints_its_summary_with_the_modules_it_started_with():
    """A training outlives code changed on disk beside it (a `git pull` or `pip install -e` during a many-hour run): a
    module first imported when the run ends (the summary's JSON, the curves PNG, the best checkpoint's reload) would
    be the new version, mismatched with the old ones already loaded; the full tier's dropout-only arm ended in an
    ImportError instead of its summary that way. The command and the trainer import them when they start."""
    from lmlab.cli import common
    from lmlab.core import checkpoint, plot, records
    from lmlab.core.train import lm_trainer
    assert common.strict is records.strict
    assert lm_trainer.write_curves_png is plot.write_curves_png and lm_trainer.load_checkpoint is checkpoint.load_checkpoint


def _raise(exc):
    raise exc


def test_a_device_out_of_memory_is_one_line_and_other_runtime_errors_are_not_hidden(trained, monkeypatch):
    import lmlab.core.evaluate as evaluate
    monkeypatch.setattr(evaluate, "evaluate_lm", lambda *a, **k: _raise(torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 8.00 GiB.\nGPU 0 has 1.2 GiB free")))
    assert_one_line_error(invoke("eval-ppl", "-c", str(trained), "--split", "valid"),
                          "out of device memory (CUDA out of memory. Tried to allocate 8.00 GiB.);", "--batch-size")
    monkeypatch.setattr(evaluate, "evaluate_lm", lambda *a, **k: _raise(RuntimeError("a bug, not a resource")))
    with pytest.raises(RuntimeError, match="a bug"):  # a traceback for what lmlab cannot explain
        invoke("eval-ppl", "-c", str(trained), "--split", "valid")
