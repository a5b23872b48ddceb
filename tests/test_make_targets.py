"""The Make layer: every training step is a stamp written only when training completed (a SIGTERM-stopped run is
resumed by the next `make`, never decoded; Ctrl-C never deletes a checkpoint), every directory a recipe writes into
is created by the recipe (a clean checkout has no runs/ or data/), and `make help` lists every target.

Training is faked (a script that writes a checkpoint and prints a train summary) so these run in seconds; the real
trainers' summaries say `stopped_by` on SIGTERM/SIGUSR1 (tests/test_kill_resume.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

FAKE_TRAIN = r'''
import json, os, sys, time
args = sys.argv[1:]
run = args[args.index("--run-dir") + 1]
os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
with open(os.path.join(run, "checkpoints", "best.pt"), "w") as f:
    f.write("a checkpoint")
with open(os.path.join(run, "calls.txt"), "a") as f:
    f.write(" ".join(args) + "\n")
if os.environ.get("FAKE_SLEEP"):
    open(os.path.join(run, "started"), "w").close()
    time.sleep(float(os.environ["FAKE_SLEEP"]))
stopped = os.environ.get("FAKE_STOP") if os.environ.get("FAKE_STOP_RUN") in (None, run) else None
print(json.dumps({"run_dir": run, "step": 3, "stopped_by": stopped}))
'''


@pytest.fixture()
def ws(tmp_path):
    """A checkout's Make layer in a scratch dir (no runs/), with its inputs present and a fake trainer."""
    for name in ("Makefile", "pipelines", "presets", "corpora", "bench", "pyproject.toml"):
        (tmp_path / name).symlink_to(REPO / name)
    time.sleep(0.01)
    for path in ("data/demo/meta.json", "data/multi30k-de-en/meta.json", "data/ptb/meta.json", "wine/winequality-red.csv",
                 "wine/winequality-white.csv", ".installed"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    return tmp_path


def make(ws: Path, *args: str, env: dict | None = None, check: bool | None = None) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", f"LMLAB_TRAIN={sys.executable} {ws / 'fake_train.py'}", f"WINE={ws / 'wine'}",
           f"PYTHON={sys.executable}", *args]
    proc = subprocess.run(cmd, cwd=ws, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


# (stamp, make target, run dir, what decoding/evaluating the run's checkpoint looks like in `make -n`)
PIPELINES = [
    ("runs/multi30k-de-en.train.json", "mt-multi30k-de-en", "runs/multi30k-de-en",
     "sample --checkpoint runs/multi30k-de-en/checkpoints/best.pt"),
    ("runs/residual-demo.train.json", "residual-demo", "runs/residual-demo",
     "eval-ppl --checkpoint runs/residual-demo/checkpoints/best.pt"),
    ("runs/gebm-uci-redwine.train.json", "gebm-redwine", "runs/gebm-uci-redwine",
     "evaluate runs/gebm-uci-redwine/checkpoints/best.pt"),
    ("runs/gebm-cifar10-cpu.train.json", "gebm-cifar10-cpu", "runs/gebm-cifar10-cpu",
     "sample -c runs/gebm-cifar10-cpu/checkpoints/best.pt"),
]


def _train_line(out: str, run: str) -> int:
    lines = out.splitlines()
    hits = [i for i, l in enumerate(lines) if re.search(r"train-(lm|ebm) .*--run-dir " + re.escape(run) + r"( |$)", l)]
    return hits[0] if hits else -1


@pytest.mark.parametrize("stamp,target,run,decode", PIPELINES, ids=[p[1] for p in PIPELINES])
def test_a_sigterm_stopped_training_is_resumed_by_make_not_decoded(ws, stamp, target, run, decode):
    stopped = make(ws, stamp, env={"FAKE_STOP": "SIGTERM", "FAKE_STOP_RUN": run})
    assert stopped.returncode != 0 and "training stopped by SIGTERM; rerun make to resume it" in stopped.stderr
    assert not (ws / stamp).exists() and (ws / run / "checkpoints" / "best.pt").exists()  # no stamp, checkpoint kept

    plan = make(ws, "-n", target, check=True).stdout
    train_at = _train_line(plan, run)
    assert train_at >= 0, f"`make -n {target}` after a stopped run does not resume training:\n{plan}"
    decode_at = [i for i, l in enumerate(plan.splitlines()) if decode in l]
    assert decode_at and decode_at[0] > train_at, plan

    make(ws, stamp, check=True)  # the resumed run completes: now the stamp exists and training is done
    assert (ws / stamp).exists() and not (ws / f"{stamp}.tmp").exists()
    plan = make(ws, "-n", target, check=True).stdout
    assert _train_line(plan, run) < 0 and decode in plan, plan


def test_ctrl_c_during_training_keeps_the_checkpoint_and_writes_no_stamp(ws):
    env = {**os.environ, "FAKE_SLEEP": "60"}
    # SIGINT at its default in make (and so in the trainer): a test run in the background (nohup, `cmd &` in a
    # script) inherits SIGINT ignored, and make and Python keep an ignored SIGINT ignored, so Ctrl-C would do nothing
    proc = subprocess.Popen(["make", f"LMLAB_TRAIN={sys.executable} {ws / 'fake_train.py'}", f"PYTHON={sys.executable}",
                             "runs/multi30k-de-en.train.json"], cwd=ws, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = ws / "runs" / "multi30k-de-en" / "started"
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert started.exists()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert (ws / "runs" / "multi30k-de-en" / "checkpoints" / "best.pt").exists()
    assert not (ws / "runs" / "multi30k-de-en.train.json").exists()


def _recipes():
    """(file, logical recipe lines) of every pipeline fragment, continuation lines joined."""
    for path in sorted((REPO / "pipelines").glob("*.mk")) + [REPO / "Makefile"]:
        text = re.sub(r"\\\n", " ", path.read_text())
        yield path.name, text.splitlines()


def test_every_training_step_in_every_pipeline_is_a_stamp():
    seen = 0
    for name, lines in _recipes():
        for i, line in enumerate(lines):
            if not line.startswith("\t") or not re.search(r"(\)|lmlab) train-(lm|ebm)\b", line):
                continue
            seen += 1
            assert "LMLAB_TRAIN)" in line, f"{name}: a training step not launched by $(LMLAB_TRAIN): {line.strip()}"
            assert re.search(r"> (\$\$?@|\$\(2\)\.train\.json)\.tmp$", line.rstrip()), \
                f"{name}: a training step whose summary is not written to its stamp's .tmp: {line.strip()}"
            assert re.match(r"\t\$\$?\(train_done\)$", lines[i + 1]), f"{name}: no $(train_done) after: {line.strip()}"
        for line in lines:  # a checkpoint is never a target with a recipe (.DELETE_ON_ERROR would delete it)
            if re.match(r"^[^\t#].*checkpoints/[\w.]+\.pt\s*:", line):
                assert line.rstrip().endswith(";"), f"{name}: a checkpoint made by a recipe: {line}"
    assert seen >= 19  # every pipeline's training steps were found (LM, MT, residual, GEBM, DeFINE, IMM, smoke)


TARGETS = ["demo", "ptb-zaremba-small", "mt-multi30k-de-en", "mt-multi30k-en-de-seeds", "residual-demo", "gebm-wine", "gebm-cifar10-cpu",
           "imm-demo", "define-demo", "define-ptb", "imm-ptb"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_directory_a_recipe_writes_into_is_created_on_a_clean_checkout(ws, target):
    plan = make(ws, "-n", target, check=True).stdout
    made = {"."}
    for line in plan.splitlines():
        m = re.match(r"mkdir -p (.*)", line)
        if m:
            made.update(os.path.normpath(d) for d in m[1].split())
        for d in re.findall(r"--run-dir (\S+)", line):
            made.add(os.path.normpath(d))
        for out in re.findall(r"(?:>>?|\| tee) *([\w./$-]+)", line):
            if out.startswith("/") or out.startswith("$"):
                continue
            parent = os.path.normpath(os.path.dirname(out) or ".")
            assert parent in made or (ws / parent).is_dir(), f"`make {target}` writes {out} before creating {parent}:\n{line}"


def test_every_training_step_of_every_target_takes_train_args(ws):
    """TRAIN_ARGS reaches each train-lm/train-ebm step (`make help` says so): `TRAIN_ARGS='--set hardware.threads=1'`
    is how three one-thread arms share two cores. `smoke` keeps its own tiny flags."""
    help_out = make(ws, "help", check=True).stdout
    targets = {m[1] for m in re.finditer(r"^  ([a-z][\w.-]+)\s{2,}", help_out, re.M)} - {"smoke", "bench-fused-ce"}
    checked = 0
    for target in sorted(targets):
        plan = make(ws, "-n", target, "TRAIN_ARGS=--set run.XMARK=1").stdout.replace("\\\n", " ")
        for line in plan.splitlines():
            if re.search(r"train-(lm|ebm) .*--run-dir", line):
                assert "--set run.XMARK=1" in line, f"`make {target}`: a training step without TRAIN_ARGS:\n{line}"
                checked += 1
    assert checked > 40, checked  # the plans were read (a broken ws would check nothing)


def test_make_help_lists_every_target_from_the_fragments():
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = set()
    for line in out.splitlines():
        m = re.match(r"  (\S.*?)\s{2,}\S", line)
        if m:
            listed.update(m[1].split())
    phony = set()
    for _, lines in _recipes():
        for line in lines:
            if line.startswith(".PHONY:"):
                phony.update(line.split(":", 1)[1].split())
    assert {"demo", "test", "bench", "results", "ptb-zaremba-small", "mt-wmt14-en-de", "gebm-redwine"} <= listed
    assert not phony - listed, f"targets without a `## ` line: {sorted(phony - listed)}"
    for line in out.splitlines():  # reproductions name their variables: hardware, data paths
        if re.match(r"  (demo|ptb-zaremba|imm-ptb|define-ptb|mt-|gebm-cifar10|gebm-wine|residual-demo) ", line):
            assert re.search(r"\[.*\b[A-Z0-9_]+=", line), f"no [VAR=...] on: {line}"
        if re.match(r"  (demo|ptb-zaremba-\w+|imm-ptb|define-ptb|mt-wmt14-en-de|gebm-cifar10) ", line):
            assert "HW=" in line, f"no HW= on: {line}"
    header = (REPO / "Makefile").read_text().split("\n\n")[0]
    assert out.strip() not in header


DATA_VARS = {"LMLAB_PTB": "ptb", "LMLAB_WIKITEXT2": "wikitext-2", "LMLAB_WIKITEXT103": "wikitext-103",
             "LMLAB_MULTI30K": "multi30k", "LMLAB_WMT14": "wmt14-en-de", "LMLAB_REDWINE": "uci-wine/winequality-red.csv",
             "LMLAB_WHITEWINE": "uci-wine/winequality-white.csv", "LMLAB_CIFAR10": "cifar10/CIFAR-10-images.tar.gz"}


def _exported(ws: Path, *args: str, env: dict | None = None) -> dict[str, str]:
    """The LMLAB_* variables a recipe sees (an extra rule that prints them), with `env` as the whole environment
    (no LMLAB_*/WINE/CIFAR10 from the caller's)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LMLAB_") and k not in ("WINE", "CIFAR10")}
    proc = subprocess.run(["make", "--no-print-directory", "--eval=show-env: ; @env | grep ^LMLAB_ || true", "show-env", *args],
                          cwd=ws, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def test_data_paths_default_under_one_root_and_what_the_user_sets_wins(ws):
    """The presets have no dataset defaults; the Make layer keeps one documented root (LMLAB_DATA, the development
    machines' layout) for every LMLAB_* variable, and never overrides one the user set (environment or command
    line). WINE=dir and CIFAR10=path still work on the command line; WINE in the environment (Wine) is not read."""
    seen = _exported(ws)
    assert {k: seen.get(k) for k in DATA_VARS} == {k: f"../shared/data/{v}" for k, v in DATA_VARS.items()}
    assert {k: _exported(ws, "LMLAB_DATA=/d")[k] for k in DATA_VARS} == {k: f"/d/{v}" for k, v in DATA_VARS.items()}
    env = {"LMLAB_PTB": "/x", "LMLAB_REDWINE": "/r.csv", "LMLAB_WHITEWINE": "/w.csv", "LMLAB_CIFAR10": "/c.tgz",
           "WINE": "/usr/bin/wine"}
    seen = _exported(ws, env=env)
    assert {k: seen[k] for k in ("LMLAB_PTB", "LMLAB_REDWINE", "LMLAB_WHITEWINE", "LMLAB_CIFAR10")} == \
        {k: v for k, v in env.items() if k != "WINE"}
    assert seen["LMLAB_MULTI30K"] == "../shared/data/multi30k"
    seen = _exported(ws, "WINE=/wine", "CIFAR10=/cifar.tgz", "LMLAB_PTB=/cmd")
    assert (seen["LMLAB_REDWINE"], seen["LMLAB_WHITEWINE"], seen["LMLAB_CIFAR10"], seen["LMLAB_PTB"]) == \
        ("/wine/winequality-red.csv", "/wine/winequality-white.csv", "/cifar.tgz", "/cmd")


def test_recipes_read_the_data_variables_and_pythons_python(ws):
    plan = make(ws, "-n", "imm-ptb-cpu", "imm-transformer-ptb-cpu", "imm-ptb-cpu-control", "mt-multi30k-de-en", "gebm-redwine", "gebm-cifar10-cpu",
                env={"LMLAB_PTB": "/x", "LMLAB_MULTI30K": "/m", "LMLAB_CIFAR10": "/c.tgz"}, check=True).stdout
    assert "head -n $((n / 4)) /x/ptb.train.txt" in plan and "--valid /x/ptb.valid.txt" in plan
    assert "--preset ptb,ptb-transformer-small-dropout,ptb-transformer-small-imm," in plan and \
        "--run-dir runs/imm-transformer-ptb-cpu/imm-s3" in plan and "-o docs/figures/imm-transformer-ptb-cpu.png" in plan
    assert "--preset ptb,ptb-lstm-small-dropout,ptb-lstm-small-lrcontrol," in plan and "--base control --arm imm" in plan
    assert "< /m/test_2016_flickr.de" in plan and "bleu /m/test_2016_flickr.en" in plan
    assert "--real /c.tgz" in plan and f"test -f {ws / 'wine'}/winequality-red.csv" in plan  # WINE= from make()
    assert f"{sys.executable} -m lmlab.core.gebm.evaluate" in plan and "\npython -m" not in plan


def test_the_translation_seeds_train_both_systems_per_seed_and_count_the_single_pair_when_recorded(ws):
    """make mt-multi30k-de-en-seeds: --seed N on both systems (the DeFINE flags on its own only), paired by
    bench/mt_seeds.py with the single pair's record as seed 1234 when it exists, and without it when it does not."""
    def plan():
        return make(ws, "-n", "mt-multi30k-de-en-seeds", "MT_SEEDS=3 4", check=True).stdout
    out = plan()
    lines = out.splitlines()
    for seed in ("3", "4"):
        at = {system: _train_line(out, f"runs/mt-multi30k-de-en-seeds/{system}-s{seed}") for system in ("standard", "define")}
        assert min(at.values()) >= 0, out
        standard, define = lines[at["standard"]], lines[at["define"]]
        assert f"--seed {seed} " in standard and "--embedding define" not in standard, standard
        assert f"--seed {seed} --embedding define --set model.embedding.define.map_dim=64" in define, define
        assert "--preset multi30k-de-en," in standard and "--preset multi30k-de-en," in define
    pair = next(line for line in lines if "bench/mt_seeds.py" in line)
    assert "--seeds 3 4 " in pair and "--recorded" not in pair, pair
    assert "--seed '3 4'" in plan()
    (ws / "results").mkdir()
    (ws / "results" / "mt-multi30k-de-en.json").write_text("{}")
    recorded = plan()
    assert "--recorded 1234=results/mt-multi30k-de-en.json" in recorded and "--seed '1234 3 4'" in recorded
    assert "train-lm --task translation --preset multi30k-de-en,cpu --run-dir runs/multi30k-de-en " not in recorded


def test_each_transformer_imm_arm_switches_on_below_its_own_seeds_dropout_best(ws):
    """make imm-transformer-ptb-cpu: the IMM arm of seed N waits for dropout-sN and gets round(1.1 x its best)."""
    runs = ws / "runs" / "imm-transformer-ptb-cpu"
    runs.mkdir(parents=True)
    for seed, best in ((1, 266.6949616558575), (2, 286.5502131209096)):
        (runs / f"dropout-s{seed}.train.json").write_text(json.dumps({"best_valid_ppl": best}))
    for seed, threshold in ((1, "293.0"), (2, "315.0")):
        plan = make(ws, "-n", f"runs/imm-transformer-ptb-cpu/imm-s{seed}.train.json", check=True).stdout
        line = plan.splitlines()[_train_line(plan, f"runs/imm-transformer-ptb-cpu/imm-s{seed}")]
        assert f"--set imm.start_below_ppl={threshold} " in line and f"--seed {seed}" in line, line
    (runs / "dropout-s2.train.json").unlink()  # made as imm-s2's prerequisite, it takes none of imm-s2's flags
    plan = make(ws, "-n", "runs/imm-transformer-ptb-cpu/imm-s2.train.json", check=True).stdout
    line = plan.splitlines()[_train_line(plan, "runs/imm-transformer-ptb-cpu/dropout-s2")]
    assert "imm.start_below_ppl" not in line and line.count("--seed") == 1, line


def test_full_data_imm_arms_switch_on_below_seed_1s_dropout_best(ws):
    """make imm-ptb-cpu-full: every IMM arm waits for dropout-s1 and gets round(1.1 x its best); IMM_FULL_START_BELOW
    overrides it and drops the wait."""
    runs = ws / "runs" / "imm-ptb-cpu-full"
    runs.mkdir(parents=True)
    (runs / "dropout-s1.train.json").write_text(json.dumps({"best_valid_ppl": 120.31}))
    for seed in (1, 3):
        plan = make(ws, "-n", f"runs/imm-ptb-cpu-full/imm-s{seed}.train.json", check=True).stdout
        line = plan.splitlines()[_train_line(plan, f"runs/imm-ptb-cpu-full/imm-s{seed}")]
        assert "--set imm.start_below_ppl=132.0 " in line and f"--seed {seed}" in line and "--data data/ptb " in line, line
    (runs / "dropout-s1.train.json").unlink()
    plan = make(ws, "-n", "runs/imm-ptb-cpu-full/imm-s2.train.json", check=True).stdout
    assert "--run-dir runs/imm-ptb-cpu-full/dropout-s1 " in plan  # the threshold's run comes first
    # made as imm-s2's prerequisite, the gate arm takes none of imm-s2's flags (its seed, its IMM threshold)
    gate = plan.splitlines()[_train_line(plan, "runs/imm-ptb-cpu-full/dropout-s1")]
    assert gate.endswith("--run-dir runs/imm-ptb-cpu-full/dropout-s1 --data data/ptb --seed 1 "
                         "> runs/imm-ptb-cpu-full/dropout-s1.train.json.tmp"), gate
    plan = make(ws, "-n", "runs/imm-ptb-cpu-full/imm-s2.train.json", "IMM_FULL_START_BELOW=150", check=True).stdout
    assert "--run-dir runs/imm-ptb-cpu-full/dropout-s1 " not in plan
    assert "--set imm.start_below_ppl=150 " in plan.splitlines()[_train_line(plan, "runs/imm-ptb-cpu-full/imm-s2")]
    # seed 1 recorded, its run dir gone (a later session adds seeds 2 and 3): the threshold comes from the record
    (ws / "results").mkdir()
    (ws / "results/imm-ptb-cpu-full.json").write_text(json.dumps({"metrics": {"train-dropout-s1": {"best_valid_ppl": 120.31}}}))
    plan = make(ws, "-n", "runs/imm-ptb-cpu-full/imm-s2.train.json", "IMM_CPU_RECORDED_SEEDS=1", check=True).stdout
    assert "--run-dir runs/imm-ptb-cpu-full/dropout-s1 " not in plan, plan
    line = plan.splitlines()[_train_line(plan, "runs/imm-ptb-cpu-full/imm-s2")]
    assert "--set imm.start_below_ppl=132.0 " in line and "--seed 2" in line, line


def test_ablation_record_reads_an_arms_lost_summary_from_the_earlier_record(ws):
    """make imm-ptb-cpu-ablations: an arm whose training summary file is gone (an older make removed decays8's as an
    intermediate; its eval-test.json keeps it from being remade) is read from the earlier record, RECORD.json#KEY;
    an arm whose summary is present is read from its file."""
    (ws / "data/ptb-quarter").mkdir(parents=True)
    for name in ("meta.json", "kn_bigram.safetensors"):
        (ws / "data/ptb-quarter" / name).write_text("{}")
    time.sleep(0.05)
    runs = ws / "runs" / "imm-ptb-cpu"
    arms = ("dropout", "tfinit", "imm", "decays8", "draws")
    for arm in arms:
        (runs / f"{arm}-s3").mkdir(parents=True)
        if arm != "decays8":
            (runs / f"{arm}-s3.train.json").write_text(json.dumps({"best_valid_ppl": 160.0}))
    time.sleep(0.05)
    for arm in arms:
        (runs / f"{arm}-s3" / "eval-test.json").write_text(json.dumps({"ppl": 150.0}))
    plan = make(ws, "-n", "results/imm-ptb-cpu-ablations.json", check=True).stdout
    assert "train-lm" not in plan, plan
    record = plan[plan.index("lmlab.core.records imm-ptb-cpu-ablations"):]
    assert "--train 'decays8-s3=results/imm-ptb-cpu-ablations.json#train-decays8-s3'" in record, record
    assert "--train 'draws-s3=runs/imm-ptb-cpu/draws-s3.train.json'" in record, record


FAKE_RECORD = r'''
import json, os, sys
os.makedirs("results", exist_ok=True)
paired = [a.partition("=")[2] for a in sys.argv if a.startswith("paired=")]
metrics = {"paired": json.load(open(paired[0]))} if paired else {}
with open(os.path.join("results", sys.argv[1] + ".json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "commit": "0" * 40, "metrics": metrics}, f)
with open("records.log", "a") as f:
    f.write(sys.argv[1] + "\n")
'''


def test_a_record_is_remade_when_its_seed_list_grows_even_if_the_new_seeds_finished_first(ws):
    """The full tier recorded a seed at a time: seed 2's runs may finish before seed 1's record is made, so their files
    are older than it. `make ... IMM_CPU_SEEDS='1 2' IMM_CPU_RECORDED_SEEDS=1` must still remake the record (its seed
    list is a stamp, rewritten when the list changes); the same list again leaves it as it is."""
    (ws / "data/ptb/kn_bigram.safetensors").write_text("{}")
    time.sleep(0.05)
    runs = ws / "runs" / "imm-ptb-cpu-full"
    for seed in (1, 2):
        for arm in ("dropout", "imm"):
            run = runs / f"{arm}-s{seed}"
            run.mkdir(parents=True)
            (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "epoch": 1, "valid_ppl": 100.0 + seed}) + "\n")
            (runs / f"{arm}-s{seed}.train.json").write_text(json.dumps({"run_dir": str(run), "best_valid_ppl": 100.0 + seed}))
    time.sleep(0.05)
    for seed in (1, 2):
        for arm in ("dropout", "imm"):
            (runs / f"{arm}-s{seed}" / "eval-test.json").write_text(json.dumps({"ppl": 95.0}))
    (ws / "fake_record.py").write_text(FAKE_RECORD)
    fakes = [f"RECORD={sys.executable} {ws / 'fake_record.py'}", "RESULTS_DOC=true", "LMLAB=true"]
    log = ws / "records.log"

    def record(*args):
        make(ws, "results/imm-ptb-cpu-full.json", *fakes, *args, check=True)
        return log.read_text().split() if log.exists() else []

    assert record("IMM_CPU_SEEDS=1") == ["imm-ptb-cpu-full"]  # seed 1 recorded; seed 2's files are older now
    time.sleep(0.05)
    assert record("IMM_CPU_SEEDS=1") == ["imm-ptb-cpu-full"]  # the same list: up to date
    recorded = record("IMM_CPU_SEEDS=1 2", "IMM_CPU_RECORDED_SEEDS=1")
    assert recorded == ["imm-ptb-cpu-full"] * 2, "seed 2 was not recorded: the record was taken as up to date"
    argv = json.loads((ws / "results/imm-ptb-cpu-full.json").read_text())["argv"]
    assert "imm-s2=runs/imm-ptb-cpu-full/imm-s2.train.json" in argv and (ws / "runs/.record-seeds/imm-ptb-cpu-full").read_text() == "1 2\n"
    assert record("IMM_CPU_SEEDS=1 2", "IMM_CPU_RECORDED_SEEDS=1") == ["imm-ptb-cpu-full"] * 2
