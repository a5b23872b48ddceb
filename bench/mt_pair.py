"""Two translation systems read back side by side (the layout of `make mt-multi30k-de-en`): parameters, training
length, best validation perplexity, test BLEU and chrF of best.pt and of the averaged checkpoint, and sacrebleu's
paired bootstrap p-values of the second system against the first. Prints Markdown; --json writes the same numbers.

    python bench/mt_pair.py runs/multi30k-de-en runs/multi30k-de-en-define --names standard define \
        --paired runs/multi30k-de-en-define/paired.json [--json out.json]

Each RUN needs RUN.train.json (train-lm's summary), RUN/test.bleu.json (the averaged checkpoint's test scores),
RUN/test-best.bleu.json (best.pt's) and RUN/checkpoints/average.json (`lmlab average`'s line: the updates averaged).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmlab.core.plot import read_metrics
from lmlab.core.records import load_json


def _read(path: Path):
    if not path.is_file():
        raise SystemExit(f"mt_pair: {path} not found (has the pipeline run?)")
    return load_json(path)  # a JSON file, or a command's stdout: its last JSON line


def scores(path: Path) -> dict[str, float]:
    """{"BLEU": .., "chrF2": ..} from `lmlab bleu --json` (one object, or a list of them)."""
    data = _read(path)
    return {d["name"]: d["score"] for d in (data if isinstance(data, list) else [data])}


def train_wall_s(run: Path, summary: dict) -> float:
    """The run's training wall time: the summary's, or (summaries written before it had one) the sum over the
    run's processes of the last `elapsed_s` each logged in metrics.jsonl (a resume restarts the clock)."""
    if summary.get("wall_s") is not None:
        return summary["wall_s"]
    elapsed = [r["elapsed_s"] for r in read_metrics(run) if r.get("elapsed_s") is not None]
    return sum(a for a, b in zip(elapsed, elapsed[1:] + [0.0]) if b < a)


def system(run: Path) -> dict:
    train = _read(run.with_name(run.name + ".train.json"))
    averaged = _read(run / "checkpoints" / "average.json")
    return {"params": train["params"], "embedding_params": train["embedding_params"], "updates": train["step"],
            "best_valid_ppl": train["best_valid_ppl"], "train_wall_s": train_wall_s(run, train),
            "averaged_updates": [x["step"] for x in averaged["averaged_from"]],
            "test_best": scores(run / "test-best.bleu.json"), "test_average": scores(run / "test.bleu.json")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs=2, help="baseline run dir, then the other system's")
    ap.add_argument("--names", nargs=2, default=["standard", "define"])
    ap.add_argument("--paired", type=Path, required=True, help="`lmlab bleu --paired-bs --json` of the averaged checkpoints")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    systems = {name: system(run) for name, run in zip(args.names, args.runs)}
    paired = _read(args.paired)
    other = next(s for s in paired["systems"] if not s["baseline"])
    base, mine = (systems[n] for n in args.names)
    out = {"systems": systems, "paired_bootstrap": {"n_samples": paired["n_samples"], "seed": paired["seed"],
                                                    "signatures": paired["signatures"],
                                                    "p_value": {m: other[m]["p_value"] for m in paired["signatures"]}}}
    lines = ["| system | parameters | embedding | updates | training wall | best valid ppl | BLEU best.pt | BLEU averaged | "
             "chrF2 averaged |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in systems.items():
        lines.append(f"| {name} | {s['params']:,} | {s['embedding_params']:,} | {s['updates']:,} | {s['train_wall_s'] / 60:.0f} min | "
                     f"{s['best_valid_ppl']:.2f} | {s['test_best']['BLEU']:.2f} | **{s['test_average']['BLEU']:.2f}** | "
                     f"{s['test_average']['chrF2']:.2f} |")
    saving = 1 - mine["embedding_params"] / base["embedding_params"]
    p = out["paired_bootstrap"]["p_value"]
    print(f"Test set, beam search; 'averaged' is the average of the checkpoints at updates "
          f"{', '.join(map(str, base['averaged_updates']))} ({args.names[0]}) and "
          f"{', '.join(map(str, mine['averaged_updates']))} ({args.names[1]}).\n")
    print("\n".join(lines))
    print(f"\n{args.names[1]} - {args.names[0]} (averaged): BLEU {mine['test_average']['BLEU'] - base['test_average']['BLEU']:+.2f} "
          f"(paired bootstrap p = {p['BLEU']:.4f}), chrF2 {mine['test_average']['chrF2'] - base['test_average']['chrF2']:+.2f} "
          f"(p = {p['chrF2']:.4f}); {paired['n_samples']:,} resamples. {args.names[1]}'s embedding has "
          f"{saving:.0%} fewer parameters.")
    out["embedding_saving"] = saving
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
