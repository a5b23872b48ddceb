import pytest

from conftest import REPO
from lmlab.core.config import (describe, from_dict, merge, parse_overrides, preset_names, preset_values, read_preset,
                               resolve)
from lmlab.core.errors import LmlabError
from lmlab.core.prep_config import PrepConfig
from lmlab.core.train.config import TrainConfig


def test_overrides_parse_toml_values_and_nest():
    assert parse_overrides(["optim.lr=0.5", "model.kind=transformer", "optim.betas=[0.9, 0.95]", "run.force=true"]) == {
        "optim": {"lr": 0.5, "betas": [0.9, 0.95]}, "model": {"kind": "transformer"}, "run": {"force": True}}


def test_merge_checks_types_choices_and_keys():
    cfg = merge(TrainConfig(), {"optim": {"lr": "0.25"}, "data": {"batch_size": "8"}})
    assert cfg.optim.lr == 0.25 and cfg.data.batch_size == 8
    with pytest.raises(LmlabError, match="model.kind"):
        merge(TrainConfig(), {"model": {"kind": "gru"}})
    with pytest.raises(LmlabError, match="unknown key 'lrr'"):
        merge(TrainConfig(), {"optim": {"lrr": 1}})
    with pytest.raises(LmlabError, match="expected int"):
        merge(TrainConfig(), {"data": {"batch_size": 2.5}})


def test_presets_apply_in_order_then_overrides():
    cfg = resolve(TrainConfig, "train-lm", ["ptb", "zaremba-medium", "gpu"], {"optim": {"lr": 0.5}})
    assert cfg.data.dir == "data/ptb" and cfg.model.d_model == 650 and cfg.schedule.epochs == 39
    assert cfg.hardware.precision == "bf16" and cfg.optim.lr == 0.5


def test_env_expansion_in_presets(monkeypatch):
    monkeypatch.setenv("LMLAB_PTB", "/data/ptb-here")
    assert preset_values("ptb", "prep")["train"] == ["/data/ptb-here/ptb.train.txt"]
    monkeypatch.delenv("LMLAB_PTB")
    with pytest.raises(LmlabError) as err:  # no fallback to a development machine's path
        preset_values("ptb", "prep")
    assert str(err.value) == ("preset 'ptb' needs LMLAB_PTB: export it as the directory holding ptb.train.txt, "
                              "ptb.valid.txt, ptb.test.txt (or give the paths with --set train=PATH --set valid=PATH "
                              "--set test=PATH)")
    with pytest.raises(LmlabError, match="^preset 'ptb' needs LMLAB_PTB: .*ptb.test.txt"):
        resolve(PrepConfig, "prep", ["ptb"])
    monkeypatch.setenv("LMLAB_PTB", "")  # empty is unset, as in the shell's ${VAR:?}
    with pytest.raises(LmlabError, match="needs LMLAB_PTB"):
        resolve(PrepConfig, "prep", ["ptb"])


def test_an_unset_preset_variable_is_fine_when_flags_replace_every_path(monkeypatch):
    monkeypatch.delenv("LMLAB_PTB", raising=False)
    cfg = resolve(PrepConfig, "prep", ["ptb"], {"train": ["a.txt"], "valid": ["b.txt"], "test": ["c.txt"]})
    assert (cfg.train, cfg.valid, cfg.test, cfg.out) == (["a.txt"], ["b.txt"], ["c.txt"], "data/ptb")
    with pytest.raises(LmlabError, match="needs LMLAB_PTB"):  # one path still from the preset
        resolve(PrepConfig, "prep", ["ptb"], {"train": ["a.txt"], "valid": ["b.txt"]})
    assert resolve(TrainConfig, "train-lm", ["ptb"]).data.dir == "data/ptb"  # train-lm reads no LMLAB_PTB path


@pytest.mark.parametrize("name", [n for n in preset_names() if "${" in (REPO / "presets" / f"{n}.toml").read_text()])
def test_no_preset_falls_back_to_a_path_outside_the_project(name, monkeypatch):
    """A default (`${VAR:-x}`) may only name a path inside the project (runs/...); a dataset's location is the
    user's: unset, it is one error line naming the preset, the variable and what it must hold."""
    from lmlab.core.preset_env import VAR
    text = (REPO / "presets" / f"{name}.toml").read_text()
    for m in VAR.finditer(text):
        monkeypatch.delenv(m.group(1), raising=False)
        if m.group(2) == ":-":
            assert not m.group(3).startswith(("/", "..", "~")) and "shared" not in m.group(3), m.group(0)
    for command in ("prep", "train-ebm"):
        values = preset_values(name, command, keep_unset=True)
        if "${" not in str(values):
            continue
        with pytest.raises(LmlabError) as err:
            preset_values(name, command)
        line = str(err.value)
        assert line.startswith(f"preset '{name}' needs LMLAB_") and "export it as " in line and "--set " in line
        assert "\n" not in line and "shared" not in line


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(LmlabError, match="unknown preset 'nope'"):
        read_preset("nope")


