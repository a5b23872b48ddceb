"""Render the generated regions of docs/*.md from the result records in results/ (`make results`).

A region is delimited in Markdown by

    <!-- generated:NAME -->
    ...everything here is written by this module, never by hand...
    <!-- /generated:NAME -->

and shows results/NAME.json (NAME is the make target that writes it), rendered by the record's `kind`.
`<!-- generated:NAME:VIEW -->` shows one table of the record instead (VIEWS below: the paper docs show the
table their text reads, docs/results.md the whole record). Without a record the region says "not yet
recorded" and names the target. `--check` renders every region and fails when any differs from the file
(tests/test_results_doc.py runs it), so a hand edit of a generated figure, or a record whose figures the
docs do not show, is caught.

    python -m lmlab.core.results_doc            # rewrite the regions of docs/*.md in place
    python -m lmlab.core.results_doc --check    # exit 1 and show what differs
    python -m lmlab.core.results_doc --print demo   # one record's rendering on stdout (make demo)
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

from lmlab.core.records import RESULTS_DIR, read_records

REGION = re.compile(r"<!-- generated:(?P<key>(?P<name>[\w.-]+)(?::(?P<view>[\w.-]+))?) -->\n(?P<body>.*?)"
                    r"<!-- /generated:(?P=key) -->", re.S)


# ---- the provenance line every region starts with ------------------------------------------------------
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _resumed(rec: dict[str, Any]) -> bool:
    """Whether a training step of the record was resumed (its machine facts are then its last process's)."""
    return any(isinstance(v, dict) and v.get("wall_s") and v.get("wall_s_this_process")
               and abs(v["wall_s"] - v["wall_s_this_process"]) > 1 for v in rec.get("metrics", {}).values())


def _load(machine: dict[str, Any], resumed: bool = False) -> str:
    # the toy experiments' own record writers name the same facts differently
    start = machine.get("load_avg_1_5_15") or machine.get("load_avg_1_5_15_start")
    end = machine.get("load_avg_at_end") or machine.get("load_avg_end") or machine.get("load_avg_1_5_15_end")
    if start and end:
        at = "at the start of its last (resumed) training process" if resumed else "at start"
        return f"load average (1 min) {start[0]:.2f} {at}, {end[0]:.2f} at end"
    if start:
        return f"load average (1 min) {start[0]:.2f}"
    return "load average not recorded"


def provenance(rec: dict[str, Any]) -> str:
    m = rec.get("machine") or {}
    hw = ", ".join(x for x in (m.get("cpu_model"), f"{m['cores']} cores" if m.get("cores") else None,
                               f"GPU {m['gpu']}" if m.get("gpu") else None,
                               f"torch {m['torch']}" if m.get("torch") else None) if x)
    commit = (rec.get("commit") or "unknown")[:10] + (" + uncommitted changes" if rec.get("dirty") else "")
    lines = [f"Recorded in `results/{rec['name']}.json` by `{rec['command']}`: commit {commit}, {rec.get('date', '?')}; "
             f"{hw or 'machine not recorded'}; {_load(m, _resumed(rec))}"
             + (f"; wall {duration(rec['wall_s'])}" if rec.get("wall_s") is not None else "") + "."]
    if rec.get("notes"):
        lines.append(rec["notes"])
    return "\n".join(lines)


def short_provenance(rec: dict[str, Any]) -> str:
    """The one line a view starts with (the record's whole provenance is in its full region)."""
    commit = (rec.get("commit") or "unknown")[:10] + (" + uncommitted changes" if rec.get("dirty") else "")
    return f"From `results/{rec['name']}.json` (`{rec['command']}`; commit {commit}, {rec.get('date', '?')})."


# ---- renderers, one per record kind ----------------------------------------------------------------------
def _num(value: Any, fmt: str = "{:,}") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and fmt == "{:,}":
        fmt = "{:,.4g}" if abs(value) < 1000 else "{:,.1f}"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def render_lm(rec: dict[str, Any]) -> str:
    """An LM against its baselines, per split: tokens, nats, bits, perplexity (and the paper's, if any)."""
    mt, paper = rec["metrics"], rec.get("paper") or {}
    train = mt.get("train", {})
    has_paper = any(k.endswith("_ppl") for k in paper)
    head = "| split | model | tokens | nats/token | bits/token | perplexity |" + (" paper |" if has_paper else "")
    rows = [head, "|---|---|---:|---:|---:|---:|" + ("---:|" if has_paper else "")]
    lm_name = train.get("model", "LM")
    for split in ("valid", "test"):
        for key, name, bold in ((f"unigram-{split}", "unigram (add-one)", False),
                                (f"kn-bigram-{split}", "KN bigram", False), (split, lm_name, True)):
            r = mt.get(key)
            if not r:
                continue
            ppl = f"**{r['ppl']:.1f}**" if bold else f"{r['ppl']:.1f}"
            row = f"| {split} | {name} | {r['tokens']:,} | {r['nats_per_token']:.3f} | {r['bits_per_token']:.3f} | {ppl} |"
            if has_paper:
                row += f" {_num(paper.get(f'{split}_ppl'), '{}') if bold else ''} |"
            rows.append(row)
    facts = []
    if train.get("params_total"):
        facts.append(f"{train['params_total']:,} parameters ({train.get('params_embedding', 0):,} in the input embedding)")
    if train.get("step"):
        facts.append(f"{train['step']:,} updates in {duration(rec.get('wall_s'))}")
    if train.get("tokens_per_s"):
        whole, last = train.get("wall_s"), train.get("wall_s_this_process")
        if whole and last and abs(whole - last) > 1 and train.get("tokens"):  # resumed: the figure is the last process's
            facts.append(f"{train['tokens_per_s']:,.0f} training tokens/s in its last (resumed) process; "
                         f"{train['tokens'] / whole:,.0f} tokens/s over the whole wall time, evaluations included")
        else:
            facts.append(f"{train['tokens_per_s']:,.0f} training tokens/s (mean over the run)")
    out = "\n".join(rows)
    if facts:
        out += "\n\n" + "; ".join(facts) + "."
    if has_paper and paper.get("source"):
        out += f" Paper: {paper['source']}."
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        elif isinstance(v, list) and v and isinstance(v[0], (dict, list)):
            continue  # tables inside metrics are for kind-specific renderers
        else:
            out.append((key, v))
    return out


def render_metrics(rec: dict[str, Any]) -> str:
    """Any record: its metrics as a key/value table, the paper's figure beside where it names the same key."""
    paper = rec.get("paper") or {}
    rows = ["| metric | value |" + (" paper |" if paper else ""), "|---|---:|" + ("---:|" if paper else "")]
    for key, value in _flatten(rec["metrics"]):
        shown = ", ".join(_num(v) for v in value) if isinstance(value, list) else _num(value)
        rows.append(f"| {key} | {shown} |" + (f" {_num(paper.get(key), '{}') if key in paper else ''} |" if paper else ""))
    out = "\n".join(rows)
    if len(rows) > 22:  # a long table folds (GitHub renders <details>), the figures stay in the page
        out = f"<details><summary>{len(rows) - 2} metrics</summary>\n\n{out}\n\n</details>"
    if paper.get("source"):
        out += f"\n\nPaper: {paper['source']}."
    return out


def render_markdown(rec: dict[str, Any]) -> str:
    """Records whose producer also wrote its Markdown (make bench): the figures are in metrics, the Markdown is shown
    as written, its headings one level down (the doc's own section heading is above the region)."""
    return "\n".join("#" + line if line.startswith("#") else line for line in rec["markdown"].strip().splitlines())


def render_reliability(rec: dict[str, Any]) -> str:
    """The reliability summary, from the record that `make reliability-doc` extracts from docs/reliability.md."""
    mt = rec["metrics"]["summary"]
    kills = mt["kills"]
    kill_text = "; ".join(f"{k}: {v['kills']} kills ({v['mid_checkpoint_write_kills']} inside a checkpoint write), "
                          f"{v['rounds_bitwise_equal']}/{v['rounds']} rounds bitwise equal to an uninterrupted run"
                          for k, v in kills.items())
    sig = mt["signals"]
    return (f"Bad-input matrix {mt['matrix_pass']}/{mt['matrix_rows']} rows pass. SIGKILL at random moments, then "
            f"`--resume auto`: {kill_text}. SIGTERM/SIGUSR1 save and exit {'/'.join(map(str, sig['exit_codes']))} "
            f"in {sig['seconds_min']:g}–{sig['seconds_max']:g} s. A dead rank stops the job in "
            f"{mt['dead_rank_seconds_min']:g}–{mt['dead_rank_seconds_max']:g} s with one error line. "
            f"`torchrun --nproc_per_node 2` (gloo) vs one process, same global batch: max train-loss difference "
            f"{mt['torchrun_max_loss_diff_nats']} nats. Details, per block: docs/reliability.md.")


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "lm": render_lm, "metrics": render_metrics, "markdown": render_markdown, "reliability": render_reliability}


