"""`prep` configuration."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import ENCODING, at_least, option


@dataclass
class PrepConfig:
    train: list[str] = option([], "train text file(s); '-' reads stdin")
    valid: list[str] = option([], "validation text file(s)")
    test: list[str] = option([], "test text file(s)")
    out: str = option("data/demo", "output data dir")
    tokenizer: str = option("word", "word (whitespace split, <unk>, <eos> per line), bpe (byte-level, learned on train), or a path to a tokenizer.json to reuse")
    vocab_size: int = option(0, "vocabulary size including <eos>/<unk> (word: 0 keeps every word; bpe: required)", check=at_least(0))
    min_frequency: int = option(2, "BPE: minimum pair frequency for a merge", check=at_least(0))
    encoding: str = option("utf-8", "input encoding (e.g. latin-1 for legacy files)", check=ENCODING)
    force: bool = option(False, "replace an existing, non-empty output dir")
