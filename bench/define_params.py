"""Parameter counts of each DeFINE preset beside the paper's (Mehta et al., ICLR 2020, Tables 1-3).

Models are built on the meta device (no memory, no data needed), so WikiText-103's 267k vocabulary
costs nothing. Columns split the count as the paper's tables do: the DeFINE unit (without its map),
the context model, input-output (map + output layer, a tied table once) and the total; then the
same context model with a standard V x d_model table + tied full softmax, and with an adaptive input
at d_model + tied adaptive softmax. The translation preset is counted with core/seq2seq's model.
Usage: python bench/define_params.py [--markdown]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

from lmlab.core.config import resolve
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.lm import count_parameters
from lmlab.core.train.config import TrainConfig

# (preset chain, vocabulary size of its data, the paper's DeFINE unit and total in millions or None):
# PTB 10,000; WikiText-103 267,735; demo 9,996 (data/demo/meta.json)
PRESETS = [
    ("awd-lstm-ptb,awd-lstm-define-ptb", 10000, None, 20.0),
    ("demo,demo-define", 9996, None, None),
    ("lstm-define-wt103-n256", 267735, 0.41, 33.02),
    ("lstm-define-wt103-n384", 267735, 1.83, 40.46),
    ("lstm-define-wt103-n512", 267735, 3.89, 48.69),
    ("transformer-xl-define-wt103", 267735, 1.92, 107.37),
    ("transformer-base-define-wt103", 267735, None, None),
]
WMT = ("wmt14-en-de-define", 32000, None, 68.0)  # the presets' joint BPE vocabulary


def variant(model, kind: str):
    m = copy.deepcopy(model)
    if kind != "define":
        m.lstm.last_hidden_size = 0  # the last layer emits d_model, the width of these tables
    if kind == "standard":
        m.embedding.kind, m.embedding.dim = "standard", 0
        m.output.kind, m.output.tie = "linear", True
    elif kind == "adaptive":
        m.embedding.kind, m.embedding.dim = "adaptive", 0
        m.output.kind, m.output.tie = "adaptive", True
    return m


def count(model, vocab: int) -> dict[str, int]:
    with torch.device("meta"):
        lm = build_language_model(model, vocab)
    total, body, embed = count_parameters(lm), count_parameters(lm.body), count_parameters(lm.embed)
    unit = embed - count_parameters(lm.embed.adaptive_input) if hasattr(lm.embed, "adaptive_input") else 0
    return {"embedding": embed, "total": total, "body": body, "unit": unit, "io": total - body - unit}


def count_translation(chain: str, vocab: int) -> dict[str, int]:
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.model import build_seq2seq
    cfg = resolve(Config, "train-lm", [chain])
    with torch.device("meta"):
        model = build_seq2seq(cfg.model, vocab, vocab)
    body = sum(count_parameters(m) for m in (model.encoder, model.decoder))
    units = {id(e): e for e in (model.src_embed, model.tgt_embed)}.values()
    unit = sum(count_parameters(e) - count_parameters(e.adaptive_input) for e in units)
    total = count_parameters(model)
    return {"total": total, "body": body, "unit": unit, "io": total - body - unit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table instead of JSON lines")
    args = ap.parse_args()
    rows = []
    for chain, vocab, paper_unit, paper_total in PRESETS:
        cfg = resolve(TrainConfig, "train-lm", [chain])
        row = {"preset": chain, "vocab": vocab, "paper_unit": paper_unit, "paper_total": paper_total}
        for kind in ("standard", "adaptive", "define"):
            row[kind] = count(variant(cfg.model, kind), vocab)
        rows.append(row)
    chain, vocab, paper_unit, paper_total = WMT
    rows.append({"preset": chain, "vocab": vocab, "paper_unit": paper_unit, "paper_total": paper_total,
                 "define": count_translation(chain, vocab)})
    if not args.markdown:
        for row in rows:
            print(json.dumps(row))
        return
    m = lambda n: f"{n / 1e6:.2f}M" if n is not None else "-"  # noqa: E731
    print("| preset | V | DeFINE unit (paper) | context model | input-output | total | paper total | difference "
          "| total, standard | total, adaptive |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["define"]
        paper_unit = f" ({r['paper_unit']:.2f}M)" if r["paper_unit"] else ""
        paper = f"{r['paper_total']:.2f}M" if r["paper_total"] else "-"
        diff = f"{100 * (d['total'] / 1e6 / r['paper_total'] - 1):+.1f}%" if r["paper_total"] else "-"
        other = [m(r[k]["total"]) if k in r else "-" for k in ("standard", "adaptive")]
        print(f"| {r['preset']} | {r['vocab']:,} | {m(d['unit'])}{paper_unit} | {m(d['body'])} | {m(d['io'])} | "
              f"{m(d['total'])} | {paper} | {diff} | {other[0]} | {other[1]} |")


if __name__ == "__main__":
    sys.exit(main())