# ---- views: one table of one record, for the paper docs (<!-- generated:NAME:VIEW -->) ----------------------
def _pm(mean: float, spread: float) -> str:
    """mean ± spread, both to the decimal that shows the spread to two significant digits."""
    if not spread:
        return f"{mean:.4g} ± 0"
    places = min(max(1 - math.floor(math.log10(abs(spread))), 0), 6)
    return f"{mean:.{places}f} ± {spread:.{places}f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    row = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return "\n".join([row(head), "|" + "---|" * len(head)] + [row(r) for r in rows])


def view_kn_bigram(rec: dict[str, Any]) -> str:
    """The KN bigram's perplexities and discounts, ours beside the independent slow reference's."""
    ours, ref = rec["metrics"]["kn_bigram"], rec["metrics"]["reference"]
    d = lambda xs: ", ".join(f"{x:.4f}" for x in xs)  # noqa: E731
    rows = [["`core/imm/kn_bigram.py`", f"{ours['vocab_size']:,}", f"{ours['bigram_types']:,}", d(ours["discounts"]),
             f"**{ours['valid_ppl']:.3f}**", f"**{ours['test_ppl']:.3f}**", _num(ref.get("seconds_ours"))],
            ["slow reference (`bench/imm_kn_ptb.py`)", "", f"{ref['bigram_types']:,}", d(ref["reference_discounts"]),
             f"{ref['valid_ppl_reference']:.3f}", f"{ref['test_ppl_reference']:.3f}", _num(ref.get("seconds_reference"))]]
    head = ["implementation", "V", "bigram types", "discounts D1, D2, D3+", "valid ppl", "test ppl", "seconds"]
    return f"Data `{ref.get('data', '?')}`:\n\n" + _table(head, rows)


