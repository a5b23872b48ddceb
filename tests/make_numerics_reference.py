"""Short seeded runs of every trainer, and the writer of their reference numbers (issue #13, "numerics unchanged").

Each case is a tiny CPU fp32 run of a few updates on data this file makes itself; it returns the per-update
training losses (and a few other per-update numbers), the validation losses, a sha256 of the data files and
a digest of every final parameter tensor. tests/test_numerics_reference.py reruns the cases on the current
code and demands the numbers equal tests/data/numerics_reference.json bit for bit.

The cases use only config keys and functions that exist both at the commit the references came from and
now, so this one file produces comparable numbers from either. To record references from an older commit:

    mkdir -p /tmp/ref && git archive REV | tar -x -C /tmp/ref && mkdir -p /tmp/refroot/lmlab \\
      && cp /tmp/ref/lmlab/*.py /tmp/refroot/lmlab/ && for d in cli core presets; do ln -s /tmp/ref/$d /tmp/refroot/lmlab/$d; done
    PYTHONPATH=/tmp/refroot python3 tests/make_numerics_reference.py --commit REV

The script checks that the lmlab it imported is the one under PYTHONPATH and that its core/ sources are
byte-identical to REV's (`git show REV:core/...`) before it writes anything.

Bitwise equality holds only on one torch build and CPU kernel set, so tests/data/ keeps one file per build
(numerics_reference*.json; the test uses the one whose `environment` is this machine's and skips without one).
For a new build, record every case from the commit the existing file names for it (`case_commits`, else
`commit`) with --case and --out, and merge them into numerics_reference-torch-VERSION[-CAPABILITY].json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "numerics_reference.json"


# data (copies of the test fixtures' generators, frozen here so the references do not move with them) ----------
WORDS = ("the cat dog sat on a mat and ran to house with big small red blue green tree under over "
         "quick brown fox jumps lazy river stone bird sings morning night").split()


def make_corpus(path: Path, lines: int, seed: int) -> Path:
    """tests/conftest.py make_corpus: English-like lines with a strong bigram regularity."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(4, 12)
        w = rng.choice(WORDS)
        sent = [w]
        for _ in range(n - 1):
            w = WORDS[(WORDS.index(w) + 1) % len(WORDS)] if rng.random() < 0.7 else rng.choice(WORDS)
            sent.append(w)
        out.append(" ".join(sent))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


WORDS_DE = ["ein", "mann", "hund", "läuft", "im", "park", "zwei", "frauen", "sitzen", "auf", "der", "bank", "kind", "spielt", "ball"]
WORDS_EN = ["a", "man", "dog", "runs", "in", "park", "two", "women", "sit", "on", "the", "bench", "child", "plays", "ball"]


def write_parallel(root: Path, n_train: int, n_valid: int, seed: int = 0) -> dict[str, str]:
    """tests/seq2seq_fixtures.py write_corpus: word-for-word de -> en pairs."""
    rng = random.Random(seed)
    prefixes = {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        de, en = [], []
        for _ in range(n):
            idx = [rng.randrange(len(WORDS_DE)) for _ in range(rng.randint(2, 7))]
            de.append(" ".join(WORDS_DE[i] for i in idx).capitalize() + ".")
            en.append(" ".join(WORDS_EN[i] for i in idx).capitalize() + ".")
        (root / f"{split}.de").write_text("\n".join(de) + "\n", encoding="utf-8")
        (root / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        prefixes[split] = str(root / split)
    return prefixes


def lm_data(root: Path) -> Path:
    """tests/conftest.py tiny_data: 600/60/60 lines, word-level prep."""
    from lmlab.core.prep import prep
    from lmlab.core.textio import TextSource
    text = {"train": make_corpus(root / "train.txt", 600, 1), "valid": make_corpus(root / "valid.txt", 60, 2),
            "test": make_corpus(root / "test.txt", 60, 3)}
    prep(root / "data", {k: [TextSource(str(v))] for k, v in text.items()})
    return root / "data"


def data_digest(data_dir: Path) -> dict[str, str]:
    """sha256 of the files a run reads (token arrays, tokenizers); meta.json holds paths and times, so not it. A
    .safetensors file (the KN bigram) by its tensors: its header's metadata order varies from one write to the next."""
    return {p.name: _safetensors_digest(p) if p.suffix == ".safetensors" else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.iterdir()) if p.is_file() and p.name != "meta.json"}


def _safetensors_digest(path: Path) -> str:
    from safetensors.torch import load_file
    h = hashlib.sha256()
    for name, tensor in sorted(load_file(path).items()):
        h.update(name.encode() + str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode() + tensor.numpy().tobytes())
    return h.hexdigest()


# results ---------------------------------------------------------------------------------------------------
def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}:" + hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def param_digests(state: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for k in sorted(state):
        v = state[k]
        if isinstance(v, torch.Tensor):
            out[prefix + k] = tensor_digest(v)
    return out


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def series(rows: list[dict[str, Any]], keys: tuple[str, ...], where: str) -> dict[str, list[float]]:
    """{key: [value of each row holding `where`, in order]} (train rows hold the per-update numbers)."""
    picked = [r for r in rows if where in r]
    out = {k: [r[k] for r in picked if k in r] for k in keys}
    return {k: v for k, v in out.items() if v}


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


