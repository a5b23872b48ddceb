"""Negatives of the residual NCE: continuations sampled from the frozen base LM for the same prefixes.

Either sampled during training (`NegativeSampler`) or written ahead of time into an `.npz` that
`train-ebm` reads (`negatives.file`), so the costly LM sampling can run once (a Make step):

    python -m lmlab.core.residual.negatives --base-lm runs/demo/checkpoints/best.pt --data data/demo \
        --split train --out runs/residual-demo/negatives-train.npz --prefix-len 24 --continuation-len 16 \
        --per-prefix 8 [--top-k 0] [--temperature 1.0] [--max-windows 4000]

A negative is only a negative *of its prefix*: a file is tied to the exact windows it was sampled for.
File contents (format 2): `tokens` int32 (W, K, C) continuations, `prefix_index` int64 (W,) the window
each row belongs to (windows.py), and the provenance that `NegativesFile` checks against the training
config before any row is used -- base_lm_sha256, data_dir, tokenizer_sha256, split, split_tokens,
prefix_len, continuation_len, top_k, temperature, seed, and `prefix_sha256`, the sha256 of the prefix
tokens of every row's window in row order (so a file cut from other text, another split or a shifted
window grid is refused even when every size matches). Any mismatch is one error line naming the field.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.core.errors import LmlabError
from lmlab.core.generate import sample_continuations
from lmlab.core.residual.windows import Windows

FORMAT = 2


class NegativeSampler:
    """K untruncated (or top-k) LM continuations per prefix, drawn on the fly."""

    def __init__(self, lm, per_prefix: int, continuation_len: int, top_k: int = 0, temperature: float = 1.0,
                 generator: torch.Generator | None = None):
        self.lm, self.k, self.c = lm, per_prefix, continuation_len
        self.top_k, self.temperature, self.generator = top_k, temperature, generator

    def __call__(self, prefixes: torch.Tensor) -> torch.Tensor:
        """prefixes (B, P) -> negatives (B, K, C)."""
        out = sample_continuations(self.lm, prefixes, num_samples=self.k, max_new_tokens=self.c,
                                   temperature=self.temperature, top_k=self.top_k, generator=self.generator)
        return out.view(prefixes.size(0), self.k, self.c)


def prefix_sha256(windows: Windows, index: np.ndarray, chunk: int = 4096) -> str:
    """sha256 of the prefix tokens (int64, little-endian) of windows `index`, in that order."""
    h = hashlib.sha256()
    index = np.asarray(index, dtype=np.int64)
    for start in range(0, len(index), chunk):
        prefixes, _ = windows.get(index[start:start + chunk])
        h.update(prefixes.numpy().astype("<i8").tobytes())
    return h.hexdigest()


class NegativesFile:
    """Negatives read from an `.npz` written by `write_negatives`; rows are looked up by window index.

    Refuses (LmlabError, one line) a file whose provenance differs from what training will pair it with:
    `windows` are the training split's windows and the keyword arguments the training config's values.
    """

    def __init__(self, path: str | Path, windows: Windows, *, split: str, tokenizer_sha256: str, per_prefix: int,
                 top_k: int, temperature: float, base_lm_sha256: str):
        path = Path(path)
        if not path.exists():
            raise LmlabError(f"negatives.file {path} does not exist; write it with `python -m lmlab.core.residual.negatives`")
        data = np.load(path)
        if (int(data["format"]) if "format" in data else 0) != FORMAT:
            raise LmlabError(f"negatives.file {path} has no provenance (written by an older lmlab): it cannot be tied "
                             "to its prefixes; regenerate it with `python -m lmlab.core.residual.negatives`")
        self.path, self.tokens, self.prefix_index = path, data["tokens"], data["prefix_index"]
        self.meta: dict[str, Any] = {k: data[k].item() for k in ("data_dir", "tokenizer_sha256", "split", "split_tokens",
                                                                  "prefix_len", "continuation_len", "top_k", "temperature",
                                                                  "seed", "base_lm_sha256", "prefix_sha256")}
        m = self.meta
        fix = "regenerate it or change the config to match"
        if m["base_lm_sha256"] != base_lm_sha256:
            raise LmlabError(f"negatives.file {path} was sampled from another base LM (sha256 differs); regenerate it")
        if m["tokenizer_sha256"] != tokenizer_sha256:
            raise LmlabError(f"negatives.file {path} was cut from a data dir with another tokenizer ({m['data_dir']}); "
                             "regenerate it from the training data dir")
        if m["split"] != split:
            raise LmlabError(f"negatives.file {path} was sampled for the '{m['split']}' split of {m['data_dir']}, training "
                             f"pairs it with the '{split}' split (data.train_split); regenerate it with --split {split}")
        if (m["prefix_len"], m["continuation_len"]) != (windows.prefix_len, windows.continuation_len):
            raise LmlabError(f"negatives.file {path} holds windows of {m['prefix_len']}+{m['continuation_len']} tokens, "
                             f"the config asks for {windows.prefix_len}+{windows.continuation_len}; {fix}")
        if m["split_tokens"] != len(windows.stream):
            raise LmlabError(f"negatives.file {path} was cut from a '{split}' split of {m['split_tokens']} tokens "
                             f"({m['data_dir']}), the training split has {len(windows.stream)}; regenerate it")
        if m["top_k"] != top_k or float(m["temperature"]) != float(temperature):
            raise LmlabError(f"negatives.file {path} was sampled with top_k={m['top_k']}, temperature={m['temperature']}; "
                             f"the config says negatives.top_k={top_k}, negatives.temperature={temperature}: "
                             f"pass --set negatives.top_k={m['top_k']} --set negatives.temperature={m['temperature']} "
                             "or regenerate the file")
        if len(self.prefix_index) and (self.prefix_index.min() < 0 or self.prefix_index.max() >= len(windows)):
            raise LmlabError(f"negatives.file {path} refers to window {int(self.prefix_index.max())}, the training split "
                             f"has {len(windows)}; regenerate it")
        if prefix_sha256(windows, self.prefix_index) != m["prefix_sha256"]:
            raise LmlabError(f"negatives.file {path} was sampled for other prefixes than the training windows at its "
                             f"rows (prefix sha256 differs: other text in '{split}'); regenerate it")
        if self.tokens.shape[1] < per_prefix:
            raise LmlabError(f"negatives.file {path} has {self.tokens.shape[1]} negatives per prefix, "
                             f"negatives.per_prefix={per_prefix}; regenerate it with --per-prefix {per_prefix}")
        self.k = per_prefix

    def __len__(self) -> int:
        return len(self.prefix_index)

    def record(self) -> dict[str, Any]:
        """What a checkpoint remembers about the negatives it was trained against."""
        return {"source": "file", "file": str(self.path), "rows": len(self), "per_prefix_in_file": int(self.tokens.shape[1]),
                **{k: (float(v) if k == "temperature" else v) for k, v in self.meta.items()}}

    def rows(self, rows: np.ndarray, device) -> tuple[np.ndarray, torch.Tensor]:
        """(window indices (B,), negatives Long (B, K, C)) of the file rows `rows`."""
        neg = torch.from_numpy(self.tokens[rows, : self.k].astype(np.int64)).to(device)
        return self.prefix_index[rows], neg


def write_negatives(lm, windows: Windows, out: str | Path, *, per_prefix: int, top_k: int, temperature: float,
                    max_windows: int, batch_size: int, seed: int, base_lm_sha256: str, data_dir: str, split: str,
                    tokenizer_sha256: str, device="cpu", log=None) -> Path:
    gen = torch.Generator(device=device).manual_seed(seed)
    count = len(windows) if max_windows <= 0 else min(max_windows, len(windows))
    index = np.random.default_rng(seed).permutation(len(windows))[:count]
    sampler = NegativeSampler(lm, per_prefix, windows.continuation_len, top_k, temperature, gen)
    tokens = np.empty((count, per_prefix, windows.continuation_len), dtype=np.int32)
    for start in range(0, count, batch_size):
        prefixes, _ = windows.get(index[start:start + batch_size], device)
        tokens[start:start + len(prefixes)] = sampler(prefixes).cpu().numpy()
        if log is not None:
            log(f"negatives {min(start + batch_size, count)}/{count}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, format=FORMAT, tokens=tokens, prefix_index=index, prefix_len=windows.prefix_len,
             continuation_len=windows.continuation_len, top_k=top_k, temperature=float(temperature), seed=seed,
             base_lm_sha256=base_lm_sha256, data_dir=str(data_dir), split=split, split_tokens=len(windows.stream),
             tokenizer_sha256=tokenizer_sha256, prefix_sha256=prefix_sha256(windows, index))
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    from lmlab.core.data import DataDir
    from lmlab.core.generate import load_lm
    from lmlab.core.textio import sha256_file

    p = argparse.ArgumentParser(prog="python -m lmlab.core.residual.negatives", description=__doc__.split("\n")[0])
    p.add_argument("--base-lm", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train", help="the split training reads positives from (data.train_split)")
    p.add_argument("--out", required=True)
    p.add_argument("--prefix-len", type=int, required=True)
    p.add_argument("--continuation-len", type=int, required=True)
    p.add_argument("--per-prefix", type=int, default=4)
    p.add_argument("--top-k", type=int, default=0, help="training must then set negatives.top_k to the same value")
    p.add_argument("--temperature", type=float, default=1.0, help="training must then set negatives.temperature to it")
    p.add_argument("--max-windows", type=int, default=0, help="0: every window of the split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    try:
        lm, _, info = load_lm(a.base_lm, a.device)
        data = DataDir(a.data)
        if info.get("tokenizer_sha256") and info["tokenizer_sha256"] != data.tokenizer_sha256:
            raise LmlabError(f"data dir {a.data} has another tokenizer than the base LM {a.base_lm}")
        windows = Windows(data.split(a.split), a.prefix_len, a.continuation_len, f"{a.data}:{a.split}")
        path = write_negatives(lm, windows, a.out, per_prefix=a.per_prefix, top_k=a.top_k, temperature=a.temperature,
                               max_windows=a.max_windows, batch_size=a.batch_size, seed=a.seed,
                               base_lm_sha256=sha256_file(a.base_lm), data_dir=a.data, split=a.split,
                               tokenizer_sha256=data.tokenizer_sha256, device=a.device,
                               log=lambda m: print(m, file=sys.stderr))
    except LmlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