_TOY_METRICS = (("mmd2", "MMD²"), ("sw1", "sliced W₁"), ("hq_frac", "HQ fraction"), ("mode_tv", "mode TV"))


def _arm_label(rec: dict[str, Any], arm: str) -> str:
    a = (rec.get("arms") or {}).get(arm) or {}
    if arm == "generator" or a.get("sampler") == "none":
        return "generator alone, G(z₀)"
    return f"{a.get('sampler', arm).upper()}, β {a.get('beta', '?'):g}" if a else arm


def view_gebm_toy_arms(rec: dict[str, Any]) -> str:
    """The 2-D ring: each arm's metrics (mean ± sd over seeds), its paired difference to the generator
    (mean ± s.e.) and the per-seed MMD² and HQ fraction."""
    mt = rec["metrics"]
    summ, seeds = mt["summary"], list(mt["per_seed"])
    arms = list(summ)
    main = _table(["arm"] + [label for _, label in _TOY_METRICS] + ["modes covered"],
                  [[_arm_label(rec, a)] + [_pm(summ[a][k]["mean"], summ[a][k]["sd"]) for k, _ in _TOY_METRICS]
                   + [f"{summ[a]['modes_covered']['mean']:g}/{summ[a]['modes']['mean']:g}"] for a in arms])
    paired = _table(["arm − generator"] + [label for _, label in _TOY_METRICS],
                    [[_arm_label(rec, a)] + [_pm(summ[a][k]["diff_vs_generator"], summ[a][k]["diff_se"])
                                             for k, _ in _TOY_METRICS] for a in arms if a != "generator"])
    per_seed = _table(["arm", f"MMD², seeds {', '.join(seeds)}", f"HQ fraction, seeds {', '.join(seeds)}"],
                      [[_arm_label(rec, a)] + [" / ".join(f"{mt['per_seed'][s][a][k]:.3f}" for s in seeds)
                                               for k in ("mmd2", "hq_frac")] for a in arms])
    return (f"Mean ± sd over {len(seeds)} seeds:\n\n{main}\n\nPaired difference to the generator (mean ± s.e. over "
            f"the seeds):\n\n{paired}\n\nPer seed:\n\n{per_seed}")


