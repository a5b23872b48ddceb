"""A short learning-rate sweep read back: for each arm, the validation perplexity each learning rate reached at the
end of the same short budget, and the pick (the lowest). Runs are RUNS/<arm>-lr<lr> (the layout of
`make define-ptb-cpu-lr-sweep`); prints Markdown, --json writes the same numbers.

    python bench/lr_sweep.py runs/define-ptb-cpu/sweep --arms standard define --lrs 0.5 1 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lmlab.core.errors import LmlabError
from lmlab.core.plot import read_metrics


def last_valid_ppl(run: Path) -> tuple[int, float]:
    """(update, validation perplexity) of the run's last evaluation."""
    try:
        rows = read_metrics(run)
    except LmlabError as exc:
        raise SystemExit(f"lr_sweep: {exc} (has the sweep run?)") from None
    valid = [(r["step"], r["valid_ppl"]) for r in rows if r.get("valid_ppl") is not None]
    if not valid:
        raise SystemExit(f"lr_sweep: {run / 'metrics.jsonl'} has no validation record")
    return valid[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--arms", nargs="+", required=True)
    ap.add_argument("--lrs", nargs="+", required=True, help="the learning rates as the run dirs spell them")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out: dict = {"arms": {}}
    lines = ["| arm | " + " | ".join(f"lr {lr}" for lr in args.lrs) + " | pick |", "|---|" + "---:|" * (len(args.lrs) + 1)]
    for arm in args.arms:
        reached = {lr: last_valid_ppl(args.runs / f"{arm}-lr{lr}") for lr in args.lrs}
        steps = {step for step, _ in reached.values()}
        if len(steps) != 1:
            raise SystemExit(f"lr_sweep: {arm}'s runs ended their budgets at different updates {sorted(steps)}")
        finite = {lr: ppl for lr, (_, ppl) in reached.items() if math.isfinite(ppl)}
        pick = min(finite, key=finite.get) if finite else None
        out["arms"][arm] = {"valid_ppl": {lr: ppl if math.isfinite(ppl) else None for lr, (_, ppl) in reached.items()},
                            "update": steps.pop(), "pick": pick}  # None: diverged
        cells = [f"**{ppl:.1f}**" if lr == pick else f"{ppl:.1f}" for lr, (_, ppl) in reached.items()]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {pick} |")
    update = next(iter(out["arms"].values()))["update"]
    print(f"Validation perplexity after {update:,} updates (seed 1), per learning rate; the pick is the lowest.\n")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
