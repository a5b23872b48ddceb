"""The figures of docs/reliability.md (written by the reliability tests) as one JSON object on stdout: the metrics
of results/reliability-doc.json, which docs/results.md summarises (`make reliability-doc` runs this).

    python pipelines/reliability_record.py docs/reliability.md > runs/reliability.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def blocks(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r"<!-- BEGIN ([\w-]+) -->\n(.*?)<!-- END \1 -->", text, re.S)}


def table(block: str) -> list[dict[str, str]]:
    lines = [l for l in block.splitlines() if l.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in l.strip("|").split("|")))) for l in lines[2:]]


def summary(text: str) -> dict:
    b = blocks(text)
    passed, rows = map(int, re.search(r"(\d+)/(\d+) rows pass", b["matrix"]).groups())
    kills = {}
    for name, key in (("kill-train-lm", "train-lm"), ("kill-train-lm-imm", "train-lm imm"),
                      ("kill-train-ebm-residual", "train-ebm residual"),
                      ("kill-train-ebm-gebm", "train-ebm gebm")):
        kills[key] = json.loads(re.search(r"```json\n(.*?)```", b[name], re.S)[1])
    signals = table(b["signals"])
    seconds = [float(r["seconds from signal to exit"]) for r in signals]
    dead = [float(r["seconds from the kill to the job's exit"]) for r in table(b["dead-rank"])]
    diff = re.search(r"= \*\*([\d.e+-]+) nats\*\*", b["torchrun-equivalence"])[1]
    stamps = sorted(set(re.findall(r"^_(\d{4}-\d\d-\d\d), ([^_]*)_$", text, re.M)))
    return {"matrix_pass": passed, "matrix_rows": rows, "kills": kills,
            "signals": {"exit_codes": sorted({int(r["exit code"]) for r in signals}),
                        "seconds_min": min(seconds), "seconds_max": max(seconds)},
            "dead_rank_seconds_min": min(dead), "dead_rank_seconds_max": max(dead),
            "torchrun_max_loss_diff_nats": float(diff), "blocks_written": [", ".join(s) for s in stamps]}


if __name__ == "__main__":
    print(json.dumps(summary(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reliability.md").read_text(encoding="utf-8"))))
