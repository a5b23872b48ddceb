"""Interpolated modified KN bigram: hand-computed values, normalisation, storage, an independent reference on PTB."""

import os
from fractions import Fraction as Fr
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.core.imm.kn_bigram import KNBigram, bigram_counts, modified_kn_discounts

from conftest import load_bench, needs_shared

# a b a b a b c a c b (ids a=0 b=1 c=2; d=3 is in the vocabulary but never seen)
# bigrams: ab x3, ba x2, bc, ca, ac, cb -> n1=4, n2=1, n3=1, n4=0
TEN = np.array([0, 1, 0, 1, 0, 1, 2, 0, 2, 1])


def test_discounts_by_hand():
    _, _, counts = bigram_counts(TEN, 4)
    # Y = 4/(4+2) = 2/3; D1 = 1 - 2Y(1/4) = 2/3; D2 = 2 - 3Y(1/1) = 0; D3+ = 3 - 4Y(0/1) = 3
    np.testing.assert_allclose(modified_kn_discounts(counts), [2 / 3, 0.0, 3.0], atol=1e-12)


def test_ten_token_corpus_by_hand():
    kn = KNBigram.from_tokens(TEN, 4)
    # p_cont: a, b, c each follow 2 distinct words; d never continues anything and counts as 1: total 7
    np.testing.assert_allclose(kn.p_cont, [2 / 7, 2 / 7, 2 / 7, 1 / 7], atol=1e-12)
    # c(a)=4: gamma(a) = (D3+ + D1)/4 = 11/12; P(b|a) = 0/4 + 11/12 2/7; P(c|a) = (1-2/3)/4 + 11/12 2/7
    # c(b)=3: gamma(b) = (D2 + D1)/3 = 2/9;   P(a|b) = 2/3 + 2/9 2/7;  P(c|b) = 1/9 + 2/9 2/7
    # c(c)=2: gamma(c) = 2 D1/2 = 2/3;        P(a|c) = P(b|c) = 1/6 + 2/3 2/7
    # d unseen as a history: p_cont
    expected = [[Fr(22, 84), Fr(22, 84), Fr(29, 84), Fr(11, 84)],
                [Fr(46, 63), Fr(4, 63), Fr(11, 63), Fr(2, 63)],
                [Fr(15, 42), Fr(15, 42), Fr(8, 42), Fr(4, 42)],
                [Fr(2, 7), Fr(2, 7), Fr(2, 7), Fr(1, 7)]]
    expected = np.array(expected, dtype=np.float64)
    for v in range(4):
        np.testing.assert_allclose(kn.row(v), expected[v], atol=1e-12)
    dense = kn.probs(torch.arange(4), dtype=torch.float64).numpy()
    np.testing.assert_allclose(dense, expected, atol=1e-12)
    np.testing.assert_allclose(kn.gamma, [11 / 12, 2 / 9, 2 / 3, 1.0], atol=1e-12)
    # log_prob_stream scores the 9 transitions of the corpus itself
    lp = kn.log_prob_stream(TEN)
    np.testing.assert_allclose(lp, np.log(expected[TEN[:-1], TEN[1:]]), atol=1e-12)


def test_rows_sum_to_one_for_every_context():
    rng = np.random.default_rng(0)
    V = 60  # ids 50..59 never occur: unseen histories
    tokens = np.minimum(rng.zipf(1.3, size=5000) - 1, 49)
    kn = KNBigram.from_tokens(tokens, V)
    assert (kn.discounts > 0).all()
    dense = kn.probs(torch.arange(V), dtype=torch.float64)
    torch.testing.assert_close(dense.sum(-1), torch.ones(V, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (dense >= 0).all()
    ref = np.stack([kn.row(v) for v in range(V)])
    np.testing.assert_allclose(dense.numpy(), ref, atol=1e-14)
    # batched contexts of any shape, float32
    ctx = torch.tensor([[3, 55], [0, 0]])
    out = kn.probs(ctx)
    assert out.shape == (2, 2, V) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 1], dense[55].float())


def test_discount_fallback_when_not_estimable():
    # counts {ab: 2, ba: 1}: n3 = 0 -> single absolute discount Y = n1/(n1 + 2 n2) = 1/3
    _, _, counts = bigram_counts(np.array([0, 1, 0, 1]), 2)
    np.testing.assert_allclose(modified_kn_discounts(counts), [1 / 3] * 3)


def test_save_load_roundtrip_is_sparse(tmp_path: Path):
    rng = np.random.default_rng(1)
    V = 2000
    tokens = rng.integers(0, V, size=3000)
    kn = KNBigram.from_tokens(tokens, V, start=0)
    path = kn.save(tmp_path / "kn.safetensors")
    assert path.stat().st_size < 0.01 * V * V * 4  # a dense fp32 table would be 16 MB
    back = KNBigram.load(path)
    np.testing.assert_array_equal(back.counts, kn.counts)
    np.testing.assert_allclose(back.row(5), kn.row(5))
    assert back.vocab_size == V