def view_gebm_toy_ablation(rec: dict[str, Any]) -> str:
    """The gradient-penalty ablation: the ablation seeds at penalty 1 beside the same seeds at the recorded penalty."""
    mt, pen = rec["metrics"], (rec.get("config") or {}).get("penalty", "?")
    rows = []
    for seed, ab in mt["penalty1_ablation"].items():
        main = mt["per_seed"][seed]
        rows.append([seed, "KALE, mean of the last 10% of training", f"{mt['train'][seed]['kale_last10pct_mean']:.3f}",
                     f"{ab['train']['kale_last10pct_mean']:.3f}"])
        rows += [[seed, f"{label}, {_arm_label(rec, a)}", f"{main[a][k]:.3f}", f"{ab['metrics'][a][k]:.3f}"]
                 for k, label in _TOY_METRICS[:2] for a in main]
    return _table(["seed", "quantity", f"penalty {pen:g}", "penalty 1"], rows)


_CHECK_LABELS = {"kla_default": "KLA, shipped defaults", "kla_pre19": "KLA as lmlab ran it before #19",
                 "ula_default": "ULA, shipped defaults"}


def view_gebm_sampler_checks(rec: dict[str, Any]) -> str:
    """Issue #19's known posterior: each sampler's pooled mean and std against the exact ones."""
    checks = rec["metrics"]["sampler_checks"]
    return _table(["sampler", "mean", "std", "exact mean", "exact std"],
                  [[_CHECK_LABELS.get(k, k), f"{c['mean']:.4f}", f"{c['std']:.4f}", f"{c['target_mean']:.4f}",
                    f"{c['target_std']:.4f}"] for k, c in checks.items()])


_LOGISTIC_METHODS = {"mle": "MLE", "imm": "IMM", "rkd": "reverse KD", "noising": "noising"}


def view_imm_logistic(rec: dict[str, Any]) -> str:
    """Test accuracy per training-set size at each method's selected r, and the paired difference to MLE."""
    mt = rec["metrics"]
    meth, paired = mt["methods"], mt["paired_vs_mle"]
    acc = _table(["n"] + [_LOGISTIC_METHODS.get(k, k) for k in meth],
                 [[str(n)] + [_pm(m["test_acc"]["mean"][i], m["test_acc"]["sd"][i]) + f", r {m['selected_ratio'][i]:g}"
                              for m in meth.values()] for i, n in enumerate(mt["sizes"])])
    diff = _table(["n"] + [f"{_LOGISTIC_METHODS.get(k, k)} − MLE (better/worse)" for k in paired],
                  [[str(n)] + [_pm(p["mean"][i], p["se"][i]) + f" ({p['n_better'][i]}/{p['n_worse'][i]})"
                               for p in paired.values()] for i, n in enumerate(mt["sizes"])])
    r = mt["restricted_only_test_acc"]
    return (f"Test accuracy, mean ± sd over {len(rec.get('seeds') or [])} seeds, at the r chosen on validation "
            f"(thresholding P̄(y | x1) alone: {_pm(r['mean'], r['sd'])}; Bayes accuracy {mt['bayes_accuracy']:g}):\n\n"
            f"{acc}\n\nPaired difference to MLE (mean ± s.e.; seeds better/worse):\n\n{diff}")


def view_imm_reinforce(rec: dict[str, Any]) -> str:
    """Mean total reward per epoch count for each arm (the official cached mean beside), the paired gain over no
    IMM, and the λ/(1+λ) sweep."""
    mt = rec["metrics"]
    arms, paired, sweep = mt["arms"], mt["paired_vs_none"], mt["lambda_sweep"]
    imm_arm = next((a for a in arms if a != "none"), None)
    head = ["epochs"] + (["λ/(1+λ)"] if imm_arm else []) + [f"{a} (official)" for a in arms]
    reward = _table(head, [[str(e)] + ([f"{arms[imm_arm]['lambda_ratio'][i]:g}"] if imm_arm else [])
                           + [_pm(a["mean"][i], a["sd"][i])
                              + (f" ({a['official_cached_mean'][i]:g})" if a.get("official_cached_mean") else "")
                              for a in arms.values()] for i, e in enumerate(mt["epochs"])])
    gain = _table(["epochs"] + [f"{a} − none (better/worse)" for a in paired],
                  [[str(e)] + [_pm(p["mean"][i], p["se"][i]) + f" ({p['n_better'][i]}/{p['n_worse'][i]})"
                               for p in paired.values()] for i, e in enumerate(mt["epochs"])])
    sp = sweep["paired_vs_ratio0"]
    lam = _table(["λ/(1+λ)"] + [f"{e} epochs: reward (− ratio 0 ± s.e.)" for e in sweep["epochs"]],
                 [[f"{r:g}"] + [_pm(sweep["mean"][j][i], sweep["sd"][j][i])
                                + (f" ({_pm(sp['mean'][j][i], sp['se'][j][i])})" if r else "")
                                for j in range(len(sweep["epochs"]))] for i, r in enumerate(sweep["ratios"])])
    return (f"Mean total reward ± sd over {len(rec.get('seeds') or [])} seeds (the official repository's cached mean "
            f"in brackets):\n\n{reward}\n\nPaired gain over no IMM (mean ± s.e.; seeds better/worse):\n\n{gain}\n\n"
            f"λ/(1+λ) sweep, maximal-utility IMM:\n\n{lam}")


