"""Beam decoding: lmlab `sample --beam` against fairseq-generate on the same weights, same sentences, same search.

    python bench/beam_vs_fairseq.py CHECKPOINT SOURCE REFERENCE [--n 1000] [--beam 5] [--rounds 3] [--warmup 1] [--work DIR]

The lmlab translation checkpoint (standard embeddings) is converted to a fairseq `transformer` checkpoint that
computes the same function (bench/fairseq_convert_mt.py says how positions and the start token are bridged);
the source is written as lmlab's own BPE pieces and binarized by fairseq-preprocess with dictionaries in lmlab's
id order. Both decode with beam K, length penalty 1, length cap 1.2·|x| + 10 and batches of 64 sentences, with
the torch threads of this machine; after `--warmup` untimed rounds the arms alternate for `--rounds` rounds and the ratio is the median of the
per-round ratios, with its min-max.

Timed: fairseq, its own generation timer (model forward and search only: no loading, no data reading);
lmlab, the whole `translate_lines_scored` call (model build, tokenization, search and detokenization), so the
ratio leans against lmlab. Two known differences in the search: fairseq caps a batch's length by its padded
source length, lmlab each sentence by its own; lmlab forbids <s> and <unk>, fairseq is given --unkpen 1e9 and
can emit <s> (a trained model does not). The record reports how many translations are identical.
JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import sacrebleu
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import load_average, median, median_ratio  # noqa: E402
from fairseq_env import find_fairseq  # noqa: E402

from lmlab.core.checkpoint import load_checkpoint  # noqa: E402
from lmlab.core.seq2seq.data import tokenizer_from_json  # noqa: E402
from lmlab.core.seq2seq.generate import translate_lines_scored  # noqa: E402
from lmlab.core.seq2seq.model import sinusoidal_positions  # noqa: E402
from lmlab.core.seq2seq.prep import decode, read_text  # noqa: E402

BATCH, LENPEN, MAX_LEN_A, MAX_LEN_B = 64, 1.0, 1.2, 10
_TIMER = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s")


def write_fairseq_data(state: dict, src_lines: list[str], ref_lines: list[str], work: Path, fairseq) -> Path:
    """lmlab's pieces as text + fairseq dictionaries in lmlab's id order -> a fairseq data-bin."""
    toks = {side: tokenizer_from_json(js) for side, js in state["tokenizers"].items()}
    raw, data_bin = work / "raw", work / "data-bin"
    raw.mkdir(parents=True, exist_ok=True)
    for side, lang, lines in (("src", "src", src_lines), ("tgt", "tgt", ref_lines)):
        tok = toks[side]
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        if any(i != rank for rank, (_, i) in enumerate(vocab)) or any(re.search(r"\s", t) for t, _ in vocab):
            raise SystemExit(f"the {side} vocabulary has gaps or pieces with spaces: it cannot be a fairseq dictionary")
        (raw / f"dict.{lang}.txt").write_text("".join(f"{t} 1\n" for t, _ in vocab[4:]))
        (raw / f"test.{lang}").write_text("".join(" ".join(e.tokens) + "\n" for e in tok.encode_batch(lines)))
    subprocess.run(fairseq.script("fairseq-preprocess") + [
        "--source-lang", "src", "--target-lang", "tgt", "--testpref", str(raw / "test"), "--destdir", str(data_bin),
        "--srcdict", str(raw / "dict.src.txt"), "--tgtdict", str(raw / "dict.tgt.txt"), "--workers", "1"],
        check=True, capture_output=True, text=True)
    return data_bin


def run_fairseq(fairseq, data_bin: Path, ckpt: Path, beam: int) -> dict:
    proc = subprocess.run(fairseq.script("fairseq-generate") + [str(data_bin), "--path", str(ckpt),
                           "--gen-subset", "test", "--source-lang", "src", "--target-lang", "tgt", "--beam", str(beam),
                           "--lenpen", str(LENPEN), "--max-len-a", str(MAX_LEN_A), "--max-len-b", str(MAX_LEN_B),
                           "--batch-size", str(BATCH), "--unkpen", "1e9", "--cpu", "--num-workers", "0"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"fairseq-generate failed: {proc.stderr.strip().splitlines()[-1][:300]}")
    m = _TIMER.search(proc.stdout + proc.stderr)
    if not m:
        raise SystemExit("fairseq-generate printed no timing line")
    hyps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("H-"):
            head, _score, pieces = (line.split("\t") + [""])[:3]
            hyps[int(head[2:])] = pieces.split()
    return {"seconds": float(m.group(3)), "sentences": int(m.group(1).replace(",", "")), "pieces": hyps}


def run_lmlab(state: dict, lines: list[str], beam: int) -> dict:
    t0 = time.perf_counter()
    out = translate_lines_scored(state, lines, beam=beam, lenpen=LENPEN, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B,
                                 sampling=False, temperature=1.0, top_k=0, top_p=1.0, batch_size=BATCH, seed=0)
    return {"seconds": time.perf_counter() - t0, "sentences": len(lines), "translations": [o["translation"] for o in out]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("source")
    ap.add_argument("reference")
    ap.add_argument("--n", type=int, default=1000, help="sentences (the first N of SOURCE)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (the first fairseq-generate run is slow)")
    ap.add_argument("--work", default="/tmp/lmlab-bench-beam")
    args = ap.parse_args()
    fairseq = find_fairseq()
    if not fairseq.available:
        raise SystemExit(f"fairseq unavailable: {fairseq.reason}")
    state = load_checkpoint(args.checkpoint, "seq2seq")
    src_lines, refs = read_text(Path(args.source))[: args.n], read_text(Path(args.reference))[: args.n]
    work = Path(args.work)
    data_bin = write_fairseq_data(state, src_lines, refs, work, fairseq)
    fs_ckpt, positions = work / "fairseq.pt", work / "positions.pt"
    model_cfg = state["config"]["model"]
    torch.save({"positions": sinusoidal_positions(model_cfg["max_positions"], model_cfg["d_model"])}, positions)
    subprocess.run([str(fairseq.python), str(Path(__file__).with_name("fairseq_convert_mt.py")), args.checkpoint,
                    str(positions), str(data_bin), "src", "tgt", str(fs_ckpt)], check=True, capture_output=True, text=True)
    for _ in range(args.warmup):
        run_lmlab(state, src_lines, args.beam), run_fairseq(fairseq, data_bin, fs_ckpt, args.beam)
    load_before = load_average()
    rounds = []
    for r in range(args.rounds):
        a = run_lmlab(state, src_lines, args.beam)
        b = run_fairseq(fairseq, data_bin, fs_ckpt, args.beam)
        rounds.append((a, b))
        print(f"round {r + 1}: lmlab {a['seconds']:.1f} s, fairseq {b['seconds']:.1f} s", file=sys.stderr)
    tgt_tok = tokenizer_from_json(state["tokenizers"]["tgt"])
    vocab = tgt_tok.get_vocab()
    a, b = rounds[-1]
    fs_text = [decode(tgt_tok, [vocab[p] for p in b["pieces"][i] if p in vocab]) for i in range(len(src_lines))]
    same = sum(x == y for x, y in zip(a["translations"], fs_text))
    speed = median_ratio([x["sentences"] / x["seconds"] for x, _ in rounds], [y["sentences"] / y["seconds"] for _, y in rounds])
    print(json.dumps({
        "checkpoint": args.checkpoint, "sentences": len(src_lines), "beam": args.beam, "batch_size": BATCH,
        "threads": torch.get_num_threads(), "rounds": args.rounds, "fairseq": fairseq.version,
        "lmlab_sentences_per_s": round(median([x["sentences"] / x["seconds"] for x, _ in rounds]), 2),
        "fairseq_sentences_per_s": round(median([y["sentences"] / y["seconds"] for _, y in rounds]), 2),
        "ratio": round(float(speed), 3), "ratio_min": round(speed.lo, 3), "ratio_max": round(speed.hi, 3),
        "identical_translations": same,
        "bleu_lmlab": round(sacrebleu.corpus_bleu(a["translations"], [refs]).score, 2),
        "bleu_fairseq": round(sacrebleu.corpus_bleu(fs_text, [refs]).score, 2),
        "load_avg_before": load_before, "load_avg_after": load_average()}))


if __name__ == "__main__":
    main()