# cases -----------------------------------------------------------------------------------------------------
# the IMM CPU tier's recipe (ptb-lstm-small-imm) at toy size: Algorithm 1 from the carried state on every 2nd batch, the
# official single-sample term (its own forward) on the others, clip = main, the official embedding gradient, SGD on sum_time
IMM = {"objective": "imm", "imm": {"weight": 0.2, "k": 3, "j": 2, "every": 2, "start_below_ppl": 0.0, "algorithm": "sampled",
                                   "between": "smoothed", "sampled_start": "carried", "clip": "main",
                                   "embedding_grad": "official", "smoothed_forward": "separate"},
       "optim": {"name": "sgd", "lr": 0.05, "clip": 5.0, "loss_reduction": "sum_time"}}


def _lm_case(model: dict[str, Any], extra: dict[str, Any] | None = None) -> Callable[[Path], dict[str, Any]]:
    def run(root: Path) -> dict[str, Any]:
        from lmlab.core.config import merge
        from lmlab.core.reporting import NullReporter
        from lmlab.core.train.config import TrainConfig
        from lmlab.core.train.lm_trainer import train_lm
        data = lm_data(root)
        base = {"data": {"dir": str(data), "batch_size": 8, "bptt": 16, "eval_batch_size": 2},
                "model": {"kind": "lstm", "d_model": 16, "n_layers": 1, "lstm": {"hidden_size": 16, "dropout": 0.1}},
                "optim": {"name": "adamw", "lr": 0.02, "clip": 1.0},
                "schedule": {"name": "constant", "epochs": 0, "max_steps": 10},
                "run": {"dir": str(root / "run"), "eval_interval": 4, "keep": 1, "log_interval_s": 1000.0},
                "hardware": {"device": "cpu", "threads": 1}, "seed": 7}
        cfg = merge(merge(merge(TrainConfig(), base), {"model": model}), extra or {})
        if cfg.objective == "imm":  # its restricted model: the KN bigram of the training split
            from lmlab.core.imm.kn_bigram import build_from_data_dir
            build_from_data_dir(data)
        train_lm(cfg, NullReporter())
        rows = metrics_rows(root / "run")
        return {"data": data_digest(data),
                "train": series(rows, ("train_loss_nats", "grad_norm", "lr"), "train_loss_nats"),
                "valid": series(rows, ("step", "valid_loss_nats"), "valid_loss_nats"),
                "params": param_digests(last_checkpoint(root / "run")["model"])}
    return run


class _Recorder:
    """A quiet reporter that keeps every update's metrics (the translation trainer logs only at evaluations)."""

    def __init__(self):
        from lmlab.core.reporting import NullReporter
        self.inner, self.rows = NullReporter(), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def update(self, done, metrics=None):
        self.rows.append({"step": done, **(metrics or {})})


def translation(root: Path) -> dict[str, Any]:
    """tests/test_seq2seq_train.py config(): pre-LN Transformer, dropout 0.2, warmup 2, 8 updates."""
    from lmlab.core.config import merge
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.prep import prep_parallel
    from lmlab.core.seq2seq.train import train
    prep_parallel(root / "data", src_lang="de", tgt_lang="en", splits=write_parallel(root, 120, 10), vocab_size=200)
    cfg = merge(Config(), {"data": {"dir": str(root / "data"), "max_tokens": 200},
                           "model": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "n_heads": 2, "ffn_dim": 32,
                                     "dropout": 0.2, "normalize_before": True},
                           "schedule": {"max_steps": 8, "warmup_steps": 2}, "optim": {"lr": 3e-3},
                           "run": {"dir": str(root / "run"), "eval_interval": 4}, "hardware": {"device": "cpu"}, "seed": 7})
    rec = _Recorder()
    train(cfg, rec)
    rows = metrics_rows(root / "run")
    return {"data": data_digest(root / "data"),
            "train": series(rec.rows, ("train_loss_nats", "train_nll_nats", "lr"), "train_loss_nats"),
            "valid": series(rows, ("step", "valid_nll_nats"), "valid_nll_nats"),
            "params": param_digests(last_checkpoint(root / "run")["model"])}