VIEWS: dict[str, Callable[[dict[str, Any]], str]] = {
    "kn-bigram-ptb:ppl": view_kn_bigram, "gebm-toy:arms": view_gebm_toy_arms,
    "gebm-toy:ablation": view_gebm_toy_ablation, "gebm-toy:sampler-checks": view_gebm_sampler_checks,
    "imm-logistic:accuracy": view_imm_logistic, "imm-reinforce:reward": view_imm_reinforce}


def render(name: str, records: dict[str, dict[str, Any]], view: str | None = None) -> str:
    """The region's text: the whole record (view None) or one of its VIEWS; "not yet recorded" without a record."""
    if view is not None and f"{name}:{view}" not in VIEWS:
        raise ValueError(f"<!-- generated:{name}:{view} -->: no such view (known: {', '.join(sorted(VIEWS))})")
    rec = records.get(name)
    if rec is None:
        return f"_Not yet recorded: `make {name}` writes `results/{name}.json` and this region._"
    if view is not None:
        return short_provenance(rec) + "\n\n" + VIEWS[f"{name}:{view}"](rec)
    body = RENDERERS.get(rec.get("kind", "metrics"), render_metrics)(rec)
    return provenance(rec) + "\n\n" + body


def render_text(text: str, records: dict[str, dict[str, Any]]) -> str:
    return REGION.sub(lambda m: f"<!-- generated:{m['key']} -->\n{render(m['name'], records, m['view'])}\n"
                                f"<!-- /generated:{m['key']} -->", text)


def region_names(text: str) -> list[str]:
    """The records the regions of text show (a view shows its record too)."""
    return [m["name"] for m in REGION.finditer(text)]


def unknown_views(text: str) -> list[str]:
    return [m["key"] for m in REGION.finditer(text) if m["view"] is not None and f"{m['name']}:{m['view']}" not in VIEWS]


def update_docs(docs_dir: str | Path = "docs", results_dir: str | Path | None = None, check: bool = False) -> list[str]:
    """Render every region of docs_dir/*.md; write the files (or, with check, only compare). Returns the problems
    found: files whose regions differ from their records and (check only; otherwise a warning) records that no
    region shows."""
    records = read_records(results_dir if results_dir is not None else RESULTS_DIR)
    problems, shown = [], set()
    for path in sorted(Path(docs_dir).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        shown.update(region_names(text))
        bad = unknown_views(text)
        if bad:  # a typo in a marker: say so in one line instead of a traceback
            problems.append(f"{path}: no such view: {', '.join(bad)} (known: {', '.join(sorted(VIEWS))})")
            continue
        new = render_text(text, records)
        if new == text:
            continue
        if check:
            diff = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(path), "rendered", n=1))
            problems.append(f"{path}: a generated region differs from its record (hand edit, or run `make results`)\n{diff}")
        else:
            path.write_text(new, encoding="utf-8")
    orphans = [f"results/{name}.json: no <!-- generated:{name} --> region in {docs_dir}/*.md shows it"
               for name in sorted(set(records) - shown)]
    if check:
        return problems + orphans
    for line in orphans:  # rendering still succeeds (a pipeline that just wrote a record must not fail); --check fails
        print(f"warning: {line}", file=sys.stderr)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmlab.core.results_doc", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 if any region differs")
    ap.add_argument("--print", dest="print_name", metavar="NAME", help="print results/NAME.json's rendering and exit")
    ap.add_argument("--docs", default="docs")
    ap.add_argument("--results", default=None, help="default: $LMLAB_RESULTS or results/")
    args = ap.parse_args(argv)
    if args.print_name:
        print(render(args.print_name, read_records(args.results if args.results is not None else RESULTS_DIR)))
        return 0
    problems = update_docs(args.docs, args.results, check=args.check)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
