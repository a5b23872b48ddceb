"""Parallel prep: exact detokenization, length filtering counts, binarized layout, meta.json."""

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lmlab.core.config import resolve
from lmlab.core.errors import LmlabError
from lmlab.core.seq2seq.config import Config
from lmlab.core.seq2seq.data import collate, load_split, read_meta, token_batches
from lmlab.core.seq2seq.prep import BOS, EOS, PAD, ParallelPrepConfig, decode, prep_parallel
from tokenizers import Tokenizer

from seq2seq_fixtures import write_corpus


@pytest.fixture
def corpus(tmp_path):
    prefixes = write_corpus(tmp_path)
    with open(tmp_path / "train.de", "a", encoding="utf-8") as f:  # one empty, one too long, one bad-ratio pair
        f.write("\n" + " ".join(["hund"] * 40) + "\nein mann läuft im park mit dem hund und der frau.\n")
    with open(tmp_path / "train.en", "a", encoding="utf-8") as f:
        f.write("Empty source.\n" + " ".join(["dog"] * 40) + "\nHi.\n")
    return tmp_path, prefixes


def test_prep_filters_counts_and_roundtrips(corpus):
    root, prefixes = corpus
    meta = prep_parallel(root / "data", src_lang="de", tgt_lang="en", splits=prefixes, vocab_size=300,
                         max_len=30, max_ratio=3.0, command=["lmlab", "prep"])
    c = meta["splits"]["train"]
    assert (c["pairs_in"], c["dropped_empty"], c["dropped_too_long"], c["dropped_ratio"], c["pairs"]) == (203, 1, 1, 1, 200)
    assert meta["splits"]["valid"]["pairs"] == 20  # not filtered
    assert meta["dtype"] == "uint16" and meta["special_ids"] == {"pad": PAD, "bos": BOS, "eos": EOS, "unk": 3}
    assert meta["inputs_sha256"][str(root / "train.de")] == hashlib.sha256((root / "train.de").read_bytes()).hexdigest()
    assert json.loads((root / "data" / "meta.json").read_text())["command_line"] == "lmlab prep"
    split = load_split(root / "data", "valid", meta)
    tok = Tokenizer.from_file(str(root / "data" / "tokenizer.json"))
    valid_en = (root / "valid.en").read_text(encoding="utf-8").splitlines()
    assert [decode(tok, t.tolist()) for t in split.tgt] == valid_en  # byte-level BPE detokenizes exactly
    assert all(t[-1] == EOS for t in split.src)
    offsets = np.fromfile(root / "data" / "valid.en.idx", dtype=np.int64)
    assert offsets[0] == 0 and offsets[-1] == meta["splits"]["valid"]["tgt_tokens"]
    with pytest.raises(LmlabError, match="--force"):
        prep_parallel(root / "data", src_lang="de", tgt_lang="en", splits=prefixes, vocab_size=300)


def test_token_batches_and_collate(corpus):
    root, prefixes = corpus
    meta = prep_parallel(root / "data", src_lang="de", tgt_lang="en", splits=prefixes, vocab_size=300)
    split = load_split(root / "data", "train", meta)
    batches = token_batches(split, max_tokens=120)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(split)))  # every pair exactly once
    b = collate(split, batches[3])
    B, T = b["target"].shape
    assert B * max(b["src"].shape[1], T) <= 120
    assert (b["prev"][:, 0] == BOS).all()
    assert (b["prev"][:, 1:][b["target"][:, 1:] != PAD] == b["target"][:, :-1][b["target"][:, 1:] != PAD]).all()
    assert read_meta(root / "data")["src_lang"] == "de"


def test_prep_cli_with_split_flags(corpus):
    import typer
    from lmlab.cli.prep_parallel import prep_parallel_command
    root, prefixes = corpus
    app = typer.Typer()
    app.command()(prep_parallel_command)
    res = CliRunner().invoke(app, ["--src-lang", "de", "--tgt-lang", "en", "--split", f"train={prefixes['train']}",
                                   "--split", f"valid={prefixes['valid']}", "-o", str(root / "cli"), "--vocab-size", "300", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["splits"]["valid"]["pairs"] == 20
    bad = CliRunner().invoke(app, ["--src-lang", "de", "--tgt-lang", "en", "--split", "train", "-o", str(root / "x")])
    assert bad.exit_code != 0 and "NAME=PATH_PREFIX" in bad.output


@pytest.mark.parametrize("preset", ["multi30k-de-en", "multi30k-en-de", "wmt14-en-de", "wmt14-en-de-define"])
def test_translation_presets_resolve(preset, preset_env):
    cfg = resolve(Config, "train-lm", [preset, "cpu"])
    assert cfg.task == "translation" and cfg.hardware.device == "cpu"
    prep = resolve(ParallelPrepConfig, "prep", [preset])
    assert prep.src_lang and prep.tgt_lang and "train" in prep.splits