def test_ptb_subset_matches_slow_reference():
    ptb = needs_shared("ptb")

    def words(split, n):
        return (ptb / f"ptb.{split}.txt").read_text().replace("\n", " <eos> ").split()[:n]

    train, valid = words("train", 100_000), words("valid", 10_000)
    vocab = {w: i for i, w in enumerate(sorted(set(train)))}
    kept = [w for w in valid if w in vocab]  # both models are over the train vocabulary
    kn = KNBigram.from_tokens(np.array([vocab[w] for w in train]), len(vocab), start=vocab["<eos>"])
    ours = kn.perplexity(np.array([vocab[w] for w in kept]))
    assert 150 < ours < 400
    # bench/imm_kn_ptb.py's reference: Chen & Goodman's formulas over Python dicts, no code shared with the library
    reference, _ = load_bench("imm_kn_ptb").reference_ppl(train, [kept], set(vocab))
    assert ours == pytest.approx(reference[0], rel=1e-9)


def _no_bigram(directory, names):
    """copytree filter: the session's tiny data dir may already hold a bigram another test built there."""
    return [n for n in names if n.endswith(".safetensors")]


def _refuse_writes_in(monkeypatch, *dirs: Path):
    """Writes into `dirs` fail as on a read-only data dir (EACCES), even for root, who bypasses chmod."""
    import errno

    from lmlab.core import checkpoint
    real = checkpoint.atomic_write_bytes

    def refusing(path, data):
        if any(Path(path).resolve().is_relative_to(d.resolve()) for d in dirs):
            raise checkpoint.LmlabError(f"cannot write {path}: Permission denied") from PermissionError(
                errno.EACCES, "Permission denied", str(path))
        return real(path, data)
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", refusing)


def test_a_read_only_data_dir_gets_the_bigram_from_the_user_cache_or_memory(tmp_path, tiny_data, monkeypatch):
    """IMM and `eval-ppl --ngram kn-bigram` on shared, read-only data: the bigram goes to $XDG_CACHE_HOME/lmlab keyed
    by the train split's hash, or (cache not writable either) stays in memory; one log line says which; same numbers."""
    import shutil

    from lmlab.core.data import DataDir
    from lmlab.core.imm.kn_bigram import FILENAME, cache_path, load_or_build
    writable, shared, cache = tmp_path / "writable", tmp_path / "shared", tmp_path / "cache"
    shutil.copytree(tiny_data, writable, ignore=_no_bigram)
    shutil.copytree(tiny_data, shared, ignore=_no_bigram)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    valid = np.asarray(DataDir(tiny_data).split("valid"))
    expected = load_or_build(writable).log_prob_stream(valid)
    assert (writable / FILENAME).is_file()

    _refuse_writes_in(monkeypatch, shared)
    lines: list[str] = []
    got = load_or_build(shared, log=lines.append).log_prob_stream(valid)
    np.testing.assert_array_equal(got, expected)
    cached = cache_path(shared)
    assert cached.parent == cache / "lmlab" / "kn-bigram" and cached.is_file() and not (shared / FILENAME).exists()
    assert lines == [f"KN bigram: data dir {shared} is not writable; built it into {cached}"]
    assert cache_path(writable) == cached  # keyed by the data, not by where it lies
    lines.clear()
    np.testing.assert_array_equal(load_or_build(shared, log=lines.append).log_prob_stream(valid), expected)
    assert lines == [f"KN bigram: data dir {shared} is not writable; using the cached {cached}"]

    cached.unlink()
    _refuse_writes_in(monkeypatch, shared, cache)
    lines.clear()
    np.testing.assert_array_equal(load_or_build(shared, log=lines.append).log_prob_stream(valid), expected)
    assert lines == [f"KN bigram: neither data dir {shared} nor {cached.parent} is writable; built it in memory (not saved)"]
    assert not cached.exists() and not (shared / FILENAME).exists()


def test_eval_ppl_kn_bigram_on_a_read_only_data_dir(tmp_path, tiny_data, monkeypatch):
    import json
    import shutil

    from conftest import invoke
    shared = tmp_path / "shared"
    shutil.copytree(tiny_data, shared, ignore=_no_bigram)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _refuse_writes_in(monkeypatch, shared)
    res = invoke("eval-ppl", "--ngram", "kn-bigram", "--data", str(shared), "--split", "valid")
    assert res.exit_code == 0, res.output
    assert "is not writable; built it into" in res.output
    assert json.loads(res.output.strip().splitlines()[-1])["ppl"] > 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into a 0555 dir anyway")
def test_a_chmod_read_only_data_dir_really(tmp_path, tiny_data, monkeypatch):
    import shutil

    from lmlab.core.imm.kn_bigram import cache_path, load_or_build
    shared = tmp_path / "shared"
    shutil.copytree(tiny_data, shared, ignore=_no_bigram)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shared.chmod(0o555)
    try:
        lines: list[str] = []
        load_or_build(shared, log=lines.append)
        assert cache_path(shared).is_file() and "not writable" in lines[0]
    finally:
        shared.chmod(0o755)