def _train_ebm_classes():
    classes = []
    for ref in ("lmlab.core.residual.train:Config", "lmlab.core.gebm.train:Config"):
        module, name = ref.split(":")
        try:
            classes.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return classes


def _translation_class():
    try:
        from lmlab.core.seq2seq.train import Config
        return Config
    except ImportError:
        return None


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses_and_validates(name, preset_env):
    raw = read_preset(name)
    assert isinstance(raw.get("description", ""), str) and raw.get("description"), f"preset {name} needs a description"
    for command in ("prep", "train-lm", "train-ebm"):
        if command not in raw:
            continue
        if command == "prep":
            values = preset_values(name, command)
            if "src_lang" in values or "source" in values or "pairs" in values:
                continue  # parallel-data prep has its own options (translation)
            resolve(PrepConfig, command, [name])
        elif command == "train-lm":
            try:
                resolve(TrainConfig, command, [name])
            except LmlabError:
                cls = _translation_class()
                assert cls is not None, f"preset {name} does not validate as an LM config"
                resolve(cls, command, [name])
        else:
            errors = []
            for cls in _train_ebm_classes():
                try:
                    resolve(cls, command, [name])
                    break
                except LmlabError as exc:
                    errors.append(str(exc))
            else:
                pytest.fail(f"preset {name} [train-ebm] validates against no EBM config: {errors}")


def test_describe_lists_every_leaf_with_help():
    rows = describe(TrainConfig)
    keys = {k for k, _, _ in rows}
    assert {"optim.lr", "model.lstm.dropout", "run.resume", "hardware.precision", "model.embedding.define.layers"} <= keys
    assert all(help_text for _, _, help_text in rows)


def test_from_dict_roundtrip():
    cfg = resolve(TrainConfig, "train-lm", ["demo", "cpu"])
    from lmlab.core.config import to_dict
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_the_pipelines_data_root_is_not_a_preset_variable():
    """LMLAB_DATA is the Make layer's dataset root (Makefile); a preset reading it would take /your/datasets
    for a prepared data dir (the residual presets once did)."""
    for path in sorted((REPO / "presets").glob("*.toml")):
        assert "${LMLAB_DATA" not in path.read_text(), path.name


def test_prep_names_the_variable_in_one_line_and_flags_replace_it(tmp_path, tiny_text):
    from conftest import run_cli
    env = {k: "" for k in ("LMLAB_PTB", "LMLAB_MULTI30K")}
    res = run_cli("prep", "--preset", "ptb", "--out", str(tmp_path / "d"), env=env)
    assert res.returncode != 0 and res.stderr.strip().splitlines() == [
        "lmlab: error: preset 'ptb' needs LMLAB_PTB: export it as the directory holding ptb.train.txt, ptb.valid.txt, "
        "ptb.test.txt (or give the paths with --set train=PATH --set valid=PATH --set test=PATH)"]
    res = run_cli("prep", "--preset", "ptb", "--out", str(tmp_path / "d"), "-q", "--train", str(tiny_text["train"]),
                  "--valid", str(tiny_text["valid"]), "--test", str(tiny_text["valid"]), env=env)
    assert res.returncode == 0, res.stderr
    res = run_cli("prep", "--preset", "multi30k-de-en", "--out", str(tmp_path / "p"), env=env)
    assert res.returncode != 0 and "preset 'multi30k-de-en' needs LMLAB_MULTI30K: export it as the directory holding " \
        "train.*, val.*, test_2016_flickr.*" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_readme_lists_every_environment_variable():
    """One table (README, "Data and licences") names every LMLAB_* variable the code, presets and Makefiles read."""
    import re
    sources = [*(REPO / "presets").glob("*.toml"), *(REPO / "core").rglob("*.py"), *(REPO / "cli").glob("*.py"),
               REPO / "Makefile", *(REPO / "pipelines").glob("*.mk"), REPO / "tests" / "conftest.py",
               REPO / "tests" / "test_kill_resume.py", REPO / "tests" / "test_reliability_doc.py"]
    used = {v for p in sources for v in re.findall(r"\bLMLAB_[A-Z0-9_]+", p.read_text())}
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| variable | read by | must hold |"):]
    table = table[:table.index("\n\n")]
    assert used and not {v for v in used if f"`{v}`" not in table}, sorted(v for v in used if f"`{v}`" not in table)


# renamed keys (issue #13: one config vocabulary across commands) ---------------------------------------------


