"""lmlab bleu: corpus BLEU (and chrF/TER) of detokenized hypotheses against references, via sacrebleu,
with sacrebleu's defaults, confidence intervals and paired bootstrap tests."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from lmlab.cli.common import check_flag, handle_errors, strict_json
from lmlab.core.errors import LmlabError
from lmlab.core.seq2seq.bleu import METRICS, corpus_scores, looks_tokenized, paired_bootstrap, read_lines

SIG = "Confidence and paired tests (sacrebleu's, seed SACREBLEU_SEED=12345)"


@handle_errors
def bleu(
    refs: List[str] = typer.Argument(..., metavar="REF", help="Reference file(s), one sentence per line, aligned with the hypotheses."),
    input_: Optional[List[str]] = typer.Option(None, "--input", "-i", help="Hypotheses file (default: stdin). Repeat it with --paired-bs: the first file is the baseline."),
    metrics: str = typer.Option("bleu", "--metrics", "-m", help=f"Comma-separated metrics: {', '.join(METRICS)}."),
    tokenize: Optional[str] = typer.Option(None, "--tokenize", "-tok", help="BLEU tokenizer (sacrebleu's; default 13a)."),
    lowercase: bool = typer.Option(False, "--lowercase", "-lc", help="Case-insensitive BLEU (as sacrebleu's -lc: BLEU only)."),
    chrf_lowercase: bool = typer.Option(False, "--chrf-lowercase", help="Case-insensitive chrF (sacrebleu's flag; chrF is case-sensitive by default)."),
    ter_case_sensitive: bool = typer.Option(False, "--ter-case-sensitive", help="Case-sensitive TER (sacrebleu's flag; TER is case-insensitive by default, as TERCOM)."),
    score_only: bool = typer.Option(False, "--score-only", "-b", help="Print only the score(s) on stdout (signature on stderr)."),
    width: int = typer.Option(1, "--width", "-w", help="Decimals of printed scores (as sacrebleu's -w)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object (a list for several metrics), sacrebleu's fields."),
    confidence: bool = typer.Option(False, "--confidence", "-ci", rich_help_panel=SIG, help="Bootstrap mean and 95% confidence interval of one system's score."),
    confidence_n: int = typer.Option(1000, "--confidence-n", "-cin", rich_help_panel=SIG, help="Bootstrap resamples for --confidence."),
    paired_bs: bool = typer.Option(False, "--paired-bs", "-pbs", rich_help_panel=SIG, help="Paired bootstrap resampling: each -i system against the first (the baseline); p-values, means and 95% intervals."),
    paired_bs_n: int = typer.Option(1000, "--paired-bs-n", "-pbsn", rich_help_panel=SIG, help="Bootstrap resamples for --paired-bs."),
):
    """Score detokenized hypotheses with sacrebleu (Post 2018); the signature is always printed.

    \b
    Examples:
      lmlab bleu data/test.en < hyp.en
      lmlab bleu -i hyp.en ref1.en ref2.en --metrics bleu,chrf --json
      lmlab bleu ref.en -b < hyp.en
      lmlab bleu ref.en -i hyp.en --confidence
      lmlab bleu ref.en -i baseline.en -i system.en --paired-bs -m bleu,chrf
    """
    from lmlab.core.config import at_least
    check_flag("--width", width, at_least(0))
    check_flag("--confidence-n", confidence_n, at_least(1))
    check_flag("--paired-bs-n", paired_bs_n, at_least(1))
    names = [m.strip().lower() for m in metrics.split(",") if m.strip()]
    if not names:
        raise LmlabError("--metrics: give at least one of " + ", ".join(METRICS))
    systems = _read_systems(input_ or [])
    if len(systems) > 1 and not paired_bs:
        raise LmlabError(f"{len(systems)} --input files: pass --paired-bs to compare them with the first (the baseline), "
                         "or score one system at a time")
    if paired_bs and len(systems) < 2:
        raise LmlabError("--paired-bs compares systems: pass the baseline and at least one other, -i BASELINE -i SYSTEM")
    if paired_bs and (confidence or score_only):
        raise LmlabError(f"{'--confidence' if confidence else '--score-only'} does not apply to --paired-bs "
                         "(its table already gives each system's mean and 95% interval; --json for machine-readable output)")
    references = [read_lines(r, what="reference file") for r in refs]
    for name, hyps in systems:
        if looks_tokenized(hyps):
            where = "" if len(systems) == 1 else f" in {name}"
            print(f"lmlab: warning: the hypotheses{where} look tokenized (spaces before punctuation or '@@ ' BPE joints); "
                  "detokenize them, or the score is not comparable with published sacrebleu scores", file=sys.stderr)
    options = dict(tokenize=tokenize, lowercase=lowercase, chrf_lowercase=chrf_lowercase, ter_case_sensitive=ter_case_sensitive)
    if paired_bs:
        result = paired_bootstrap(systems, references, names, n_samples=paired_bs_n, **options)
        _print_paired(result, width, json_out)
        return
    scores = corpus_scores(systems[0][1], references, names, width=width, confidence_n=confidence_n if confidence else 0, **options)
    if json_out:
        records = [s["json"] for s in scores.values()]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=1, ensure_ascii=False))
    elif score_only:
        for s in scores.values():
            print(f"{s['score']:.{width}f}")
            print(f"{s['name']}|{s['signature']}", file=sys.stderr)
    else:
        for s in scores.values():
            print(s["formatted"])


def _read_systems(paths: list[str]) -> list[tuple[str, list[str]]]:
    """(name, lines) per hypotheses file; stdin when no file is given."""
    if not paths or paths == ["-"]:
        if sys.stdin.isatty():
            raise LmlabError("no hypotheses: pipe them on stdin or pass -i FILE")
        data = sys.stdin.buffer.read()
        try:
            return [("<stdin>", read_lines(None, data.decode("utf-8")))]
        except UnicodeDecodeError as exc:
            raise LmlabError(f"hypotheses on stdin are not UTF-8 (byte {exc.start}); convert them with iconv") from None
    if "-" in paths:
        raise LmlabError("--input -: stdin can be one system only; give the systems of a paired test as files")
    if len(set(paths)) != len(paths):
        raise LmlabError("--input: the same file given twice; each system needs its own file")
    return [(p, read_lines(p, what="hypotheses file")) for p in paths]


def _print_paired(result: dict, width: int, json_out: bool) -> None:
    rows, sigs = result["systems"], result["signatures"]
    for key in ("score", "mean", "ci"):  # printed precision, as sacrebleu's table
        for row in rows:
            for metric in sigs:
                if row[metric][key] is not None:
                    row[metric][key] = round(row[metric][key], width)
    if json_out:
        print(strict_json(result, indent=1, ensure_ascii=False))
        return
    print(f"Paired bootstrap resampling test with {result['n_samples']} resampling trials; each system against the "
          f"baseline {rows[0]['system']}. Score (bootstrap mean ± 95% CI), p-value; * = p <= 0.05.")
    cells = [["system", *sigs]]
    for row in rows:
        line = [("Baseline: " if row["baseline"] else "") + row["system"]]
        for metric in sigs:
            r = row[metric]
            cell = f"{r['score']:.{width}f} ({r['mean']:.{width}f} ± {r['ci']:.{width}f})"
            if r["p_value"] is not None:
                cell += f" p = {r['p_value']:.4f}{'*' if r['p_value'] <= 0.05 else ''}"
            line.append(cell)
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    for metric, sig in sigs.items():
        print(f"{metric}|{sig}")
