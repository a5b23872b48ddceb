"""Text -> tokenizer + binarized splits, in two streaming passes with bounded memory.

Pass 1 learns the tokenizer from the train split only (word counts, or BPE merges); pass 2 encodes
every split in chunks of lines and appends each chunk to `<split>.bin`. The data dir is assembled in
a temporary sibling directory and renamed into place at the end, so a failure leaves nothing half
written and an existing data dir is only replaced with `force`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmlab.core.data import FORMAT, dtype_for_vocab
from lmlab.core.errors import LmlabError
from lmlab.core.filemode import chmod_as_mkdir
from lmlab.core.textio import TextSource, sha256_file

EOS, UNK = "<eos>", "<unk>"
CHUNK_LINES = 8192


@dataclasses.dataclass
class PrepResult:
    out: Path
    vocab_size: int
    splits: dict[str, dict]
    seconds: float
    input_bytes: int


def count_words(lines: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= CHUNK_LINES:
            counts.update(" ".join(batch).split())
            batch.clear()
    counts.update(" ".join(batch).split())
    return counts


def word_tokenizer_from_counts(counts: Counter, vocab_size: int = 0) -> Tokenizer:
    """Word-level vocabulary: <eos>, <unk>, then words by descending count (ties: alphabetical).

    Ids are frequency-sorted so adaptive input/softmax cutoffs are meaningful. `vocab_size` counts
    the two specials; 0 keeps every word.
    """
    words = sorted((w for w in counts if w not in (EOS, UNK)), key=lambda w: (-counts[w], w))
    if vocab_size:
        if vocab_size < 3:
            raise LmlabError(f"--vocab-size {vocab_size}: must be at least 3 (two special tokens and one word)")
        words = words[: vocab_size - 2]
    vocab = {EOS: 0, UNK: 1}
    for w in words:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # split like str.split(), keep punctuation attached
    return tok


def train_bpe(lines: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    if vocab_size <= 0:
        raise LmlabError("--tokenizer bpe needs --vocab-size (e.g. 16000)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise LmlabError(f"--tokenizer {path} does not exist")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        raise LmlabError(f"--tokenizer {path} is not a tokenizers JSON file ({str(exc).splitlines()[0][:120]})") from exc


def specials_of(tok: Tokenizer) -> dict[str, int]:
    eos = tok.token_to_id(EOS)
    if eos is None:
        raise LmlabError(f"tokenizer has no {EOS} token; lmlab appends it to every line (rebuild the tokenizer with lmlab prep)")
    out = {"eos": eos}
    if tok.token_to_id(UNK) is not None:
        out["unk"] = tok.token_to_id(UNK)
    return out


def encode_lines(tok: Tokenizer, lines: Iterable[str], eos_id: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Chunks of token ids, each line followed by <eos> (Mikolov's PTB convention)."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    batch: list[str] = []

    def flush() -> np.ndarray:
        encs = encode(batch, add_special_tokens=False)
        ids: list[int] = []
        for enc in encs:
            ids.extend(enc.ids)
            ids.append(eos_id)
        batch.clear()
        return np.asarray(ids, dtype=dtype)

    for line in lines:
        batch.append(line)
        if len(batch) >= CHUNK_LINES:
            yield flush()
    if batch:
        yield flush()


def prep(out: str | Path, splits: dict[str, list[TextSource]], tokenizer: str = "word", vocab_size: int = 0,
         tokenizer_path: str | None = None, min_frequency: int = 2, force: bool = False, command: list[str] | None = None,
         progress=None) -> PrepResult:
    """Write a data dir at `out` from text `splits` ({"train": [sources], "valid": [...], ...})."""
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise LmlabError(f"output dir {out} is not empty; pass --force to replace it or choose another --out")
    if not splits:
        raise LmlabError("no input: give --train/--valid/--test files, or pipe text on stdin")
    log = progress or (lambda msg: None)

    if tokenizer_path:
        tok = load_tokenizer(tokenizer_path)
        kind = "reused"
    else:
        if "train" not in splits:
            raise LmlabError("learning a tokenizer needs --train (or pass --tokenizer PATH to reuse one)")
        train_lines = lambda: (l for s in splits["train"] for l in s.lines())  # noqa: E731
        log(f"learning a {tokenizer} tokenizer from the train split")
        if tokenizer == "word":
            counts = count_words(train_lines())
            if not counts:
                raise LmlabError(f"train split ({', '.join(s.label for s in splits['train'])}) is empty: no words to learn a vocabulary from")
            tok = word_tokenizer_from_counts(counts, vocab_size)
        elif tokenizer == "bpe":
            tok = train_bpe(train_lines(), vocab_size, min_frequency)
            if tok.get_vocab_size() <= 257:
                raise LmlabError(f"train split ({', '.join(s.label for s in splits['train'])}) is empty or too small to learn BPE merges")
        else:
            raise LmlabError(f"--tokenizer {tokenizer!r}: expected word, bpe or a path to tokenizer.json")
        kind = tokenizer
    specials = specials_of(tok)
    vocab = tok.get_vocab_size()
    dtype = dtype_for_vocab(vocab)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        chmod_as_mkdir(tmp)  # mkdtemp's 0700 would keep a group out of the data dir
        (tmp / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")  # OSError (e.g. ENOSPC), not a bare Exception
        split_meta: dict[str, dict] = {}
        total_bytes = 0
        for name, sources in splits.items():
            log(f"encoding {name} ({', '.join(s.label for s in sources)})")
            n_tokens = n_unk = n_lines = 0
            with open(tmp / f"{name}.bin", "wb") as f:
                for source in sources:
                    for ids in encode_lines(tok, source.lines(), specials["eos"], dtype):
                        f.write(ids.tobytes())
                        n_tokens += ids.size
                        n_lines += int((ids == specials["eos"]).sum())
                        if "unk" in specials:
                            n_unk += int((ids == specials["unk"]).sum())
            if n_tokens == 0:
                raise LmlabError(f"{name} split ({', '.join(s.label for s in sources)}) is empty")
            sources_meta = [{"path": s.label, "sha256": s.sha256(), "bytes": s.size_bytes()} for s in sources]
            total_bytes += sum(m["bytes"] for m in sources_meta)
            split_meta[name] = {"file": f"{name}.bin", "tokens": n_tokens, "lines": n_lines, "unk": n_unk,
                                "unk_rate": n_unk / max(n_tokens, 1), "sources": sources_meta}
        meta = {"format": FORMAT, "version": 1, "vocab_size": vocab, "dtype": dtype.str,
                "special_tokens": specials, "tokenizer": {"kind": kind, "file": "tokenizer.json",
                                                          "sha256": sha256_file(tmp / "tokenizer.json")},
                "splits": split_meta, "command": command or []}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for sources in splits.values():
            for s in sources:
                s.cleanup()
    return PrepResult(out, vocab, split_meta, time.perf_counter() - start, total_bytes)


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        aside = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        os.replace(target, aside)
        os.replace(new, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(new, target)
