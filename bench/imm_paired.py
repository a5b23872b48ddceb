"""Paired seeds of a two-arm comparison (dropout-only vs + IMM): best validation perplexity of each run
(test perplexity too where RUN/eval-test.json exists), mean ± sd per arm, and the paired difference
(IMM − dropout-only) with its standard error, as Markdown, and the epochs each trained run took (its best and its
last evaluated: how long the stop rule let it run) with the arm's best up to the last epoch its base arm evaluated
(the difference that does not come from one arm training longer), and for an IMM arm its switch-on threshold and the
update each seed switched on at; --json writes the same numbers. The paper's claim is
read as: the arm's mean below the base's by more than twice the paired standard error; the output says whether the
measured seeds show it, and the paper's own figures (--paper-base/--paper-arm) are printed beside.

    python bench/imm_paired.py runs/imm-ptb-cpu --seeds 1 2 3 [--base dropout --arm imm] [--json out.json]

Runs are RUNS/<base>-s<seed> and RUNS/<arm>-s<seed> (the layout of `make imm-ptb-cpu`). --base-record takes the base
arm's figures of some seeds from an earlier record of this script's output instead (a run dir does not outlive its
session; the record does).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
from pathlib import Path

from lmlab.core.plot import read_metrics as _read_metrics


@functools.lru_cache(maxsize=None)
def read_metrics(run: Path) -> list[dict]:
    """A run's metrics rows, read once (a full-PTB run's file holds a row per update: ~80k lines)."""
    return _read_metrics(run)


def best_valid_ppl(run: Path) -> float:
    ppl = [r["valid_ppl"] for r in read_metrics(run) if r.get("valid_ppl") is not None]
    if not ppl:
        raise SystemExit(f"{run}/metrics.jsonl has no validation record yet")
    return min(ppl)


def epochs(run: Path) -> dict[str, int] | None:
    """The epoch of the best validation perplexity and the last one evaluated (how long the stop rule let it run);
    None for a run whose validation rows name no epoch."""
    rows = [r for r in read_metrics(run) if r.get("valid_ppl") is not None]
    if not rows or any(r.get("epoch") is None for r in rows):
        return None
    best = min(rows, key=lambda r: r["valid_ppl"])
    return {"best": int(best["epoch"]), "last": int(rows[-1]["epoch"])}


def best_valid_until(run: Path, epoch: int) -> float:
    """The best validation perplexity over the evaluations up to and including `epoch`."""
    return min(r["valid_ppl"] for r in read_metrics(run) if r.get("valid_ppl") is not None and r["epoch"] <= epoch)


def switch_on(run: Path) -> dict | None:
    """An IMM run's switch-on: its threshold (config.json's imm.start_below_ppl) and the first update trained with IMM
    on, with the epochs done before it (None: IMM never switched on); None for a run that is not an IMM run."""
    config = run / "config.json"
    cfg = json.loads(config.read_text()) if config.is_file() else {}
    if cfg.get("objective") != "imm":
        return None
    first = next((r for r in read_metrics(run) if r.get("imm_active") == 1.0), None)
    return {"start_below_ppl": cfg.get("imm", {}).get("start_below_ppl"),
            "step": first["step"] if first else None, "epoch": first.get("epoch") if first else None}


def test_ppl(run: Path) -> float | None:
    path = run / "eval-test.json"
    return float(json.loads(path.read_text())["ppl"]) if path.exists() else None


def _recorded(path: Path, base: str, arms: list[str], seeds: list[str], flag: str) -> dict:
    """{metric: {arm: {seed: figure}}, "commit": ...} for `arms` from an earlier record of this script's output (its
    metrics.paired, or any metrics entry of that shape naming the base arm)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"imm_paired: {flag} {path}: {e}")
    entries = [v for v in record.get("metrics", {}).values() if isinstance(v, dict) and v.get("base") == base
               and all(arm in (v.get("base"), v.get("arm")) for arm in arms)]
    if not entries:
        raise SystemExit(f"imm_paired: {flag} {path}: no paired entry of arm(s) {', '.join(arms)} with base arm '{base}'")
    # the commit each seed was trained at: the record's own, or, for seeds it read in turn from an earlier record,
    # that one's (so a chain of records keeps naming the code that trained them); one string when they agree
    earlier = entries[0].get("record") or entries[0].get("base_record") or {}

    def trained_at(seed: str):
        if seed not in earlier.get("seeds", []):
            return record.get("commit")
        commit = earlier.get("commit")
        return commit.get(seed) if isinstance(commit, dict) else commit
    commit_of = {s: trained_at(s) for s in seeds}
    commit_of = next(iter(commit_of.values())) if len(set(commit_of.values())) == 1 else commit_of
    switched = entries[0].get("switch_on") or {}
    out: dict = {"commit": commit_of, "switch_on": {s: v for s, v in switched.items() if s in seeds}}
    for metric in ("valid_ppl", "test_ppl"):
        per_seed = entries[0].get(metric, {}).get("per_seed", {})
        out[metric] = {arm: {s: per_seed[s][arm] for s in seeds if s in per_seed} for arm in arms}
    missing = [s for s in seeds if s not in out["valid_ppl"][base]]
    if missing:
        raise SystemExit(f"imm_paired: {flag} {path} holds no {'base ' if flag == '--base-record' else ''}run of seed(s) "
                         f"{' '.join(missing)}; "
                         f"it has {' '.join(entries[0].get('valid_ppl', {}).get('per_seed', {})) or 'none'}")
    return out