RES_WORDS = "the cat sat on a mat and dog ran to big red house".split()


def _residual_case(energy: dict[str, Any], extra: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
    """tests/test_residual_train.py setup/make_cfg: a seeded 1-layer Transformer base LM, BiT/UniT energy, NCE."""
    def run(root: Path) -> dict[str, Any]:
        from lmlab.core.checkpoint import save_checkpoint
        from lmlab.core.config import resolve, to_dict
        from lmlab.core.data import DataDir
        from lmlab.core.models.builders import build_language_model
        from lmlab.core.models.config import ModelConfig
        from lmlab.core.prep import prep
        from lmlab.core.residual.config import Config
        from lmlab.core.residual.train import train
        from lmlab.core.textio import TextSource
        rng = np.random.default_rng(0)
        for split, n in [("train", 400), ("valid", 60), ("test", 60)]:
            lines = [" ".join(rng.choice(RES_WORDS, rng.integers(3, 9))) for _ in range(n)]
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        prep(root / "data", {s: [TextSource(str(root / f"{s}.txt"))] for s in ("train", "valid", "test")})
        data = DataDir(root / "data")
        mcfg = ModelConfig(kind="transformer", d_model=16, n_layers=1)
        mcfg.transformer.n_heads, mcfg.transformer.context = 2, 32
        torch.manual_seed(0)
        lm = build_language_model(mcfg, data.vocab_size)
        save_checkpoint(root / "lm.pt", {"model": lm.state_dict(), "config": {"model": to_dict(mcfg)},
                                         "vocab_size": data.vocab_size, "specials": data.specials,
                                         "tokenizer_json": data.tokenizer_json,
                                         "tokenizer_sha256": data.tokenizer_sha256}, "lm")
        sets = {"base_lm": str(root / "lm.pt"), "data": {"dir": str(root / "data"), "batch_size": 8},
                "window": {"prefix_len": 8, "continuation_len": 6},
                "energy": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.1, **energy},
                "negatives": {"per_prefix": 3}, "optim": {"lr": 1e-3},
                "schedule": {"max_steps": 8, "warmup_steps": 2},
                "valid": {"max_examples": 16}, "run": {"dir": str(root / "run"), "eval_interval": 4},
                "hardware": {"device": "cpu"}, **extra}
        train(resolve(Config, "train-ebm", [], sets))
        rows = metrics_rows(root / "run")
        return {"data": data_digest(root / "data"),
                "base_lm": param_digests(lm.state_dict()),
                "train": series(rows, ("train_loss_nats", "train_acc"), "train_loss_nats"),
                "valid": series(rows, ("step", "valid_loss_nats", "valid_acc"), "valid_loss_nats"),
                "params": param_digests(last_checkpoint(root / "run")["energy"])}
    return run


