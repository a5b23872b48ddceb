"""Corpus BLEU / chrF / TER through sacrebleu's Python API (Post 2018), never a re-implementation.

References are a list of streams (one list of lines per reference file), as sacrebleu expects. The
defaults are sacrebleu's command line's: `lowercase` is BLEU's -lc only, chrF is case-sensitive unless
`chrf_lowercase`, TER is case-insensitive unless `ter_case_sensitive`; lines lose trailing whitespace.
Confidence intervals (bootstrap, one system) and paired bootstrap tests (a baseline against other
systems) are sacrebleu's own, with its fixed seed (SACREBLEU_SEED, default 12345).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmlab.core.errors import LmlabError

METRICS = ("bleu", "chrf", "ter")
TOKENIZERS = ("13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "none", "flores101", "flores200", "spm")
_TOKENIZED = re.compile(r" [.,;:!?)](?: |$)|\( |@@ | &apos;| &quot;| n't\b")


def read_lines(path: str | Path | None, text: str | None = None, what: str = "file") -> list[str]:
    """Lines of a UTF-8 file (or of `text`), without line ends; one LmlabError line on any problem."""
    if text is None:
        p = Path(path)
        if not p.exists() or p.is_dir():  # pipes such as <(...) and /dev/stdin are fine
            raise LmlabError(f"{what} {p} does not exist" if not p.exists() else f"{what} {p} is a directory")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LmlabError(f"{what} {p} is not UTF-8 (byte {exc.start}); convert it with iconv -t utf-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip() for line in lines]  # as sacrebleu's CLI reads files


def looks_tokenized(lines: list[str], threshold: float = 0.2) -> bool:
    """True when many lines have spaces before punctuation, Moses escapes or "@@ " BPE joints: BLEU
    on such text is not comparable with published (detokenized, sacrebleu) scores."""
    if not lines:
        return False
    hits = sum(1 for line in lines if _TOKENIZED.search(line))
    return hits / len(lines) >= threshold


def _metric(name: str, tokenize: str | None, lowercase: bool, chrf_lowercase: bool = False,
            ter_case_sensitive: bool = False, references: list[list[str]] | None = None):
    """A sacrebleu metric object; `references` are cached in it (then score with references=None)."""
    import sacrebleu.metrics as m
    if name == "bleu":
        return m.BLEU(tokenize=tokenize, lowercase=lowercase, references=references)
    if name == "chrf":
        return m.CHRF(lowercase=chrf_lowercase, references=references)
    if name == "ter":
        return m.TER(case_sensitive=ter_case_sensitive, references=references)
    raise LmlabError(f"--metrics: unknown metric '{name}' (known: {', '.join(METRICS)})")


def _check_inputs(hyps: list[str], refs: list[list[str]], tokenize: str | None, what: str = "the hypotheses") -> None:
    if not hyps:
        raise LmlabError(f"{what} contain no sentence: nothing to score")
    for i, ref in enumerate(refs):
        if len(ref) != len(hyps):
            raise LmlabError(f"reference {i + 1} has {len(ref)} lines but {what} have {len(hyps)}; "
                             "they must align line by line")
    if tokenize is not None and tokenize not in TOKENIZERS:
        raise LmlabError(f"--tokenize {tokenize!r}: expected one of {', '.join(TOKENIZERS)}")


def corpus_scores(hyps: list[str], refs: list[list[str]], metrics: tuple[str, ...] | list[str] = ("bleu",),
                  tokenize: str | None = None, lowercase: bool = False, width: int = 1, *, chrf_lowercase: bool = False,
                  ter_case_sensitive: bool = False, confidence_n: int = 0) -> dict[str, dict]:
    """{metric: {"score", "signature", "formatted", "json", ...}} for the corpus; `confidence_n` > 0 adds
    sacrebleu's bootstrap mean and 95% interval (its --confidence)."""
    _check_inputs(hyps, refs, tokenize)
    out = {}
    for name in metrics:
        metric = _metric(name, tokenize, lowercase, chrf_lowercase, ter_case_sensitive)
        score = metric.corpus_score(hyps, refs, n_bootstrap=confidence_n if confidence_n > 0 else 1)
        signature = str(metric.get_signature())
        record = {"name": score.name, "score": score.score, "signature": signature,
                  "formatted": score.format(width=width, signature=signature),
                  "json": json.loads(score.format(width=width, signature=signature, is_json=True))}
        if confidence_n > 0:
            record.update(mean=float(score._mean), ci=float(score._ci))
        if name == "bleu":
            record.update(counts=score.counts, totals=score.totals, precisions=score.precisions, bp=score.bp,
                          sys_len=score.sys_len, ref_len=score.ref_len)
        out[name] = record
    return out


def paired_bootstrap(systems: list[tuple[str, list[str]]], refs: list[list[str]], metrics: tuple[str, ...] | list[str] = ("bleu",),
                     tokenize: str | None = None, lowercase: bool = False, *, chrf_lowercase: bool = False,
                     ter_case_sensitive: bool = False, n_samples: int = 1000) -> dict:
    """sacrebleu's paired bootstrap resampling (Koehn 2004) of systems[1:] against the baseline systems[0].

    Returns {"signatures": {metric: str}, "systems": [{"system", "baseline", metric: {"score", "mean", "ci",
    "p_value"}}]}; the baseline has no p-value. Plain floats (sacrebleu's own are numpy)."""
    from sacrebleu.significance import PairedTest
    if len(systems) < 2:
        raise LmlabError("a paired test needs a baseline and at least one other system: pass -i BASELINE -i SYSTEM ...")
    for name, hyps in systems:
        _check_inputs(hyps, refs, tokenize, f"system {name}")
    # the references cached in each metric, as sacrebleu's CLI builds them (references=None below)
    objs = {name.upper(): _metric(name, tokenize, lowercase, chrf_lowercase, ter_case_sensitive, refs) for name in metrics}
    test = PairedTest(list(systems), objs, references=None, test_type="bs", n_samples=n_samples)
    sigs, scores = test()
    names = scores.pop("System")
    rows = []
    for i, system in enumerate(names):
        row = {"system": systems[i][0], "baseline": i == 0}
        for metric_name, results in scores.items():
            r = results[i]
            row[metric_name] = {"score": _float(r.score), "mean": _float(r.mean), "ci": _float(r.ci), "p_value": _float(r.p_value)}
        rows.append(row)
    return {"test": "paired bootstrap resampling", "n_samples": test.n_samples, "seed": test._seed,
            "signatures": {k: str(v) for k, v in sigs.items()}, "systems": rows}


def _float(x):
    return None if x is None else float(x)
