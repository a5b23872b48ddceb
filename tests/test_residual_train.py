"""Residual EBM end to end on a tiny data dir: NCE training, checkpoint contents, resume, changed base LM,
negatives file, sampling and joint perplexity entry points."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
from lmlab.core.config import resolve, to_dict
from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError
from lmlab.core.generate import load_lm
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig
from lmlab.core.prep import prep
from lmlab.core.reporting import NullReporter
from lmlab.core.residual.config import Config
from lmlab.core.residual.evaluate import eval_joint_ppl
from lmlab.core.residual.negatives import main as negatives_main
from lmlab.core.residual.sample import sample_lines
from lmlab.core.residual.train import train
from lmlab.core.textio import TextSource, sha256_file


pytestmark = pytest.mark.usefixtures("one_thread_module")


WORDS = "the cat sat on a mat and dog ran to big red house".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("res")
    rng = np.random.default_rng(0)
    for split, n in [("train", 400), ("valid", 60), ("test", 60)]:
        lines = [" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(n)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    prep(root / "data", {s: [TextSource(str(root / f"{s}.txt"))] for s in ("train", "valid", "test")})
    data = DataDir(root / "data")
    cfg = ModelConfig(kind="transformer", d_model=16, n_layers=1)
    cfg.transformer.n_heads, cfg.transformer.context = 2, 32
    torch.manual_seed(0)
    lm = build_language_model(cfg, data.vocab_size)
    ckpt = root / "lm.pt"
    save_checkpoint(ckpt, {"model": lm.state_dict(), "config": {"model": to_dict(cfg)}, "vocab_size": data.vocab_size,
                           "specials": data.specials, "tokenizer_json": data.tokenizer_json,
                           "tokenizer_sha256": data.tokenizer_sha256}, "lm")
    return root, ckpt


def make_cfg(root, ckpt, run, **extra):
    sets = {"base_lm": str(ckpt), "data": {"dir": str(root / "data"), "batch_size": 8}, "window": {"prefix_len": 8, "continuation_len": 6},
            "energy": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
            "negatives": {"per_prefix": 3}, "optim": {"lr": 1e-3}, "schedule": {"max_steps": 6, "warmup_steps": 2},
            "valid": {"max_examples": 16}, "run": {"dir": str(root / run), "eval_interval": 3},
            "hardware": {"device": "cpu"}}
    for k, v in extra.items():
        sets.setdefault(k, {}).update(v) if isinstance(v, dict) else sets.__setitem__(k, v)
    return resolve(Config, "train-ebm", [], sets)


def test_train_checkpoint_resume_and_changed_base(setup, tmp_path):
    root, ckpt = setup
    cfg = make_cfg(root, ckpt, "run-bit", mlm={"steps": 2})
    out = train(cfg)
    assert out["step"] == 6
    state = load_checkpoint(root / "run-bit/checkpoints/last.pt", "residual-ebm")
    assert state["base_lm"]["sha256"] == sha256_file(ckpt)
    assert state["config"]["window"]["prefix_len"] == 8 and state["mlm_done"]
    rows = [json.loads(l) for l in (root / "run-bit/metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if "valid_acc" in r]
    assert [r["step"] for r in valid] == [3, 6] and all(0.0 <= r["valid_acc"] <= 1.0 for r in valid)
    # a longer rerun is refused before the run dir is touched: the lr decays linearly to 0 at schedule.max_steps
    before = (root / "run-bit/config.json").read_text()
    cfg2 = make_cfg(root, ckpt, "run-bit", mlm={"steps": 2}, schedule={"max_steps": 9})
    with pytest.raises(LmlabError, match=r"started with schedule.max_steps=6, now schedule.max_steps=9, but its lr "
                                         r"decays linearly .* --steps 6"):
        train(cfg2)
    assert (root / "run-bit/config.json").read_text() == before
    # a run dir from before issue #13's renames: one line naming its config.json and the new key
    old = json.loads(before)
    old["optim"]["max_steps"] = old["schedule"].pop("max_steps")
    (root / "run-bit/config.json").write_text(json.dumps(old))
    with pytest.raises(LmlabError, match=r"run-bit/config.json: optim.max_steps was renamed schedule.max_steps "
                                         r"\(issue #13\); rename the key in that file"):
        train(make_cfg(root, ckpt, "run-bit", mlm={"steps": 2}))
    (root / "run-bit/config.json").write_text(before)
    # a changed base LM is detected when the checkpoint is used
    copy = tmp_path / "lm.pt"
    copy.write_bytes(ckpt.read_bytes())
    state["base_lm"] = {**state["base_lm"], "path": str(copy), "abs_path": str(copy)}
    with copy.open("ab") as f:
        f.write(b"x")
    with pytest.raises(LmlabError, match="changed"):
        sample_lines(state, ["the cat"], num_samples=1, candidates=2, top_k=0, max_new_tokens=3, seed=0, device="cpu")


def test_unit_from_negatives_file_then_sample_and_eval(setup):
    root, ckpt = setup
    neg = root / "neg.npz"
    assert negatives_main(["--base-lm", str(ckpt), "--data", str(root / "data"), "--out", str(neg), "--prefix-len", "8",
                           "--continuation-len", "6", "--per-prefix", "3", "--max-windows", "40"]) == 0
    saved = np.load(neg)
    assert saved["tokens"].shape == (40, 3, 6) and saved["prefix_index"].shape == (40,)
    cfg = make_cfg(root, ckpt, "run-unit", energy={"kind": "unit"}, negatives={"file": str(neg)})
    train(cfg)
    state = load_checkpoint(root / "run-unit/checkpoints/last.pt", "residual-ebm")
    lm, tok, _ = load_lm(str(ckpt))
    assert set(state["energy"]) >= {f"embed.{k}" for k in lm.embed.state_dict()}
    base = {**{f"embed.{k}": v for k, v in lm.embed.state_dict().items()}, **{f"body.{k}": v for k, v in lm.body.state_dict().items()}}
    moved = [k for k, v in base.items() if not torch.equal(state["energy"][k], v)]
    assert len(moved) == len(base), f"UniT's copies of the base LM must train; frozen: {sorted(set(base) - set(moved))}"
    outs = sample_lines(state, ["the cat", "a dog ran", "the cat"], num_samples=2, candidates=4, top_k=3,
                        max_new_tokens=5, seed=1, device="cpu", with_scores=True)
    assert [len(o) for o in outs] == [2, 2, 2] and outs[0][0]["prompt"] == "the cat"
    assert all(set(s["text"].split()) <= set(WORDS) | {"<unk>"} for o in outs for s in o)
    res = eval_joint_ppl(state, str(root / "data"), "test", samples=[1, 2, 4], max_examples=10, batch_size=5, seed=0,
                         device="cpu")
    assert [r["n"] for r in res["joint"]] == [1, 2, 4] and res["tokens"] == 60
    json.dumps(res)
    four = res["joint"][-1]
    assert four["lower_ppl"] <= four["upper_ppl"]


@pytest.mark.parametrize("preset", ["residual-demo", "residual-bit-base", "residual-bit-large", "residual-unit"])
def test_presets_parse(preset):
    cfg = resolve(Config, "train-ebm", [preset, "cpu"])
    assert cfg.window.prefix_len > 0 and cfg.run.dir.startswith("runs/residual")
    assert cfg.energy.kind == ("unit" if preset == "residual-unit" else "bit")


def test_cpu_tier_presets_share_windows_and_base_and_balm_matches_base_plus_unit():
    """The #18 CPU tier: both energies on the converged Zaremba-small PTB LSTM with the same windows; BALM is that LSTM
    widened to the parameters of base + UniT energy (Table 1's BALM: a bigger LM of the joint model's size)."""
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.lm import count_parameters
    from lmlab.core.residual.energy import UniTEnergy
    from lmlab.core.train.config import TrainConfig

    unit, bit = (resolve(Config, "train-ebm", [p, "cpu"]) for p in ("residual-ptb-unit-cpu", "residual-ptb-bit-cpu"))
    assert unit.base_lm == bit.base_lm == "runs/ptb-zaremba-small/checkpoints/best.pt"
    assert (unit.window.prefix_len, unit.window.continuation_len) == (bit.window.prefix_len, bit.window.continuation_len)
    assert (unit.energy.kind, bit.energy.kind, bit.energy.norm) == ("unit", "bit", "post") and bit.mlm.steps > 0
    base_cfg = resolve(TrainConfig, "train-lm", ["zaremba-small"])
    balm_cfg = resolve(TrainConfig, "train-lm", ["zaremba-small", "ptb-balm-cpu"])
    base = build_language_model(base_cfg.model, 10_000)
    joint = count_parameters(base) + count_parameters(UniTEnergy(base, base_cfg.model.d_model))
    balm = count_parameters(build_language_model(balm_cfg.model, 10_000))
    assert abs(balm / joint - 1) < 0.01, (balm, joint)
    ralm_cfg = resolve(TrainConfig, "train-lm", ["zaremba-small", "ptb-ralm-cpu"])
    assert ralm_cfg.model.ralm_base == unit.base_lm  # RALM's frozen base is the energies' base LM
    ralm_cfg.model.ralm_base, ralm_cfg.run.dir = "", base_cfg.run.dir
    assert ralm_cfg == base_cfg  # the base's recipe and architecture: the residual starts as its copy
    balm_cfg.model.d_model = balm_cfg.model.lstm.hidden_size = 200  # the recipe is the base's, only the width differs
    balm_cfg.run.dir = base_cfg.run.dir
    assert balm_cfg == base_cfg


# --- #18.2: the BiT presets are the paper's sizes and pre-train by MLM (no RoBERTa weights) ---------------------
ROBERTA_VOCAB = 50265  # RoBERTa's BPE dictionary (GPT-2's 50,257 merges + specials), the paper's energy vocabulary


@pytest.mark.parametrize("preset,paper_params", [("residual-bit-base", 125e6), ("residual-bit-large", 355e6)])
def test_bit_presets_match_the_papers_parameter_counts(preset, paper_params):
    """Table 1 lists joint BiT-Base as LM + 125M and BiT-Large* as LM + 355M (RoBERTa-Base/Large). Ours differ by
    positions for the 160-token window only (RoBERTa: 514), no token-type row or pooler, and a 1-unit head."""
    import tomllib
    from pathlib import Path

    import lmlab.presets
    from lmlab.core.residual.energy import BiTEnergy

    cfg = resolve(Config, "train-ebm", [preset])
    with torch.device("meta"):  # 355M parameters without allocating them
        energy = BiTEnergy(ROBERTA_VOCAB, cfg.window.prefix_len + cfg.window.continuation_len, cfg.energy)
    params = sum(p.numel() for p in energy.parameters())
    assert abs(params / paper_params - 1) < 0.02, params
    assert cfg.energy.norm == "post"  # RoBERTa's layout
    assert cfg.mlm.steps > 0 and cfg.mlm.batch_size > 0  # pre-trained by MLM on the training text by default
    text = tomllib.loads((Path(lmlab.presets.__file__).parent / f"{preset}.toml").read_text())
    assert "No RoBERTa weights are loaded" in text["description"]


class StopInPhase(NullReporter):
    """SIGTERM once `phase` ("mlm" or "nce") has done `at` updates, as a scheduler would."""

    def __init__(self, at: int, phase: str = "mlm"):
        super().__init__()
        self.at, self.stop_phase, self.phase = at, phase, None

    def start(self, total, desc=""):
        self.phase = desc

    def update(self, done, metrics=None):
        if self.phase == self.stop_phase and done == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def mlm_rows(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["mlm_step"] for r in rows if "mlm_step" in r]


def test_mlm_phase_stops_on_sigterm_and_resumes_bit_for_bit(setup):
    root, ckpt = setup
    extra = dict(mlm={"steps": 4, "warmup_steps": 2, "batch_size": 4}, schedule={"max_steps": 2})
    out = train(make_cfg(root, ckpt, "run-mlm-cut", **extra), StopInPhase(2))
    assert out["stopped_by"] == "SIGTERM" and out["step"] == 0
    state = load_checkpoint(root / "run-mlm-cut/checkpoints/last.pt", "residual-ebm")
    assert not state["mlm_done"] and state["mlm"]["step"] == 2
    assert mlm_rows(root / "run-mlm-cut") == [1, 2]  # one line per MLM checkpoint (every update here)
    assert train(make_cfg(root, ckpt, "run-mlm-cut", **extra))["step"] == 2  # rerun: MLM 2 -> 4, then NCE
    assert mlm_rows(root / "run-mlm-cut") == [1, 2, 3, 4]  # none repeated by the resume
    train(make_cfg(root, ckpt, "run-mlm-whole", **extra))
    cut = load_checkpoint(root / "run-mlm-cut/checkpoints/last.pt", "residual-ebm")
    whole = load_checkpoint(root / "run-mlm-whole/checkpoints/last.pt", "residual-ebm")
    assert cut["mlm_done"] and cut["mlm"] is None
    for k, v in whole["energy"].items():
        assert torch.equal(cut["energy"][k], v), k


# --- minor: eval-ppl refuses another tokenizer ------------------------------------------------------------------
def test_eval_refuses_a_data_dir_with_another_tokenizer(setup, tmp_path):
    import shutil
    root, ckpt = setup
    train(make_cfg(root, ckpt, "run-tok", schedule={"max_steps": 1}))
    state = load_checkpoint(root / "run-tok/checkpoints/last.pt", "residual-ebm")
    other = tmp_path / "data-other"
    shutil.copytree(root / "data", other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = "cat", "dog"
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, other ids
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(LmlabError, match="another tokenizer.json"):
        eval_joint_ppl(state, str(other), "test", samples=[1], max_examples=2, batch_size=2, seed=0, device="cpu")


def test_hardware_precision_is_applied_not_ignored(setup):
    """hardware.precision=bf16 runs the energy's forward under autocast (fp32 weights and loss): the same seed
    gives close but different losses; fp32 stays the default path."""
    root, ckpt = setup
    rows = {}
    for precision in ("fp32", "bf16"):
        train(make_cfg(root, ckpt, f"run-{precision}", hardware={"precision": precision}, schedule={"max_steps": 3}))
        metrics = [json.loads(l) for l in (root / f"run-{precision}/metrics.jsonl").read_text().splitlines()]
        rows[precision] = [r["train_loss_nats"] for r in metrics if "train_loss_nats" in r]
        state = load_checkpoint(root / f"run-{precision}/checkpoints/last.pt", "residual-ebm")
        assert all(v.dtype == torch.float32 for v in state["energy"].values() if v.is_floating_point())
    assert rows["fp32"] != rows["bf16"]
    assert max(abs(a - b) for a, b in zip(rows["fp32"], rows["bf16"])) < 0.05


def test_a_stop_during_evaluation_saves_and_the_resumed_run_evaluates_first(setup, monkeypatch):
    """SIGTERM while the validation at update 6 runs: met at the next validation chunk, saved with the evaluation
    pending; the rerun evaluates update 6 first and ends bit for bit where an uninterrupted run ends."""
    import os
    import signal
    from lmlab.core.residual.train import ResidualTrainer
    root, ckpt = setup
    sched = {"schedule": {"max_steps": 9, "warmup_steps": 2}}
    train(make_cfg(root, ckpt, "stop-whole", **sched))
    real, calls = ResidualTrainer.evaluate, [0]

    def signalled_in_second_evaluation(self):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(ResidualTrainer, "evaluate", signalled_in_second_evaluation)
    cut = train(make_cfg(root, ckpt, "stop-cut", **sched))
    assert cut["stopped_by"] == "SIGTERM" and cut["step"] == 6
    assert load_checkpoint(root / "stop-cut/checkpoints/last.pt", "residual-ebm")["eval_pending"] is True

    def valid_rows(run):
        return [json.loads(l) for l in (root / run / "metrics.jsonl").read_text().splitlines() if "valid_loss_nats" in l]

    assert [r["step"] for r in valid_rows("stop-cut")] == [3]  # the cut evaluation logged nothing
    monkeypatch.setattr(ResidualTrainer, "evaluate", real)
    resumed = train(make_cfg(root, ckpt, "stop-cut", **sched))
    assert resumed["stopped_by"] is None and resumed["step"] == 9
    assert valid_rows("stop-cut") == valid_rows("stop-whole")  # update 6 evaluated on resume, as the whole run did
    a = load_checkpoint(root / "stop-whole/checkpoints/last.pt", "residual-ebm")["energy"]
    b = load_checkpoint(root / "stop-cut/checkpoints/last.pt", "residual-ebm")["energy"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _scripted_validation(monkeypatch, losses):
    """ResidualTrainer.evaluate returns the next of `losses` (the real one needs training to move the loss)."""
    from lmlab.core.residual.train import ResidualTrainer
    script = iter(losses)
    monkeypatch.setattr(ResidualTrainer, "evaluate",
                        lambda self: {"valid_loss_nats": next(script), "valid_acc": 0.5, "valid_acc_real": 0.5,
                                      "valid_acc_lm": 0.5, "valid_acc_pairwise": 0.5, "valid_energy_real_mean": 0.0,
                                      "valid_energy_lm_mean": 0.0})


def test_patience_stops_after_evaluations_without_a_lower_loss_and_keeps_the_best(setup, monkeypatch):
    root, ckpt = setup
    _scripted_validation(monkeypatch, [1.30, 1.25, 1.26, 1.25, 1.24, 1.0])  # 1.25 again is no improvement
    every = {"schedule": {"max_steps": 6}, "energy": {"kind": "unit"}}  # evaluated after every update:
    cfg = make_cfg(root, ckpt, "run-patience", **every, valid={"patience": 2})
    cfg.run.eval_interval = 1
    out = train(cfg)
    assert out["step"] == 4 and out["stopped_by"] is None and out["best_valid_nats"] == 1.25
    assert out["early_stop"].startswith("2 evaluations without a lower validation loss") and "update 4 of 6" in out["early_stop"]
    assert load_checkpoint(root / "run-patience/checkpoints/best.pt", "residual-ebm")["step"] == 2
    # the finished run reruns as finished: the count is in the checkpoint
    _scripted_validation(monkeypatch, [])
    assert train(cfg)["step"] == 4
    # without patience the same script trains to the end
    _scripted_validation(monkeypatch, [1.30, 1.25, 1.26, 1.25, 1.24, 1.0])
    cfg = make_cfg(root, ckpt, "run-no-patience", **every)
    cfg.run.eval_interval = 1
    out = train(cfg)
    assert out["step"] == 6 and "early_stop" not in out and out["best_valid_nats"] == 1.0


def test_patience_on_a_checkpoint_from_before_it_counts_the_logged_evaluations(tmp_path):
    from lmlab.core.residual.train import ResidualTrainer
    from lmlab.core.rundir import RunDir
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 500, "valid_loss_nats": 1.3857}, {"step": 510, "train_loss_nats": 1.2},
            {"step": 1000, "valid_loss_nats": 1.3849}, {"step": 1500, "valid_loss_nats": 1.3865},
            {"step": 2000, "valid_loss_nats": 1.3922}, {"step": 2500, "valid_loss_nats": 1.30}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = ResidualTrainer.__new__(ResidualTrainer)
    trainer.run, trainer.step = RunDir(run), 2000  # the row at 2500 is after the checkpoint: not counted
    assert trainer._evals_since_best_logged() == 2