def _gebm_case(sets: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
    def run(root: Path) -> dict[str, Any]:
        from lmlab.core.config import merge
        from lmlab.core.gebm.train import Config, train
        from lmlab.core.reporting import NullReporter
        cfg = merge(merge(Config(), sets), {"run": {"dir": str(root / "run"), "log_every": 1},
                                            "hardware": {"device": "cpu"}})
        train(cfg, NullReporter())
        rows = metrics_rows(root / "run")
        st = last_checkpoint(root / "run")
        return {"train": series(rows, ("base_loss_nats", "energy_loss_nats", "grad_penalty", "log_partition_A"),
                                "base_loss_nats"),
                "valid": series(rows, ("step", "valid_nll_gebm_nats", "valid_nll_base_nats", "log_z_is"),
                                "valid_nll_base_nats"),
                "params": {**param_digests(st["base"], "base."), **param_digests(st["energy"], "energy."),
                           "log_partition": tensor_digest(st["log_partition"])}}
    return run


GEBM_IMAGE = {"data": {"kind": "image", "dataset": "synthetic-images", "subset": 32, "batch_size": 4},
              "model": {"width": 2, "latent_dim": 4},
              "optim": {"energy_steps": 1, "energy_steps_init": 2, "init_log_partition_batches": 1},
              "schedule": {"max_steps": 4}, "run": {"eval_interval": 2}}
# tests/test_gebm_train.py tiny_density_cfg: the official UCI recipe in miniature (combined flow energy, latent
# batch x2, gradient_l2, grad transform, lr milestones crossed at updates 3 and 9), evaluated mid-run
GEBM_DENSITY = {"data": {"kind": "density", "dataset": "synthetic-density", "batch_size": 16},
                "model": {"energy": "flow-combined", "flow_transforms": 2, "flow_hidden": 8},
                "optim": {"energy_steps": 1, "energy_steps_init": 3, "noise_factor": 2,
                          "penalty": 0.1, "penalty_type": "gradient_l2", "grad_transform": True, "lr_milestones": "3,9",
                          "init_log_partition_batches": 1},
                "schedule": {"max_steps": 6}, "eval": {"is_samples": 200}, "run": {"eval_interval": 3}}
GEBM_DENSITY_MLE = {**GEBM_DENSITY, "optim": {"objective": "mle"}, "schedule": {"max_steps": 5}}

# Not a case: the residual BiT's MLM phase (mlm.steps > 0), which 0a7a632 redesigned on purpose (resumable: each
# update's windows and masks drawn from (seed, 7, update); AdamW betas 0.9/0.98, eps 1e-6; linear decay to 0), so
# no 706dfd7 reference applies to it.
DEFINE = {"kind": "define", "define": {"map_dim": 8, "expand_dim": 16, "layers": 3, "max_groups": 2, "dropout": 0.1}}

CASES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "lm-lstm": _lm_case({}),
    "lm-transformer": _lm_case({"kind": "transformer", "transformer": {"n_heads": 2, "context": 16}}),
    "lm-lstm-define": _lm_case({"embedding": DEFINE}),
    "lm-lstm-imm": _lm_case({"output": {"tie": False}}, IMM),
    "translation": translation,
    "residual-bit": _residual_case({"kind": "bit"}, {}),
    "residual-unit": _residual_case({"kind": "unit"}, {}),
    "gebm-image": _gebm_case(GEBM_IMAGE),
    "gebm-density": _gebm_case(GEBM_DENSITY),
    "gebm-density-mle": _gebm_case(GEBM_DENSITY_MLE),
}


def run_case(name: str) -> dict[str, Any]:
    """One case in a fresh temp dir, one intra-op thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix=f"numerics-{name}-") as tmp:
            return CASES[name](Path(tmp))
    finally:
        torch.set_num_threads(threads)


def environment() -> dict[str, str]:
    """What bitwise equality depends on besides the code: torch build and the CPU kernels it dispatches to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine()}


# provenance ------------------------------------------------------------------------------------------------
def _check_sources(commit: str) -> str:
    """The imported lmlab's core/ must be `commit`'s, file for file; returns the full commit hash."""
    import lmlab
    import lmlab.core
    full = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{commit}^{{commit}}"],
                          capture_output=True, text=True, check=True).stdout.strip()
    core = Path(lmlab.core.__path__[0])
    listed = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", full, "core/"],
                            capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for rel in listed:
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"{full}:{rel}"], capture_output=True, check=True).stdout
        here = core / Path(rel).relative_to("core")
        if not here.exists() or here.read_bytes() != blob:
            bad.append(rel)
    extra = sorted(str(p.relative_to(core.parent)) for p in core.rglob("*.py")
                   if str(Path("core") / p.relative_to(core)) not in set(listed))
    if bad or extra:
        raise SystemExit(f"lmlab.core imported from {core} is not {full}'s core/: differs {bad}, not in it {extra}")
    print(f"lmlab {lmlab.__file__}, core {core}: identical to {full}", file=sys.stderr)
    return full


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commit", required=True, help="the commit whose code is on PYTHONPATH (checked)")
    ap.add_argument("--out", default=str(REFERENCE))
    ap.add_argument("--case", action="append", help="only these cases (default: all)")
    args = ap.parse_args(argv)
    commit = _check_sources(args.commit)
    names = args.case or list(CASES)
    out = {"about": "per-update losses and final-parameter digests of tests/make_numerics_reference.py's cases, "
                    "recorded from the code at `commit`; tests/test_numerics_reference.py demands equality",
           "commit": commit, "environment": environment(), "cases": {}}
    for name in names:
        print(f"case {name} ...", file=sys.stderr, flush=True)
        out["cases"][name] = run_case(name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
