"""Negatives are tied to their prefixes (issue #18.1): a prefix-dependent toy LM checks that every negative the
trainer uses was sampled from *its own* prefix, and a negatives file is refused when its provenance (split,
tokenizer, prefix tokens, top-k, temperature, base LM) differs from the training config."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lmlab.core.residual.train as residual_train
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError
from lmlab.core.residual.negatives import NegativeSampler, write_negatives
from lmlab.core.residual.train import ResidualTrainer, train
from lmlab.core.residual.windows import Windows
from lmlab.core.textio import sha256_file
from test_residual_train import make_cfg, setup  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread_module")


class CopyLastLM(nn.Module):
    """A prefix-dependent toy LM: the next token is the current one (prob ~1), so every continuation repeats
    the prefix's last token and a negative betrays which prefix it was sampled from."""

    context = None

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.unused = nn.Parameter(torch.zeros(1))

    def hidden(self, tokens, state=None):  # no state: the next token's logits read the current token only
        return tokens, state

    def select_state(self, state, index):
        return state

    def forward(self, tokens, targets=None, state=None):
        logits = F.one_hot(tokens, self.vocab).float() * 60.0  # (B, T, V)
        if targets is None:
            return logits, state
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"), state


@pytest.fixture()
def copy_lm(setup, monkeypatch):
    """The trainer's base LM replaced by CopyLastLM (the checkpoint file still gives the sha256)."""
    root, ckpt = setup
    data = DataDir(root / "data")
    lm = CopyLastLM(data.vocab_size)
    info = {"vocab_size": data.vocab_size, "tokenizer_sha256": data.tokenizer_sha256, "specials": data.specials}
    monkeypatch.setattr(residual_train, "load_lm", lambda path, device="cpu": (lm, data.tokenizer, info))
    return lm


def write(root, ckpt, lm, out, split="train", windows=None, **kw):
    data = DataDir(root / "data")
    windows = windows or Windows(data.split(split), 8, 6)
    args = dict(per_prefix=3, top_k=0, temperature=1.0, max_windows=40, batch_size=16, seed=5,
                base_lm_sha256=sha256_file(ckpt), data_dir=str(root / "data"), split=split,
                tokenizer_sha256=data.tokenizer_sha256)
    return write_negatives(lm, windows, out, **{**args, **kw})


def paired_fraction(trainer: ResidualTrainer, updates: int = 4) -> float:
    """Fraction of (prefix, negative) pairs of the trainer's batches whose negative copies that prefix's last token."""
    hits = total = 0
    for step in range(updates):
        trainer.step = step
        prefixes, pos, neg = trainer._batch()  # (B, P), (B, 1, C), (B, K, C)
        hits += int((neg == prefixes[:, -1, None, None]).all(dim=2).sum())
        total += neg.shape[0] * neg.shape[1]
    return hits / total


def test_negatives_are_conditioned_on_their_own_prefix(setup, copy_lm, tmp_path, monkeypatch):
    root, ckpt = setup
    on_the_fly = ResidualTrainer(make_cfg(root, ckpt, tmp_path / "a"))
    assert paired_fraction(on_the_fly) == 1.0
    neg = write(root, ckpt, copy_lm, tmp_path / "neg.npz")
    from_file = ResidualTrainer(make_cfg(root, ckpt, tmp_path / "b", negatives={"file": str(neg)}))
    assert paired_fraction(from_file) == 1.0
    # the positives of a batch are the real continuations of the same windows
    prefixes, pos, _ = from_file._batch()
    index, _ = from_file.neg_file.rows(np.random.default_rng([from_file.cfg.seed, from_file.step]).integers(0, 40, 8), "cpu")
    want_p, want_c = from_file.train_windows.get(index)
    assert torch.equal(prefixes, want_p) and torch.equal(pos[:, 0], want_c)

    # negative control: a writer whose sampler sees rolled prefixes (the bug this test guards against) is caught
    real_call = NegativeSampler.__call__
    monkeypatch.setattr(NegativeSampler, "__call__", lambda self, p: real_call(self, p.roll(1, dims=0)))
    rolled = write(root, ckpt, copy_lm, tmp_path / "rolled.npz")
    monkeypatch.setattr(NegativeSampler, "__call__", real_call)
    broken = ResidualTrainer(make_cfg(root, ckpt, tmp_path / "c", negatives={"file": str(rolled)}))
    assert paired_fraction(broken) < 0.5


