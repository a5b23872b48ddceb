"""Data dirs written by `lmlab prep`: `meta.json`, `tokenizer.json`, one `<split>.bin` token array per split.

`<split>.bin` is a flat little-endian array (uint16 when the vocabulary fits, else uint32) of token
ids with the end-of-sentence id after every line, read back as a numpy memmap.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmlab.core.errors import LmlabError
from lmlab.core.textio import sha256_file

FORMAT = "lmlab-data"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


class DataDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():  # most often a text file given where its prepped dir goes
            raise LmlabError(f"data dir {self.path} is a file, not a data dir; prep it first: "
                             f"`lmlab prep --train {self.path} --out DIR`, then pass DIR")
        if not self.path.is_dir():
            raise LmlabError(f"data dir {self.path} does not exist; create it with `lmlab prep --out {self.path} ...`")
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise LmlabError(f"data dir {self.path} has no meta.json; it was not written by `lmlab prep` (rerun prep)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LmlabError(f"{meta_path} is not valid JSON ({exc}); rerun `lmlab prep`") from exc
        if self.meta.get("format") != FORMAT:
            raise LmlabError(f"{meta_path} is not an lmlab data dir (format {self.meta.get('format')!r})")

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @property
    def specials(self) -> dict[str, int]:
        return self.meta["special_tokens"]

    @property
    def eos_id(self) -> int:
        return int(self.specials["eos"])

    @property
    def unk_id(self) -> int | None:
        return self.specials.get("unk")

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @cached_property
    def tokenizer_json(self) -> str:
        if not self.tokenizer_path.exists():
            raise LmlabError(f"data dir {self.path} has no tokenizer.json; rerun `lmlab prep`")
        return self.tokenizer_path.read_text(encoding="utf-8")

    @cached_property
    def tokenizer(self) -> Tokenizer:
        try:
            return Tokenizer.from_str(self.tokenizer_json)
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise LmlabError(f"{self.tokenizer_path} is not a valid tokenizers JSON file ({exc})") from exc

    @cached_property
    def tokenizer_sha256(self) -> str:
        return sha256_file(self.tokenizer_path)

    def splits(self) -> list[str]:
        return list(self.meta.get("splits", {}))

    def split(self, name: str) -> np.ndarray:
        info = self.meta.get("splits", {}).get(name)
        if info is None:
            raise LmlabError(f"data dir {self.path} has no split '{name}' (has: {', '.join(self.splits()) or 'none'})")
        path = self.path / info["file"]
        if not path.exists():
            raise LmlabError(f"{path} is missing; rerun `lmlab prep`")
        expected = int(info["tokens"]) * self.dtype.itemsize
        actual = path.stat().st_size
        if actual != expected:
            raise LmlabError(f"{path} holds {actual} bytes but meta.json says {info['tokens']} tokens "
                             f"({expected} bytes): the file is truncated or from another prep; rerun `lmlab prep`")
        if info["tokens"] == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")


def trained_data_dir(state: dict[str, Any], checkpoint: str | Path) -> Path:
    """The data dir a checkpoint was trained on, for commands run from any directory: the path as the run
    was given it (relative to where training ran), then the absolute path recorded next to it (`data_dir_abs`;
    train-lm writes it, older checkpoints lack it). A candidate whose tokenizer differs from the checkpoint's is passed
    over for one that matches; with none there, one error line naming both paths and `--data DIR`."""
    recorded = str(state["config"]["data"]["dir"])
    absolute = state.get("data_dir_abs")
    candidates = list(dict.fromkeys(p for p in (recorded, absolute) if p))
    present = [Path(p) for p in candidates if (Path(p) / "meta.json").is_file()]
    wanted = state.get("tokenizer_sha256")
    for path in present:
        try:
            if not wanted or DataDir(path).tokenizer_sha256 == wanted:
                return path
        except LmlabError:
            continue
    if present:
        return present[0]  # another vocabulary: the caller's check says so
    where = f"{recorded} (relative to {Path.cwd()})" if not Path(recorded).is_absolute() else recorded
    also = f" nor {absolute}" if absolute and absolute != recorded else " (the checkpoint records no absolute path)"
    raise LmlabError(f"the data dir checkpoint {checkpoint} was trained on is not found: {where}{also}; "
                     "pass --data DIR (the prepped data dir it was trained on)")