def summary(values: list[float]) -> dict:
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values), "sd": statistics.stdev(values) if n > 1 else None}


def paired(base: list[float], arm: list[float]) -> dict:
    d = [a - b for a, b in zip(arm, base)]
    s = summary(d)
    s["se"] = s["sd"] / math.sqrt(s["n"]) if s["sd"] is not None else None
    return s


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--seeds", nargs="+", required=True)
    ap.add_argument("--base", default="dropout")
    ap.add_argument("--base-dir", type=Path, help="where the base arm's runs are (default: RUNS), e.g. a tier that "
                    "reuses another tier's baseline runs of the same data and seeds")
    ap.add_argument("--claim", choices=("below", "not-above", "none"), default="below",
                    help="the paper's claim: below = the arm's mean under the base's by more than 2 paired SE (IMM); "
                         "not-above = the arm no worse: its mean under the base's + 2 paired SE (DeFINE: equal or better); "
                         "none = a comparison the paper makes no claim about (a control): figures without a verdict")
    ap.add_argument("--base-record", type=Path, help="a record of an earlier paired result (results/X.json) whose base "
                    "arm has the same preset, data and seeds: --recorded-seeds take their base figures from it instead "
                    "of from run dirs (run dirs do not outlive a session; records do)")
    ap.add_argument("--record", type=Path, help="an earlier record of this same tier (results/X.json): --recorded-seeds "
                    "take both arms' figures from it, so a later session adds seeds without the run dirs of the first")
    ap.add_argument("--recorded-seeds", nargs="*", default=None, help="the seeds read from --base-record or --record "
                    "(default: all)")
    ap.add_argument("--arm", default="imm")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--paper-base", type=float, help="the paper's figure for the base arm (validation perplexity)")
    ap.add_argument("--paper-arm", type=float, help="the paper's figure for the arm")
    ap.add_argument("--paper-source", default="", help="where the paper figures come from (setting, table)")
    args = ap.parse_args(argv)
    read_metrics.cache_clear()  # once per run of this script: a caller may rewrite a run's file between two
    rows, out = [], {"seeds": args.seeds, "base": args.base, "arm": args.arm, "claim": args.claim}
    if args.base_record and args.record:
        raise SystemExit("imm_paired: --base-record (the base arm only) and --record (both arms): give one")
    source, flag = (args.base_record, "--base-record") if args.base_record else (args.record, "--record")
    source_key = "base_record" if args.base_record else "record"  # where the JSON names the record read
    recorded = set(args.seeds if args.recorded_seeds is None else args.recorded_seeds) if source else set()
    recorded_switch_on: dict = {}
    from_record = {args.base} | ({args.arm} if args.record else set())
    if source:
        in_record = _recorded(source, args.base, sorted(from_record), sorted(recorded), flag)
        out[source_key] = {"path": str(source), "commit": in_record.pop("commit"), "seeds": sorted(recorded)}
        recorded_switch_on = in_record.pop("switch_on") if args.record else {}  # the arm's, when it is read too

    def figure(metric, read, arm, runs, s):
        return in_record[metric][arm].get(s) if s in recorded and arm in from_record else read(runs / f"{arm}-s{s}")

    for metric, read in (("valid_ppl", best_valid_ppl), ("test_ppl", test_ppl)):
        base = [figure(metric, read, args.base, args.base_dir or args.runs, s) for s in args.seeds]
        arm = [figure(metric, read, args.arm, args.runs, s) for s in args.seeds]
        if any(v is None for v in base + arm):
            continue
        out[metric] = {"per_seed": {s: {args.base: b, args.arm: a} for s, b, a in zip(args.seeds, base, arm)},
                       args.base: summary(base), args.arm: summary(arm), "difference": paired(base, arm)}
        d = out[metric]["difference"]
        d["below_by_2se"] = d["se"] is not None and d["mean"] < -2 * d["se"]
        d["not_above_by_2se"] = d["se"] is not None and d["mean"] < 2 * d["se"]
        # these seeds; None where the claim is not tested (--claim none) or cannot be (one seed: no standard error)
        d["shows_claim"] = None if d["se"] is None else {"below": d["below_by_2se"], "not-above": d["not_above_by_2se"]}.get(args.claim)
        for s, b, a in zip(args.seeds, base, arm):
            rows.append(f"| {metric} | {s} | {b:.2f} | {a:.2f} | {a - b:+.2f} |")
        sb, sa, d = summary(base), summary(arm), out[metric]["difference"]
        rows.append(f"| {metric} | mean ± sd | {sb['mean']:.2f} ± {_f(sb['sd'])} | {sa['mean']:.2f} ± {_f(sa['sd'])} | "
                    f"{d['mean']:+.2f} ± {_f(d['se'])} (SE) |")
    trained = [s for s in args.seeds if s not in recorded]
    if trained:
        dirs = {args.base: args.base_dir or args.runs, args.arm: args.runs}
        read = {s: {arm: epochs(dirs[arm] / f"{arm}-s{s}") for arm in dirs} for s in trained}
        if all(e is not None for arms in read.values() for e in arms.values()):
            out["epochs"] = read
            # the arm cut where its base arm stopped: what of the difference does not come from training longer
            base_best = {s: out["valid_ppl"]["per_seed"][s][args.base] for s in trained}
            cut = {s: best_valid_until(dirs[args.arm] / f"{args.arm}-s{s}", read[s][args.base]["last"]) for s in trained}
            out["valid_ppl_arm_cut_at_base_last_epoch"] = {
                "per_seed": cut, "difference": paired([base_best[s] for s in trained], [cut[s] for s in trained])}
    switched = {s: on for s in args.seeds if (on := (recorded_switch_on.get(s) if s in recorded and args.record else
                                                       switch_on(args.runs / f"{args.arm}-s{s}"))) is not None}
    if switched:  # the IMM arm's threshold and when each seed crossed it (the record's command does not say)
        out["switch_on"] = switched
    if recorded:
        commit_of = out[source_key]["commit"]
        if not isinstance(commit_of, dict):
            commit_of = dict.fromkeys(recorded, commit_of)
        by_commit: dict[str, list[str]] = {}
        for s_ in sorted(recorded):
            by_commit.setdefault((commit_of.get(s_) or "unknown")[:7], []).append(s_)
        commit = "; ".join(f"{c}" if len(by_commit) == 1 else f"{' '.join(ss)} at {c}" for c, ss in by_commit.items())
        arms, verb = (f"The {args.base} arm", "is") if args.base_record else (f"Both arms ({args.base}, {args.arm})", "are")
        print(f"{arms} of seed(s) {' '.join(sorted(recorded))} {verb} read from {source} (trained at commit {commit}; "
              f"{'its' if args.base_record else 'their'} run dirs are not rerun).\n")
    print(f"| metric | seed | {args.base} | {args.arm} | {args.arm} − {args.base} |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    if "epochs" in out:  # how long each run trained: the stop rule's doing, read beside the figures
        cells = ["; ".join(f"{arm} {e['best']} / {e['last']}" for arm, e in out["epochs"][s].items()) for s in out["epochs"]]
        print("\nEpochs, best / last evaluated: " + "; ".join(f"seed {s}: {c}" for s, c in zip(out["epochs"], cells)) + ".")
        cut = out["valid_ppl_arm_cut_at_base_last_epoch"]
        per_seed = "; ".join(f"seed {s}: {v:.2f} ({v - out['valid_ppl']['per_seed'][s][args.base]:+.2f})"
                             for s, v in cut["per_seed"].items())
        d = cut["difference"]
        print(f"\nThe {args.arm} arm's best valid_ppl up to the last epoch its {args.base} arm evaluated: {per_seed}; "
              f"{args.arm} − {args.base} = {d['mean']:+.2f} ± {_f(d['se'])} (SE, {_seeds(d['n'])}).")
    if "switch_on" in out:
        thresholds = sorted({f"{on['start_below_ppl']:g}" for on in out["switch_on"].values()
                             if on["start_below_ppl"] is not None})
        when = "; ".join(f"seed {s}: " + ("never" if on["step"] is None else f"from update {on['step']:,}"
                                           + (f" ({on['epoch']} epochs done)" if on["epoch"] is not None else ""))
                         for s, on in out["switch_on"].items())
        print(f"\nThe {args.arm} arm switched IMM on below validation perplexity {' / '.join(thresholds) or '?'}: {when}.")
    for metric in ("valid_ppl", "test_ppl"):
        if metric in out and args.claim == "none":
            d = out[metric]["difference"]
            print(f"\n{metric}: {args.arm} − {args.base} = {d['mean']:+.2f} ± {_f(d['se'])} (SE, {_seeds(d['n'])}).")
        elif metric in out:
            d = out[metric]["difference"]
            verdict = ("cannot test (one seed has no standard error)" if d["shows_claim"] is None else
                       "shows" if d["shows_claim"] else "does not show")
            claim = (f"{args.arm} below {args.base} by more than 2 SE" if args.claim == "below" else
                     f"{args.arm} no worse than {args.base}: the difference below +2 SE")
            print(f"\n{metric}: {args.arm} − {args.base} = {d['mean']:+.2f} ± {_f(d['se'])} (SE, {_seeds(d['n'])}): this "
                  f"{verdict} the paper's claim ({claim}).")
    if args.paper_base is not None and args.paper_arm is not None:
        out["paper"] = {args.base: args.paper_base, args.arm: args.paper_arm, "source": args.paper_source}
        print(f"\nPaper ({args.paper_source}): {args.base} {args.paper_base:g}, {args.arm} {args.paper_arm:g} "
              f"({args.paper_arm - args.paper_base:+g}).")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