def test_checkpoint_records_the_negatives_true_settings(setup, copy_lm, tmp_path):
    root, ckpt = setup
    neg = write(root, ckpt, copy_lm, tmp_path / "neg-k5.npz", top_k=5, temperature=0.7)
    with pytest.raises(LmlabError, match=r"top_k=5, temperature=0.7.*--set negatives.top_k=5"):
        ResidualTrainer(make_cfg(root, ckpt, tmp_path / "r0", negatives={"file": str(neg)}))
    cfg = make_cfg(root, ckpt, tmp_path / "r1", negatives={"file": str(neg), "top_k": 5, "temperature": 0.7},
                   schedule={"max_steps": 2})
    train(cfg)
    state = load_checkpoint(tmp_path / "r1/checkpoints/last.pt", "residual-ebm")
    rec = state["negatives"]
    assert (rec["source"], rec["split"], rec["top_k"], rec["temperature"]) == ("file", "train", 5, 0.7)
    assert rec["tokenizer_sha256"] == DataDir(root / "data").tokenizer_sha256 and len(rec["prefix_sha256"]) == 64
    assert state["config"]["negatives"]["top_k"] == 5 and state["config"]["negatives"]["temperature"] == 0.7
    train(make_cfg(root, ckpt, tmp_path / "r2", schedule={"max_steps": 1}))
    fly = load_checkpoint(tmp_path / "r2/checkpoints/last.pt", "residual-ebm")["negatives"]
    assert (fly["source"], fly["split"], fly["top_k"], fly["temperature"]) == ("on-the-fly", "train", 0, 1.0)


def _rewrite(src, dst, **fields):
    data = dict(np.load(src))
    for k, v in fields.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = np.asarray(v)
    np.savez(dst, **data)
    return dst


def test_a_file_for_other_prefixes_is_refused(setup, copy_lm, tmp_path):
    root, ckpt = setup
    good = write(root, ckpt, copy_lm, tmp_path / "neg.npz")
    valid = write(root, ckpt, copy_lm, tmp_path / "valid.npz", split="valid", max_windows=10)

    def refused(path, pattern, **cfg_extra):
        with pytest.raises(LmlabError, match=pattern) as exc:
            ResidualTrainer(make_cfg(root, ckpt, tmp_path / "r", **{"negatives": {"file": str(path)}, **cfg_extra}))
        assert "\n" not in str(exc.value)

    refused(valid, r"'valid' split .*\(data.train_split\).*--split train")
    refused(_rewrite(good, tmp_path / "tok.npz", tokenizer_sha256="0" * 64), "another tokenizer")
    refused(_rewrite(good, tmp_path / "lm.npz", base_lm_sha256="0" * 64), "another base LM")
    refused(_rewrite(good, tmp_path / "old.npz", format=None), "no provenance")
    refused(good, r"windows of 8\+6 tokens, the config asks for 9\+6", window={"prefix_len": 9})
    refused(good, r"3 negatives per prefix, negatives.per_prefix=4", negatives={"file": str(good), "per_prefix": 4})
    # same sizes, same tokenizer, other text in the split: only the prefix hash can tell
    other = tmp_path / "data-other"
    shutil.copytree(root / "data", other)
    d = DataDir(other)
    stream = np.memmap(other / d.meta["splits"]["train"]["file"], dtype=d.dtype, mode="r+")
    stream[:] = np.roll(np.asarray(stream), 3)
    stream.flush()
    del stream
    refused(good, "other prefixes", data={"dir": str(other)})
    # a rolled prefix_index (rows attributed to the wrong windows) is refused the same way
    refused(_rewrite(good, tmp_path / "idx.npz", prefix_index=np.roll(np.load(good)["prefix_index"], 1)), "other prefixes")
