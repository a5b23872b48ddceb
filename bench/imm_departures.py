"""Measured rows for the IMM departures from the official code (docs/imm.md) that need no training run:

- 6, the KN bigram: lmlab counts an end-of-line token before the stream, the official the bare stream; both are
  built on the data dir's training split and scored on validation and test. And lmlab gives a word never seen as a
  continuation the mass of one (the formula, hence the official, gives it 0): the rows count such words and the
  p_cont mass they get. (The official's unused `<_>` token has no count, so it changes no other word's P̂.)
- 2, the validation windows: the official validates on windows 1 .. n-1 of the (batch x 35) layout, from a zero
  state at window 1 (it never runs window 0 and drops the last partial one); lmlab's validation scores every window
  from window 0 with the state carried. For each run dir given, its best checkpoint's validation ppl both ways.
- 8, the final test perplexity: the official scores the test set as one stream (batch 1 x unroll 1); `eval-ppl`'s
  default reads 10 segments in parallel, each after the first warmed up on the 35 tokens before it. For each run dir
  given, RUN/eval-test.json (the default) is set beside RUN/eval-test-b1.json (`eval-ppl --batch-size 1`).

    python bench/imm_departures.py --data data/ptb data/ptb-quarter --runs runs/imm-ptb-cpu/dropout-s3 [...] --json out.json

Prints Markdown; --json writes the same rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmlab.core.data import DataDir
from lmlab.core.evaluate import batchify, eval_recurrent
from lmlab.core.generate import load_lm
from lmlab.core.imm.kn_bigram import KNBigram


def kn_rows(data_dir: str) -> list[dict]:
    data = DataDir(data_dir)
    train = np.asarray(data.split("train"))
    ours = KNBigram.from_tokens(train, data.vocab_size, start=data.eos_id)
    bare = KNBigram.from_tokens(train, data.vocab_size)  # the official: no history for the stream's first word
    rows = []
    for split in ("valid", "test"):
        stream = np.asarray(data.split(split))
        lmlab, official = ours.perplexity(stream), bare.perplexity(stream)
        rows.append({"departure": 6, "what": f"{data_dir}: KN bigram {split} ppl: end-of-line before the stream (lmlab) vs bare "
                     f"stream (official)", "lmlab": lmlab, "official": official, "difference": lmlab - official})
    # words never seen as a continuation: P̂ = 0 under the formula (the official), 1/N1+(••) each by lmlab's edge rule
    seen = np.bincount(ours.cols, minlength=data.vocab_size) > 0
    unseen = np.flatnonzero(~seen)
    valid = np.asarray(data.split("valid"))
    rows.append({"departure": 6, "what": f"{data_dir}: words never seen as a continuation in train "
                 f"({unseen.size:,} words, {int(np.isin(valid, unseen).sum()):,} valid tokens): their total p_cont (lmlab's edge rule vs the formula)",
                 "lmlab": float(ours.p_cont[unseen].sum()), "official": 0.0, "difference": float(ours.p_cont[unseen].sum()),
                 "words": int(unseen.size)})
    return rows


def eval_rows(runs: list[str]) -> list[dict]:
    rows = []
    for run in runs:
        ours = json.loads((Path(run) / "eval-test.json").read_text())
        single = json.loads((Path(run) / "eval-test-b1.json").read_text())
        rows.append({"departure": 8, "what": f"{run} test ppl: {ours['streams']} segments, {ours['burn_in_tokens']}-token "
                     f"burn-in (lmlab default) vs one stream (official)", "lmlab": ours["ppl"],
                     "official": single["ppl"], "difference": ours["ppl"] - single["ppl"]})
    return rows


def official_windows_ppl(model, stream: np.ndarray, columns: int, bptt: int) -> float:
    """exp(mean nll) over windows 1 .. n-1 of `columns` rows x `bptt` steps, n = (row length - 1) // bptt full
    windows, the state zero at window 1: the official code's validation loop (departure 2). Each row cut to those
    windows is a stream of its own that eval_recurrent reads from a zero state."""
    rows = batchify(stream, columns)
    windows = (rows.size(1) - 1) // bptt
    kept = rows[:, bptt:windows * bptt + 1]  # inputs of windows 1 .. n-1 and the last one's final target
    return eval_recurrent(model, kept.reshape(-1).numpy(), columns=columns, bptt=bptt)["ppl"]


def window_rows(runs: list[str]) -> list[dict]:
    rows = []
    for run in runs:
        model, _, info = load_lm(Path(run) / "checkpoints" / "best.pt")
        data_cfg = info["config"]["data"]
        columns, bptt = int(data_cfg["eval_batch_size"]), int(data_cfg["bptt"])
        valid = np.asarray(DataDir(data_cfg["dir"]).split("valid"))
        ours = eval_recurrent(model, valid, columns=columns, bptt=bptt)["ppl"]
        official = official_windows_ppl(model, valid, columns, bptt)
        rows.append({"departure": 2, "what": f"{run} best valid ppl: every window from window 0 (lmlab) vs windows "
                     f"1..n-1 from a zero state (official), {columns} x {bptt}", "lmlab": ours, "official": official,
                     "difference": ours - official})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="prepped data dirs (each train split counts a bigram)")
    ap.add_argument("--runs", nargs="*", default=[], help="run dirs holding eval-test.json and eval-test-b1.json")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    rows = [r for d in args.data for r in kn_rows(d)] + window_rows(args.runs) + eval_rows(args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print("| departure | measured | lmlab | official | lmlab − official |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['departure']} | {r['what']} | {r['lmlab']:.4g} | {r['official']:.4g} | {r['difference']:+.3g} |")


if __name__ == "__main__":
    main()
