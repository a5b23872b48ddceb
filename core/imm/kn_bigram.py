"""Interpolated modified Kneser-Ney bigram: the restricted model P̂(y | x̄) of Induced Model Matching.

Muneeb & Ohannessian (NeurIPS 2024) match the LM's induced bigram against this model; the
estimator is Chen & Goodman (1998), interpolated modified KN at the bigram order:

    P̂(w | v) = max(c(v,w) - D(c(v,w)), 0) / c(v)  +  γ(v) · p_cont(w)
    γ(v)     = (D1·N1(v•) + D2·N2(v•) + D3+·N3+(v•)) / c(v)
    p_cont(w) = N1+(•w) / N1+(••)
    Y = n1/(n1+2 n2),  D1 = 1-2Y n2/n1,  D2 = 2-3Y n3/n2,  D3+ = 3-4Y n4/n3

with n_r the number of bigram types seen r times. A vocabulary word never seen as a continuation
(N1+(•w) = 0: `<unk>` when the training text has none, a word that only opens the stream) is counted
as continuing one history, so that no word gets probability 0; where every word has been seen as a
continuation (PTB) p_cont is exactly the formula above. A history v never seen (c(v) = 0: a word met only
as the last token of the stream, or never) has no discounted mass, so P̂(· | v) = p_cont (γ = 1).
Discounts that cannot be estimated (n1, n2 or n3 is 0, e.g. on a tiny corpus) all fall back to
Ney's single absolute discount Y (0.5 when n1 = n2 = 0); every discount is clipped to [0, r].

The counts are built from the training stream as one sequence (bigrams cross the end-of-line
token, as the official IMM code does) and stored sparse in `<data dir>/kn_bigram.safetensors` (a read-only
data dir: in the user's cache, see `load_or_build`):
CSR rows of the nonzero bigram counts plus the discounts; the dense V×V table only ever exists for
the rows a batch asks for.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from lmlab.core.errors import LmlabError

FILENAME = "kn_bigram.safetensors"
FORMAT_VERSION = 1


def bigram_counts(tokens: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse counts of adjacent pairs, sorted by (v, w): (v int64, w int64, count int64)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size < 2:
        raise LmlabError("KN bigram: the training split needs at least two tokens")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise LmlabError(f"KN bigram: token ids outside [0, {vocab_size}); is vocab_size right?")
    keys = tokens[:-1] * vocab_size + tokens[1:]
    uniq, counts = np.unique(keys, return_counts=True)  # sorted, so rows come out in CSR order
    return uniq // vocab_size, uniq % vocab_size, counts.astype(np.int64)


def modified_kn_discounts(counts: np.ndarray) -> np.ndarray:
    """(D1, D2, D3+) from the count-of-counts n1..n4 (Chen & Goodman 1998, eq. 26)."""
    n = [int((counts == r).sum()) for r in (1, 2, 3, 4)]
    n1, n2, n3, n4 = n
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
    if n1 > 0 and n2 > 0 and n3 > 0:
        d = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
    else:  # not estimable: Ney et al. (1994) absolute discounting
        d = [y, y, y]
    return np.array([min(max(v, 0.0), r) for r, v in zip((1, 2, 3), d)], dtype=np.float64)


class KNBigram:
    """The bigram as sparse arrays; `probs(contexts)` gives dense rows P̂(· | v) on any device."""

    def __init__(self, vocab_size: int, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray,
                 discounts: np.ndarray):
        self.vocab_size = V = int(vocab_size)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.discounts = np.asarray(discounts, dtype=np.float64)
        D = np.concatenate([[0.0], self.discounts])[np.minimum(self.counts, 3)]  # D(c) per bigram type
        self.context_count = np.bincount(self.rows, weights=self.counts, minlength=V)  # c(v)
        safe_c = np.maximum(self.context_count, 1)
        self.gamma = np.bincount(self.rows, weights=D, minlength=V) / safe_c  # γ(v)
        self.gamma[self.context_count == 0] = 1.0  # unseen history: all mass to p_cont
        cont = np.bincount(self.cols, minlength=V).astype(np.float64)  # N1+(•w)
        cont[cont == 0] = 1.0  # a word never seen as a continuation counts as seen after one history
        self.p_cont = cont / cont.sum()
        self.discounted = np.maximum(self.counts - D, 0.0) / safe_c[self.rows]  # first term, per type
        self.indptr = np.zeros(V + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.rows, minlength=V), out=self.indptr[1:])
        self._cache: dict = {}

    # -- construction and storage -------------------------------------------------------------

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, vocab_size: int, start: int | None = None) -> "KNBigram":
        """Count `tokens`; `start` (the end-of-line id) is put before the stream so that its first word
        has a history like every other line's first word (PTB's first word "aer" occurs only there,
        and without this it would get p_cont = 0 and an infinite validation perplexity)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if start is not None:
            tokens = np.concatenate([[start], tokens])
        rows, cols, counts = bigram_counts(tokens, vocab_size)
        return cls(vocab_size, rows, cols, counts, modified_kn_discounts(counts))

    def save(self, path: str | Path) -> Path:
        from lmlab.core.checkpoint import atomic_write_bytes
        from safetensors.numpy import save

        path = Path(path)
        tensors = {"rows": self.rows.astype(np.int32), "cols": self.cols.astype(np.int32),
                   "counts": self.counts.astype(np.int32), "discounts": self.discounts}
        meta = {"format": "lmlab-kn-bigram", "version": str(FORMAT_VERSION), "vocab_size": str(self.vocab_size)}
        atomic_write_bytes(path, save(tensors, metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "KNBigram":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise LmlabError(f"KN bigram file {path} does not exist; build it with "
                             f"`python -m lmlab.core.imm.kn_bigram <data dir>`")
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "lmlab-kn-bigram":
            raise LmlabError(f"{path} is not a KN bigram file (rebuild it with `python -m lmlab.core.imm.kn_bigram`)")
        t = load_file(str(path))
        return cls(int(meta["vocab_size"]), t["rows"], t["cols"], t["counts"], t["discounts"])

    # -- probabilities --------------------------------------------------------------------------

    def row(self, v: int) -> np.ndarray:
        """P̂(· | v) as a float64 numpy vector (reference path, used by tests and `perplexity`)."""
        out = self.gamma[v] * self.p_cont
        lo, hi = self.indptr[v], self.indptr[v + 1]
        out[self.cols[lo:hi]] += self.discounted[lo:hi]
        return out

    def _device_arrays(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = {
                "indptr": torch.from_numpy(self.indptr).to(device),
                "cols": torch.from_numpy(self.cols).to(device),
                "disc": torch.from_numpy(self.discounted).to(device, dtype),
                "gamma": torch.from_numpy(self.gamma).to(device, dtype),
                "p_cont": torch.from_numpy(self.p_cont).to(device, dtype),
            }
        return self._cache[key]

    def probs(self, contexts: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dense P̂(· | v) for a batch of contexts: Long (N,) -> (N, V) on the contexts' device."""
        a = self._device_arrays(contexts.device, dtype)
        ctx = contexts.reshape(-1).long()
        out = a["gamma"][ctx, None] * a["p_cont"][None, :]  # (N, V) backoff term
        starts, lens = a["indptr"][ctx], a["indptr"][ctx + 1] - a["indptr"][ctx]
        total = int(lens.sum())
        if total:
            which = torch.repeat_interleave(torch.arange(ctx.numel(), device=ctx.device), lens)  # (total,)
            first = torch.repeat_interleave(starts - (torch.cumsum(lens, 0) - lens), lens)
            idx = first + torch.arange(total, device=ctx.device)  # positions in the CSR arrays
            out[which, a["cols"][idx]] += a["disc"][idx]
        return out.reshape(*contexts.shape, self.vocab_size)

    def gamma_of(self, contexts: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._device_arrays(contexts.device, dtype)["gamma"][contexts.long()]

    def p_cont_tensor(self, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._device_arrays(device, dtype)["p_cont"]

    def log_prob_stream(self, tokens: np.ndarray) -> np.ndarray:
        """log P̂(w_t | w_{t-1}) for t = 1..n-1 of a token stream (float64)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        v, w = tokens[:-1], tokens[1:]
        p = self.gamma[v] * self.p_cont[w]
        # add the discounted term where the pair is a seen bigram: binary search in each CSR row
        key = v * self.vocab_size + w
        seen_keys = self.rows * self.vocab_size + self.cols  # sorted
        pos = np.searchsorted(seen_keys, key)
        hit = (pos < seen_keys.size) & (seen_keys[np.minimum(pos, seen_keys.size - 1)] == key)
        p[hit] += self.discounted[pos[hit]]
        with np.errstate(divide="ignore"):
            return np.log(p)

    def perplexity(self, tokens: np.ndarray) -> float:
        """exp of the mean NLL over the stream's predicted tokens (the first token is context only)."""
        return float(math.exp(-self.log_prob_stream(tokens).mean()))


def bigram_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / FILENAME


def build_from_data_dir(data_dir: str | Path, out: str | Path | None = None) -> Path:
    """Count the train split of a `prep` data dir and write `<data dir>/kn_bigram.safetensors`."""
    return _count(data_dir).save(out or bigram_path(data_dir))


def load_or_build(data_dir: str | Path, path: str | Path | None = None, log=None) -> KNBigram:
    """The bigram at `path` (default `<data dir>/kn_bigram.safetensors`), built there first if missing.

    A data dir that cannot be written (read-only or shared storage) is not an error: the default file is then
    cached under `$XDG_CACHE_HOME/lmlab/kn-bigram/` (default ~/.cache), keyed by the hash of the train split,
    or, where that cannot be written either, the bigram is built in memory; `log` (stderr by default) says which
    in one line. An explicit `path` is written there or the error says why."""
    if path:
        path = Path(path)
        if not path.is_file():
            build_from_data_dir(data_dir, path)
        return KNBigram.load(path)
    default = bigram_path(data_dir)
    if default.is_file():
        return KNBigram.load(default)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    model = _count(data_dir)
    if _try_save(model, default):
        return KNBigram.load(default)
    cached = cache_path(data_dir)
    if cached.is_file():
        log(f"KN bigram: data dir {data_dir} is not writable; using the cached {cached}")
        return KNBigram.load(cached)
    if _try_save(model, cached):
        log(f"KN bigram: data dir {data_dir} is not writable; built it into {cached}")
        return KNBigram.load(cached)
    log(f"KN bigram: neither data dir {data_dir} nor {cached.parent} is writable; built it in memory (not saved)")
    return model


def cache_path(data_dir: str | Path) -> Path:
    """Where the bigram of a read-only data dir is cached: named by the sha256 of its train split (with the
    vocabulary size, end-of-line id and file format), so a changed split never meets a stale bigram."""
    from lmlab.core.data import DataDir

    data = DataDir(data_dir)
    digest = hashlib.sha256(f"lmlab-kn-bigram {FORMAT_VERSION} {data.vocab_size} {data.eos_id} {data.dtype.str}\n".encode())
    with open(Path(data_dir) / data.meta["splits"]["train"]["file"], "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lmlab" / "kn-bigram" / f"{digest.hexdigest()}.safetensors"


def _count(data_dir: str | Path) -> KNBigram:
    from lmlab.core.data import DataDir

    data = DataDir(data_dir)
    return KNBigram.from_tokens(np.asarray(data.split("train")), data.vocab_size, start=data.eos_id)


def _try_save(model: KNBigram, path: Path) -> bool:
    """Save, or False when the place refuses writes (permissions, a read-only file system); other errors raise."""
    try:
        model.save(path)
        return True
    except (OSError, LmlabError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return False
        raise


def main(argv: list[str] | None = None) -> int:
    """`python -m lmlab.core.imm.kn_bigram DATA_DIR [--force]`: build the file, print valid/test perplexity."""
    import argparse
    import json

    from lmlab.core.data import DataDir

    ap = argparse.ArgumentParser(prog="python -m lmlab.core.imm.kn_bigram", description=main.__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    args = ap.parse_args(argv)
    try:
        path = bigram_path(args.data_dir)
        if args.force or not path.is_file():
            build_from_data_dir(args.data_dir)
        kn = KNBigram.load(path)
        data = DataDir(args.data_dir)
        report = {"file": str(path), "vocab_size": kn.vocab_size, "bigram_types": int(kn.counts.size),
                  "discounts": [round(float(d), 6) for d in kn.discounts]}
        for split in data.splits():
            if split != "train":
                report[f"{split}_ppl"] = round(kn.perplexity(np.asarray(data.split(split))), 3)
    except LmlabError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        return exc.exit_code
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
