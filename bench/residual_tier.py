"""The residual EBM CPU tier's table (issue #18): base LM, BALM and the joint models (UniT, BiT) on the same test
windows, with lower/upper estimates per n, each joint model's per-window paired gain over the base LM with its
standard error, the gain by position (figure), generation quality (distinct-n, repetition, classifier) and Algorithm
1's cost (time against one base-LM sampling pass, peak memory as the number of prompts grows).

    python bench/residual_tier.py --joint unit=runs/residual-ptb-cpu/unit/eval-test.json \
        --joint bit=runs/residual-ptb-cpu/bit/eval-test.json --lm balm=runs/residual-ptb-cpu/balm/eval-windows.json \
        --quality unit=runs/residual-ptb-cpu/unit/quality.json --generation unit=runs/residual-ptb-cpu/unit/generation.json \
        --figure docs/figures/residual-ptb-cpu.png \
        --json runs/residual-ptb-cpu/summary.json

Prints Markdown (the record's text); --json writes the same figures. The paper's claim is joint < base LM; it is
read here as: the joint model's mean per-window gain at the largest n above zero by more than twice its SE, with the
upper (conservative) estimate's perplexity below the base LM's.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PAPER = ("Deng et al., ICLR 2020, Table 1: the joint models' perplexity below the base LM's (and below BALM's and "
         "RALM's) on CC-News and Toronto Books; figures beside ours in docs/residual.md, 'Paper vs here'")


def pairs(items: list[str], flag: str) -> dict[str, dict]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {item!r}: expected NAME=FILE")
        out[name] = json.loads(Path(path).read_text())
    return out


def fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def nce_fit(run: Path) -> dict:
    """Training-batch NCE loss over the last tenth of the updates against the best validation loss."""
    from lmlab.core.plot import read_metrics
    rows = read_metrics(run)
    train = [(r["step"], r["train_loss_nats"]) for r in rows if r.get("train_loss_nats") is not None]
    valid = [(r["step"], r["valid_loss_nats"]) for r in rows if r.get("valid_loss_nats") is not None]
    if not train or not valid:
        raise SystemExit(f"{run}: no NCE training or validation rows in metrics.jsonl")
    last = max(s for s, _ in train)
    tail = [v for s, v in train if s > 0.9 * last]
    best_step, best = min(valid, key=lambda sv: sv[1])
    mlm = [(r["mlm_step"], r["mlm_loss_nats"]) for r in rows if r.get("mlm_loss_nats") is not None]
    return {"updates": last, "train_loss_last_tenth": sum(tail) / len(tail), "best_valid_loss": best,
            "best_valid_step": best_step, "first_valid_loss": valid[0][1], "chance_loss": 2 * math.log(2),
            "mlm_updates": mlm[-1][0] if mlm else 0, "mlm_loss_last": mlm[-1][1] if mlm else None}


def fit_lines(a, first: dict, summary: dict) -> list[str]:
    lines = []
    if a.base_train:
        train = json.loads(Path(a.base_train).read_text())
        summary["base_lm_train_windows_ppl"] = train["ppl"]
        lines += [f"The base LM's fit of the energies' training text: perplexity {fmt(train['ppl'])} on "
                  f"{train['examples']} training windows against {fmt(first['base_lm']['ppl'])} on the test windows.", ""]
    if a.run:
        lines += ["NCE loss (nats; chance 2 ln 2 = 1.386): training batches over the last tenth of the updates against "
                  "the best validation evaluation (the checkpoint scored above):", "",
                  "| energy | updates | train, last tenth | first valid | best valid (update) | MLM pre-training: "
                  "updates, last logged loss (nats per masked token) |", "|---|---|---|---|---|---|"]
        summary["nce_fit"] = {}
        for item in a.run:
            name, _, run = item.partition("=")
            fit = summary["nce_fit"][name] = nce_fit(Path(run))
            lines.append(f"| {name} | {fit['updates']} | {fmt(fit['train_loss_last_tenth'], 4)} | "
                         f"{fmt(fit['first_valid_loss'], 4)} | {fmt(fit['best_valid_loss'], 4)} ({fit['best_valid_step']}) | "
                         + (f"{fit['mlm_updates']}, {fmt(fit['mlm_loss_last'], 3)} |" if fit["mlm_updates"] else "none |"))
        lines.append("")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--joint", action="append", help="NAME=eval-ppl JSON of a residual checkpoint")
    p.add_argument("--lm", action="append", help="NAME=eval-ppl --windows JSON of a baseline LM")
    p.add_argument("--quality", action="append", help="NAME=python -m lmlab.core.residual.quality JSON")
    p.add_argument("--generation", action="append", help="NAME=bench/residual_generation.py JSON (Algorithm 1 cost, memory)")
    p.add_argument("--run", action="append", help="NAME=energy run dir: its NCE loss on training batches against validation")
    p.add_argument("--base-train", help="eval-ppl --windows JSON of the base LM on training windows (its fit of the text "
                   "the energies train on)")
    p.add_argument("--figure", help="PNG of the gain by position")
    p.add_argument("--json", help="write the summary here")
    a = p.parse_args()
    joints, lms, quality = pairs(a.joint, "--joint"), pairs(a.lm, "--lm"), pairs(a.quality, "--quality")
    generation = pairs(a.generation, "--generation")
    if not joints:
        raise SystemExit("--joint: give at least one residual evaluation")
    first = next(iter(joints.values()))
    windows = first["examples"]
    for name, res in [*joints.items(), *lms.items()]:
        if res["examples"] != windows or res["continuation_len"] != first["continuation_len"]:
            raise SystemExit(f"{name}: scored {res['examples']} windows of {res['continuation_len']}, the others "
                             f"{windows} of {first['continuation_len']}: not the same tokens")
    lines = [f"Test split, {windows} windows of {first['prefix_len']} + {first['continuation_len']} tokens "
             f"(continuation tokens scored). Perplexity per token.", "",
             "| model | n | lower ppl | upper ppl | paired gain, nats/window (± SE) | shows joint < base |",
             "|---|---|---|---|---|---|", f"| base LM | | {fmt(first['base_lm']['ppl'])} | | | |"]
    summary: dict = {"windows": windows, "base_lm_ppl": first["base_lm"]["ppl"], "lm": {}, "joint": {}, "quality": quality,
                     "generation": generation, "paper": PAPER}
    for name, res in lms.items():
        lines.append(f"| {name} | | {fmt(res['ppl'])} | | | |")
        summary["lm"][name] = res["ppl"]
    for name, res in joints.items():
        for row in res["joint"]:
            gain = row["paired_gain_upper"] or row["paired_gain_lower"]
            shows = (row["upper_ppl"] is not None and row["upper_ppl"] < res["base_lm"]["ppl"]
                     and gain["se"] is not None and gain["mean_nats_per_window"] > 2 * gain["se"])
            lines.append(f"| joint {name} | {row['n']} | {fmt(row['lower_ppl'])} | {fmt(row['upper_ppl'])} | "
                         f"{fmt(gain['mean_nats_per_window'], 3)} ± {fmt(gain['se'], 3)} | {'yes' if shows else 'no'} |")
        last = res["joint"][-1]
        summary["joint"][name] = {"n": last["n"], "lower_ppl": last["lower_ppl"], "upper_ppl": last["upper_ppl"],
                                  "paired_gain": last["paired_gain_upper"] or last["paired_gain_lower"]}
    lines += ["", "Gain columns use the upper (bias-corrected) estimate where n ≥ 2, else the lower.", ""]
    if quality:
        lines += ["Generation quality (one sample per test prefix; classifier: held-out accuracy of a real-vs-generated "
                  "n-gram logistic regression, 0.5 = indistinguishable):", "",
                  "| energy | system | distinct-1 | distinct-2 | seq-rep-4 | classifier acc |", "|---|---|---|---|---|---|"]
        for name, q in quality.items():
            lines.append(f"| {name} | real text | {fmt(q['real']['distinct_1'], 3)} | {fmt(q['real']['distinct_2'], 3)} | "
                         f"{fmt(q['real']['seq_rep_4'], 3)} | |")
            for system in ("base_lm", "joint"):
                s = q[system]
                lines.append(f"| {name} | {system.replace('_', ' ')} | {fmt(s['distinct_1'], 3)} | {fmt(s['distinct_2'], 3)} | "
                             f"{fmt(s['seq_rep_4'], 3)} | {fmt(s['classifier']['accuracy'], 3)} |")
        lines.append("")
    if generation:
        lines += ["Algorithm 1 cost: one call on the same test prefixes, against one batched base-LM sampling pass of as "
                  "many candidates (median of repeats; load average at the end beside it); peak RSS of `lmlab sample`'s "
                  "residual path on a growing number of prompts, each count in its own process:", "",
                  "| energy | prefixes × candidates | LM pass, s | Algorithm 1, s | ratio | peak RSS, MB, by prompts | load |",
                  "|---|---|---|---|---|---|---|"]
        for name, g in generation.items():
            memory = g.get("memory", [])
            mem = ", ".join(f"{m['prompts']}: {m['peak_rss_mb']:.0f}" for m in memory)
            mem += f" (batch {memory[0]['batch_size']})" if memory else ""
            load = " ".join(str(x) for x in g.get("load_avg", []))
            lines.append(f"| {name} | {g['prefixes']} × {g['candidates']} | {fmt(g['lm_pass_s'], 3)} | "
                         f"{fmt(g['algorithm1_s'], 3)} | {fmt(g['ratio'], 2)} | {mem} | {load} |")
        lines.append("")
    if a.run or a.base_train:
        lines += fit_lines(a, first, summary)
    positions = {name: res["per_position"]["positions"] for name, res in joints.items() if "per_position" in res}
    if positions and a.figure:
        from lmlab.core.plot import plot_series
        plot_series({f"joint {n}": [(r["position"], r["gain_nats_per_token"]) for r in rows] for n, rows in positions.items()},
                    a.figure, xlabel="position in the continuation", ylabel="gain over the base LM (nats/token)",
                    title="Residual EBM: per-position gain (log P_joint − log P_LM)")
        lines.append(f"Per-position gain: {a.figure}.")
    if positions:  # the figure's points with their standard errors over windows (each from a few LM futures)
        names = list(positions)
        lines += ["", "Gain by position, nats per token (± SE over windows):", "",
                  "| position | " + " | ".join(f"joint {n}" for n in names) + " |", "|---|" + "---|" * len(names)]
        by_position = {n: {r["position"]: r for r in rows} for n, rows in positions.items()}
        for pos in sorted(set().union(*by_position.values())):
            cells = [by_position[n].get(pos) for n in names]
            lines.append(f"| {pos} | " + " | ".join("–" if c is None else f"{fmt(c['gain_nats_per_token'], 4)} ± "
                                                       f"{fmt(c.get('gain_se'), 4)}" for c in cells) + " |")
    summary["per_position"] = positions
    lines += ["", f"Paper: {PAPER}. Scale differs (a 4.65M-parameter LSTM on PTB here): compare the direction only."]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
