"""lmlab prep: text -> tokenizer.json + <split>.bin + meta.json."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from lmlab.cli.common import PRESET_HELP, SET_HELP, handle_errors, make_reporter, nested, print_config, resolve_config
from lmlab.core.errors import LmlabError
from lmlab.core.prep import prep as run_prep
from lmlab.core.prep_config import PrepConfig
from lmlab.core.textio import TextSource


@handle_errors
def prep(
    train: Optional[List[str]] = typer.Option(None, "--train", help="Train text file(s) (repeatable); '-' for stdin. The tokenizer is learned on train only."),
    valid: Optional[List[str]] = typer.Option(None, "--valid", help="Validation text file(s) (repeatable)."),
    test: Optional[List[str]] = typer.Option(None, "--test", help="Test text file(s) (repeatable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output data dir (default data/demo)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="word | bpe | PATH to a tokenizer.json (or data dir) to reuse: splits never grow a reused vocabulary."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="Vocabulary size incl. <eos>/<unk> (word: 0 = all words; bpe: required)."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Monolingual: the split that text on stdin becomes (default train). Parallel: NAME=PATH_PREFIX, repeatable (files PATH_PREFIX.<lang>)."),
    src_lang: Optional[str] = typer.Option(None, "--src-lang", help="Parallel text (translation): source-language suffix; files are PREFIX.<src-lang>."),
    tgt_lang: Optional[str] = typer.Option(None, "--tgt-lang", help="Parallel text (translation): target-language suffix."),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="Input encoding (default utf-8; latin-1 decodes any byte)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output dir."),
    preset: Optional[List[str]] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    print_cfg: bool = typer.Option(False, "--print-config", help="Print the resolved config as JSON and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
):
    """Tokenize text into a data dir: tokenizer.json, one binary token array per split, meta.json.

    \b
    Examples:
      lmlab prep --train train.txt --valid valid.txt --test test.txt --out data/mine
      lmlab prep --preset ptb                       # paths from the preset (LMLAB_PTB env var)
      cat new.txt | lmlab prep --tokenizer data/mine --split test --out data/new
      lmlab prep --preset multi30k-de-en             # parallel text -> joint BPE (translation)
      lmlab prep --src-lang de --tgt-lang en --split train=corpus/train --split valid=corpus/val -o data/de-en
    """
    if src_lang or tgt_lang or _preset_is_parallel(preset):
        _prep_parallel(preset, set_, src_lang, tgt_lang, split, out, vocab_size, force, quiet)
        return
    if split and len(split) > 1:
        raise LmlabError("--split takes one split name for monolingual text (NAME=PREFIX pairs need --src-lang/--tgt-lang)")
    cfg = resolve_config(PrepConfig, "prep", preset, set_, nested({
        "train": train or None, "valid": valid or None, "test": test or None, "out": out, "tokenizer": tokenizer,
        "vocab_size": vocab_size, "encoding": encoding, "force": force or None}))
    if print_cfg:
        print_config(cfg)
        return
    _check_preset_default_inputs(cfg, preset)
    splits = {name: [TextSource(p, cfg.encoding) for p in getattr(cfg, name)]
              for name in ("train", "valid", "test") if getattr(cfg, name)}
    if not splits:
        if sys.stdin.isatty():
            raise LmlabError("no input: give --train/--valid/--test files or pipe text on stdin")
        splits = {(split[0] if split else "train"): [TextSource("-", cfg.encoding)]}
    if sum(p == "-" for sources in splits.values() for p in (s.path for s in sources)) > 1:
        raise LmlabError("stdin ('-') can feed only one split")
    reporter = make_reporter(quiet)
    is_path = cfg.tokenizer not in ("word", "bpe")
    result = run_prep(cfg.out, splits, tokenizer="word" if is_path else cfg.tokenizer, vocab_size=cfg.vocab_size,
                      tokenizer_path=cfg.tokenizer if is_path else None, min_frequency=cfg.min_frequency,
                      force=cfg.force, command=sys.argv, progress=reporter.log)
    mb = result.input_bytes / 1e6
    tokens = sum(s["tokens"] for s in result.splits.values())
    reporter.log(f"wrote {result.out}: vocab {result.vocab_size:,}, "
                 + ", ".join(f"{k} {v['tokens']:,} tokens (unk {100 * v['unk_rate']:.2f}%)" for k, v in result.splits.items())
                 + f"; {mb:.1f} MB in {result.seconds:.1f} s ({tokens / max(result.seconds, 1e-9):,.0f} tokens/s)")


def _check_preset_default_inputs(cfg: PrepConfig, presets: list[str] | None) -> None:
    """A preset's own default input path (`${LMLAB_DEMO:-corpora/austen}/train.txt`) is relative to the lmlab
    repository root; run from elsewhere, say so in one line instead of a bare "does not exist"."""
    from pathlib import Path

    from lmlab.core.config import read_preset
    from lmlab.core.preset_env import VAR, env, expand_env
    parts = [p.strip() for name in presets or [] for p in name.split(",") if p.strip()]
    for split in ("train", "valid", "test"):
        for path in getattr(cfg, split):
            if path == "-" or Path(path).is_absolute() or Path(path).exists():
                continue
            for part in parts:
                table = read_preset(part).get("prep", {})
                texts = [str(t) for s in ("train", "valid", "test") for t in table.get(s, [])]
                for text in texts:
                    m = VAR.match(text)
                    if m and m.group(2) == ":-" and env(m.group(1)) is None and expand_env(text) == path:
                        files = ", ".join(Path(t).name for t in texts if t.startswith(m.group(0)))
                        raise LmlabError(f"input file {path} is not in {Path.cwd()}: preset '{part}' reads it relative to "
                                         f"the lmlab repository root; run from there, set {m.group(1)}=DIR (the directory "
                                         f"holding {files}) or pass --train/--valid/--test")


def _preset_is_parallel(presets: list[str] | None) -> bool:
    from lmlab.core.config import preset_values
    return any("src_lang" in preset_values(p.strip(), "prep", keep_unset=True) for name in presets or [] for p in name.split(",") if p.strip())


def _prep_parallel(presets, set_, src_lang, tgt_lang, split, out, vocab_size, force, quiet) -> None:
    import json

    from lmlab.cli.prep_parallel import parse_splits, run_prep_parallel
    from lmlab.core.config import parse_overrides
    overrides = parse_overrides(set_)
    flags = {"src_lang": src_lang, "tgt_lang": tgt_lang, "out_dir": out, "vocab_size": vocab_size, "force": True if force else None}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if split:
        overrides["splits"] = parse_splits(split)
    presets = [p.strip() for name in presets or [] for p in name.split(",") if p.strip()]
    meta = run_prep_parallel([p for p in presets if _has_prep(p)], overrides, quiet)
    print(json.dumps({"vocab_size": meta["vocab_size"], "splits": meta["splits"]}), file=sys.stderr if quiet else sys.stdout)


def _has_prep(preset: str) -> bool:
    from lmlab.core.config import read_preset
    return "prep" in read_preset(preset)
