import json

import numpy as np
import pytest

from conftest import needs_shared, run_cli
from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError
from lmlab.core.prep import prep
from lmlab.core.textio import TextSource


def _src(path):
    return [TextSource(str(path))]


def test_word_level_ids_eos_and_vocab_cap(tmp_path):
    (tmp_path / "t.txt").write_text("b a b\nc b a,\n", encoding="utf-8")
    (tmp_path / "v.txt").write_text("a z\n", encoding="utf-8")
    res = prep(tmp_path / "d", {"train": _src(tmp_path / "t.txt"), "valid": _src(tmp_path / "v.txt")}, vocab_size=4)
    d = DataDir(res.out)
    tok = d.tokenizer
    # <eos>=0, <unk>=1, then by count: b (3), a (1) and "a," (1) tie -> alphabetical "a"; cap 4 drops "a," and "c"
    assert tok.get_vocab() == {"<eos>": 0, "<unk>": 1, "b": 2, "a": 3}
    assert d.split("train").tolist() == [2, 3, 2, 0, 1, 2, 1, 0]  # WhitespaceSplit keeps "a," as one (unknown) word
    assert d.split("valid").tolist() == [3, 1, 0]
    assert d.meta["splits"]["valid"]["unk"] == 1 and d.meta["splits"]["train"]["lines"] == 2
    assert d.dtype == np.dtype("<u2") and len(d.meta["splits"]["train"]["sources"][0]["sha256"]) == 64


def test_reused_tokenizer_never_grows(tmp_path, tiny_data):
    (tmp_path / "new.txt").write_text("the zebra the\n", encoding="utf-8")
    res = prep(tmp_path / "d", {"test": _src(tmp_path / "new.txt")}, tokenizer_path=str(tiny_data))
    d, base = DataDir(res.out), DataDir(tiny_data)
    assert d.vocab_size == base.vocab_size
    assert d.split("test").tolist() == [base.tokenizer.token_to_id("the"), base.unk_id, base.tokenizer.token_to_id("the"), base.eos_id]


def test_bpe_trains_on_train_and_roundtrips(tmp_path, tiny_text):
    res = prep(tmp_path / "d", {"train": _src(tiny_text["train"]), "valid": _src(tiny_text["valid"])}, tokenizer="bpe",
               vocab_size=300)
    d = DataDir(res.out)
    assert d.vocab_size <= 300 and d.meta["tokenizer"]["kind"] == "bpe"
    first_line = tiny_text["valid"].read_text().splitlines()[0]
    ids = d.split("valid").tolist()
    assert d.tokenizer.decode(ids[: ids.index(d.eos_id)]) == first_line


def test_non_utf8_names_file_line_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\nbad \xe9 here\n")
    with pytest.raises(LmlabError, match=r"bad.txt: line 2, byte offset 14: not valid utf-8"):
        prep(tmp_path / "d", {"train": _src(bad)})
    assert not (tmp_path / "d").exists()
    res = prep(tmp_path / "d", {"train": [TextSource(str(bad), encoding="latin-1")]})
    assert "é" in DataDir(res.out).tokenizer.get_vocab()


def test_empty_and_missing_inputs(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(LmlabError, match="empty"):
        prep(tmp_path / "d", {"train": _src(tmp_path / "empty.txt")})
    with pytest.raises(LmlabError, match="does not exist"):
        prep(tmp_path / "d", {"train": [TextSource(str(tmp_path / "missing.txt"))]})


def test_existing_output_is_kept_without_force(tmp_path, tiny_text):
    out = tmp_path / "d"
    prep(out, {"train": _src(tiny_text["train"])})
    before = (out / "meta.json").read_text()
    with pytest.raises(LmlabError, match="not empty"):
        prep(out, {"train": _src(tiny_text["valid"])})
    assert (out / "meta.json").read_text() == before
    prep(out, {"train": _src(tiny_text["valid"])}, force=True)
    assert (out / "meta.json").read_text() != before


def test_truncated_split_is_detected(tmp_path, tiny_text):
    out = tmp_path / "d"
    prep(out, {"train": _src(tiny_text["train"])})
    data = (out / "train.bin").read_bytes()
    (out / "train.bin").write_bytes(data[:-6])
    with pytest.raises(LmlabError, match="truncated"):
        DataDir(out).split("train")


def test_cli_prep_from_stdin(tmp_path, tiny_text):
    proc = run_cli("prep", "--out", str(tmp_path / "d"), "--split", "train", input=tiny_text["train"].read_text())
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["splits"]["train"]["sources"][0]["path"] == "<stdin>"
    assert meta["splits"]["train"]["lines"] == 600 and proc.stdout == ""


def test_ptb_counts_match_mikolov(tmp_path):
    ptb = needs_shared("ptb")
    res = prep(tmp_path / "ptb", {s: _src(ptb / f"ptb.{s}.txt") for s in ("train", "valid", "test")}, vocab_size=10000)
    assert res.vocab_size == 10000
    assert [res.splits[s]["tokens"] for s in ("train", "valid", "test")] == [929589, 73760, 82430]


def test_prep_preset_demo_outside_the_repo_says_where_its_corpus_is(tmp_path):
    """The demo preset's corpus path is relative to the repository root: from elsewhere, one line saying so and what
    to do, instead of a bare "does not exist"; LMLAB_DEMO or --train/--valid/--test make it work from anywhere."""
    from conftest import REPO
    res = run_cli("prep", "--preset", "demo", "--out", str(tmp_path / "d"), "-q", cwd=tmp_path, env={"LMLAB_DEMO": ""})
    assert res.returncode != 0 and res.stderr.strip().splitlines() == [
        f"lmlab: error: input file corpora/austen/train.txt is not in {tmp_path}: preset 'demo' reads it relative to "
        "the lmlab repository root; run from there, set LMLAB_DEMO=DIR (the directory holding train.txt, valid.txt, "
        "test.txt) or pass --train/--valid/--test"]
    res = run_cli("prep", "--preset", "demo", "--out", str(tmp_path / "d"), "-q", "--print-config", cwd=tmp_path,
                  env={"LMLAB_DEMO": str(REPO / "corpora" / "austen")})
    assert res.returncode == 0 and json.loads(res.stdout)["train"] == [str(REPO / "corpora" / "austen" / "train.txt")]