def _ebm_classes():
    from lmlab.core.gebm.config import Config as GEBMConfig
    from lmlab.core.residual.config import Config as ResidualConfig
    return ResidualConfig, GEBMConfig


@pytest.mark.parametrize("cls", _ebm_classes(), ids=["residual", "gebm"])
def test_each_renamed_key_is_one_error_naming_its_new_key(cls):
    import re
    from lmlab.core.config import set_dotted
    assert cls.RENAMED
    for old, new in cls.RENAMED.items():
        old_value, new_value = {}, {}
        set_dotted(old_value, old, 3)
        set_dotted(new_value, new, 3)
        with pytest.raises(LmlabError, match=f"^{re.escape(old)} was renamed {re.escape(new)} \\(issue #13\\)$"):
            merge(cls(), old_value, "--set")
        merged = merge(cls(), new_value, "--set")  # the new key exists and takes the value
        node = merged
        for part in new.split("."):
            node = getattr(node, part)
        assert node == 3


def test_a_preset_with_an_old_key_names_the_preset_even_for_a_section_the_config_lost(tmp_path):
    """Preset keys for sections a config lacks are dropped (they serve other commands), so the rename check runs
    before that filter: an old key of a removed section is still an error, never ignored."""
    import dataclasses
    from lmlab.core.config import option, section

    @dataclasses.dataclass
    class Run:
        keep: int = option(2, "kept checkpoints")

    @dataclasses.dataclass
    class Cfg:
        run: Run = section(Run, "run")
        RENAMED = {"eval.keep": "run.keep"}

    preset = tmp_path / "old.toml"
    preset.write_text("[train-ebm]\neval.keep = 5\n")
    with pytest.raises(LmlabError, match=r"^eval.keep was renamed run.keep \(issue #13\) \(from preset '.*old.toml'\)$"):
        resolve(Cfg, "train-ebm", [str(preset)])
    _, gebm = _ebm_classes()
    preset.write_text("[train-ebm]\noptim.base_steps = 5\n")
    with pytest.raises(LmlabError, match=r"^optim.base_steps was renamed schedule.max_steps \(issue #13\) \(from preset"):
        resolve(gebm, "train-ebm", [str(preset)])


@pytest.mark.parametrize("cls", _ebm_classes(), ids=["residual", "gebm"])
def test_a_stored_config_from_before_the_rename_is_upgraded(cls):
    """Checkpoints written before issue #13 hold the old names: `upgrade` moves them, so such a model still loads."""
    from lmlab.core.config import set_dotted, to_dict, upgrade
    stored = to_dict(cls())
    for old, new in cls.RENAMED.items():
        *path, leaf = new.split(".")
        node = stored
        for part in path:
            node = node[part]
        set_dotted(stored, old, node.pop(leaf) + 1)
    with pytest.raises(LmlabError, match="was renamed"):
        from_dict(cls, stored)
    cfg = from_dict(cls, upgrade(cls, stored))
    for old, new in cls.RENAMED.items():
        node, default = cfg, cls()
        for part in new.split("."):
            node, default = getattr(node, part), getattr(default, part)
        assert node == default + 1, new


def test_an_old_key_on_the_command_line_is_one_stderr_line_naming_the_new_key(tmp_path):
    from conftest import run_cli
    res = run_cli("train-ebm", "--kind", "gebm", "--set", "optim.base_steps=3", "--run-dir", str(tmp_path / "r"), "-q")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == ["lmlab: error: optim.base_steps was renamed schedule.max_steps (issue #13)"]
    assert not (tmp_path / "r").exists()
    preset = tmp_path / "old.toml"
    preset.write_text("[train-ebm]\noptim.warmup_steps = 5\n")
    res = run_cli("train-ebm", "--kind", "residual", "--preset", str(preset), "--run-dir", str(tmp_path / "r"), "-q")
    assert res.returncode != 0 and res.stderr.strip().splitlines() == [
        f"lmlab: error: optim.warmup_steps was renamed schedule.warmup_steps (issue #13) (from preset '{preset}')"]


def test_a_run_dir_config_json_from_before_the_rename_says_how_to_resume(tmp_path):
    """Resuming a GEBM run dir whose config.json has the old names: one line naming the file and the new key
    (rundir's own comparison would report `eval.every=...` changed to None)."""
    import json
    from conftest import run_cli
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"eval": {"every": 10, "keep": 2, "is_samples": 20000}}))
    args = ("train-ebm", "--kind", "gebm", "--run-dir", str(run), "--device", "cpu", "-q")
    res = run_cli(*args)
    assert res.returncode != 0 and res.stderr.strip().splitlines() == [
        f"lmlab: error: {run / 'config.json'}: eval.every was renamed run.eval_interval (issue #13); rename the key "
        "in that file to resume the run, or choose another --run-dir"]
