"""`lmlab prep` for parallel text (translation): the wiring `cli/prep.py` calls when --src-lang/--tgt-lang are given.

`prep_parallel_command` is typer-compatible on its own; `run_prep_parallel` is the call for a
command that already parsed its own flags.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from lmlab.cli.common import handle_errors, make_reporter
from lmlab.core.config import parse_overrides, resolve
from lmlab.core.errors import LmlabError
from lmlab.core.seq2seq.prep import ParallelPrepConfig, prep_parallel


def parse_splits(items: list[str] | None) -> dict[str, str]:
    """["train=data/train", "valid=data/val"] -> {"train": "data/train", ...}."""
    out = {}
    for item in items or []:
        name, sep, prefix = item.partition("=")
        if not sep or not name or not prefix:
            raise LmlabError(f"--split {item!r}: expected NAME=PATH_PREFIX (files PATH_PREFIX.<lang>), e.g. train=corpus/train")
        out[name.strip()] = prefix.strip()
    return out


def run_prep_parallel(presets: list[str] | None, overrides: dict, quiet: bool = False) -> dict:
    """Resolve `ParallelPrepConfig` from presets (their `[prep]` table) and overrides, prepare, return meta."""
    cfg = resolve(ParallelPrepConfig, "prep", presets, overrides)
    if not cfg.src_lang or not cfg.tgt_lang:
        raise LmlabError("parallel prep needs --src-lang and --tgt-lang (or a translation preset such as multi30k-de-en)")
    if not cfg.splits:
        raise LmlabError("parallel prep needs --split train=PATH_PREFIX (and valid=..., test=...) or a preset with [prep] splits")
    return prep_parallel(cfg.out_dir, src_lang=cfg.src_lang, tgt_lang=cfg.tgt_lang, splits=cfg.splits,
                         vocab_size=cfg.vocab_size, joint=cfg.joint, min_frequency=cfg.min_frequency,
                         max_len=cfg.max_len, max_ratio=cfg.max_ratio, force=cfg.force,
                         command=["lmlab", *sys.argv[1:]], reporter=make_reporter(quiet))


@handle_errors
def prep_parallel_command(
    preset: Optional[List[str]] = typer.Option(None, "--preset", "-p", help="Preset(s) whose [prep] table fills the options (e.g. multi30k-de-en)."),
    src_lang: Optional[str] = typer.Option(None, "--src-lang", help="Source-language suffix: files are PREFIX.<src-lang>."),
    tgt_lang: Optional[str] = typer.Option(None, "--tgt-lang", help="Target-language suffix."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="NAME=PATH_PREFIX, repeatable (train is required; valid, test, ...)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Data dir to write."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="BPE vocabulary size."),
    joint: Optional[bool] = typer.Option(None, "--joint/--separate", help="One BPE for both languages (default) or one per side."),
    max_len: Optional[int] = typer.Option(None, "--max-len", help="Drop training pairs longer than this many tokens."),
    max_ratio: Optional[float] = typer.Option(None, "--max-ratio", help="Drop training pairs whose length ratio exceeds this."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing data dir."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE overrides of the prep config."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
):
    """Tokenize parallel text with a byte-level BPE and binarize it for `train-lm --task translation`.

    \b
    Examples:
      lmlab prep --preset multi30k-de-en
      lmlab prep --src-lang de --tgt-lang en --split train=corpus/train --split valid=corpus/val -o data/de-en
    """
    overrides = parse_overrides(set_)
    flags = {"src_lang": src_lang, "tgt_lang": tgt_lang, "out_dir": out, "vocab_size": vocab_size, "joint": joint,
             "max_len": max_len, "max_ratio": max_ratio, "force": True if force else None}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if split:
        overrides["splits"] = parse_splits(split)
    meta = run_prep_parallel(preset, overrides, quiet)
    print(json.dumps({"out_dir": overrides.get("out_dir") or resolve(ParallelPrepConfig, "prep", preset, overrides).out_dir,
                      "vocab_size": meta["vocab_size"], "splits": meta["splits"]}))
