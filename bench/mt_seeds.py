"""Paired seeds of the Multi30k translation pair (standard vs DeFINE embedding; the layout of `make mt-multi30k-en-de-seeds`):
per seed and system the test BLEU and chrF2 of the averaged checkpoint, best.pt's BLEU and the best validation
perplexity, then each system's mean ± sd and the paired difference (DeFINE − standard) with its standard error.
The paper's MT claim (Mehta et al. 2020, Table 3: similar BLEU with fewer parameters) is read as: DeFINE no worse,
its BLEU difference above −2 paired SE. Prints Markdown; --json writes the same numbers.

    python bench/mt_seeds.py runs/mt-multi30k-en-de-seeds --seeds 1 2 [--recorded 1234=results/mt-multi30k-en-de.json]

Runs are RUNS/<system>-s<seed> (each with what bench/mt_pair.py reads). --recorded SEED=RECORD takes one more seed
from a `make mt-multi30k-*` record (its pair of systems, trained with that seed), so the single pair counts as a seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imm_paired import _f, paired, summary  # noqa: E402  (the same mean ± sd, paired SE and n/a as the LM tiers)
from mt_pair import system  # noqa: E402

# (key, label, read from mt_pair.system's dict, higher is better)
METRICS = [
    ("bleu_averaged", "BLEU averaged", lambda s: s["test_average"]["BLEU"], True),
    ("chrf2_averaged", "chrF2 averaged", lambda s: s["test_average"]["chrF2"], True),
    ("bleu_best", "BLEU best.pt", lambda s: s["test_best"]["BLEU"], True),
    ("best_valid_ppl", "best valid ppl", lambda s: s["best_valid_ppl"], False),
]
CLAIMED = ("bleu_averaged", "chrf2_averaged")  # the test-set scores the paper's claim is about


def recorded_systems(spec: str, names: list[str]) -> tuple[str, dict[str, dict], str]:
    """SEED=RECORD -> (seed, {name: mt_pair.system dict}, the record's commit)."""
    seed, sep, path = spec.partition("=")
    if not sep:
        raise SystemExit(f"mt_seeds: --recorded {spec!r}: expected SEED=results/NAME.json")
    try:
        record = json.loads(Path(path).read_text())
        systems = record["metrics"]["pair"]["systems"]
        return seed, {n: systems[n] for n in names}, record.get("commit", "unknown")
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise SystemExit(f"mt_seeds: --recorded {spec}: not a translation pair record with systems {names} ({e!r})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="the tier's dir: RUNS/<system>-s<seed>")
    ap.add_argument("--seeds", nargs="*", default=[], help="seeds trained in RUNS")
    ap.add_argument("--recorded", action="append", default=[], metavar="SEED=RECORD",
                    help="a seed read from a `make mt-multi30k-*` record instead of run dirs (repeatable)")
    ap.add_argument("--names", nargs=2, default=["standard", "define"], help="base system, then the other")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    base, arm = args.names
    per_seed: dict[str, dict[str, dict]] = {}
    sources: dict[str, str] = {}
    for spec in args.recorded:
        seed, systems, commit = recorded_systems(spec, args.names)
        per_seed[seed] = systems
        sources[seed] = f"{spec.partition('=')[2]} (commit {commit[:7]})"
    for seed in args.seeds:
        if seed in per_seed:
            raise SystemExit(f"mt_seeds: seed {seed} is given twice")
        per_seed[seed] = {name: system(args.runs / f"{name}-s{seed}") for name in args.names}
    if len(per_seed) < 2:
        raise SystemExit("mt_seeds: give at least two seeds (--seeds and --recorded together)")
    seeds = list(per_seed)
    out: dict = {"seeds": seeds, "base": base, "arm": arm, "claim": "not-worse", "recorded": sources,
                 "embedding_params": {n: per_seed[seeds[0]][n]["embedding_params"] for n in args.names}}
    rows = []
    for key, label, read, higher_better in METRICS:
        b = [read(per_seed[s][base]) for s in seeds]
        a = [read(per_seed[s][arm]) for s in seeds]
        d = paired(b, a)
        # not worse: the difference no further on the bad side than 2 paired SE
        d["not_worse_by_2se"] = (d["mean"] > -2 * d["se"]) if higher_better else (d["mean"] < 2 * d["se"])
        d["shows_claim"] = d["not_worse_by_2se"] if key in CLAIMED else None  # None: a metric the claim is not about
        sb, sa = summary(b), summary(a)
        out[key] = {"per_seed": {s: {base: x, arm: y} for s, x, y in zip(seeds, b, a)},
                    base: sb, arm: sa, "difference": d, "higher_is_better": higher_better}
        rows += [f"| {label} | {s} | {x:.2f} | {y:.2f} | {y - x:+.2f} |" for s, x, y in zip(seeds, b, a)]
        rows.append(f"| {label} | mean ± sd | {sb['mean']:.2f} ± {_f(sb['sd'])} | {sa['mean']:.2f} ± {_f(sa['sd'])} | "
                    f"{d['mean']:+.2f} ± {_f(d['se'])} (SE) |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    for seed, source in sources.items():
        print(f"Seed {seed} (both systems) is read from {source}; its run dirs are not rerun.\n")
    print("Test set (test_2016_flickr), beam search; 'averaged' is each run's last checkpoints averaged.\n")
    print(f"| metric | seed | {base} | {arm} | {arm} − {base} |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    for key in CLAIMED:
        d, label = out[key]["difference"], next(m[1] for m in METRICS if m[0] == key)
        verdict = "shows" if d["not_worse_by_2se"] else "does not show"
        print(f"\n{label}: {arm} − {base} = {d['mean']:+.2f} ± {_f(d['se'])} (SE, {d['n']} seeds): this {verdict} the "
              f"paper's claim ({arm} no worse than {base}: the difference above −2 SE).")
    saving = 1 - out["embedding_params"][arm] / out["embedding_params"][base]
    print(f"\n{arm}'s embedding has {saving:.0%} fewer parameters ({out['embedding_params'][arm]:,} vs "
          f"{out['embedding_params'][base]:,}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
