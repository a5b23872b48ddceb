"""Render the generated regions of docs/*.md from the result records in results/ (`make results`).

A region is delimited in Markdown by

    <!-- generated:NAME -->
    ...everything here is written by this module, never by hand...
    <!-- /generated:NAME -->

and shows results/NAME.json (NAME is the make target that writes it), rendered by the record's `kind`.
`<!-- generated:NAME:VIEW -->` shows one table of the record instead (VIEWS in results_views.py: the paper docs show the
table their text reads, docs/results.md the whole record). `<!-- generated:claims -->` (COLLECTIONS there) is one table
over every record: the paired-seed comparisons that test a paper's claim. Without a record the region says "not yet
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
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from lmlab.core.records import RESULTS_DIR, read_records
from lmlab.core.results_views import COLLECTIONS, VIEWS, num as _num

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


def _hardware(m: dict[str, Any], threads: bool = False) -> str:
    n = m.get("torch_threads") if threads else None
    return ", ".join(x for x in (m.get("cpu_model"), f"{m['cores']} cores" if m.get("cores") else None,
                                 f"GPU {m['gpu']}" if m.get("gpu") else None,
                                 f"torch {m['torch']}" if m.get("torch") else None,
                                 f"{n} torch thread{'s' * (n != 1)}" if n else None) if x)


def _arm_machines(rec: dict[str, Any]) -> str | None:
    """One line naming what each arm ran on, when a record's arms did not all run on the same machine and build
    (the line above names only the first arm's)."""
    groups: dict[str, list[str]] = {}
    for key, hw in (rec.get("arm_machines") or {}).items():
        groups.setdefault(_hardware(hw, threads=True) or "machine not recorded", []).append(key.removeprefix("train-"))
    if len(groups) < 2:
        return None
    return ("Its arms ran on different machines or builds: "
            + "; ".join(f"{', '.join(keys)} on {hw}" for hw, keys in groups.items()) + ".")


def _changed_hardware(rec: dict[str, Any]) -> list[str]:
    """A line per trained arm whose processes (a run stopped and resumed) ran on more than one machine or build."""
    lines = []
    for key, facts in rec.get("metrics", {}).items():
        history = facts.get("hardware_history") if isinstance(facts, dict) else None
        known = [(step, hw) for step, hw in history or [] if hw]  # None: a stretch from before the history was kept
        if len({json.dumps(hw, sort_keys=True) for _, hw in known}) > 1:
            stretches = "; ".join(f"from update {step:,} on {_hardware(hw, threads=True)}" for step, hw in known)
            lines.append(f"{key.removeprefix('train-') or 'The run'} changed machine or build between its processes: "
                         f"{stretches}.")
    return lines


def provenance(rec: dict[str, Any]) -> str:
    m = rec.get("machine") or {}
    hw = _hardware(m)
    commit = (rec.get("commit") or "unknown")[:10] + (" + uncommitted changes" if rec.get("dirty") else "")
    lines = [f"Recorded in `results/{rec['name']}.json` by `{rec['command']}`: commit {commit}, {rec.get('date', '?')}; "
             f"{hw or 'machine not recorded'}; {_load(m, _resumed(rec))}"
             + (f"; wall {duration(rec['wall_s'])}" if rec.get("wall_s") is not None else "") + "."]
    if arms := _arm_machines(rec):
        lines.append(arms)
    lines += _changed_hardware(rec)
    if rec.get("notes"):
        lines.append(rec["notes"])
    return "\n".join(lines)


def short_provenance(rec: dict[str, Any]) -> str:
    """The one line a view starts with (the record's whole provenance is in its full region)."""
    commit = (rec.get("commit") or "unknown")[:10] + (" + uncommitted changes" if rec.get("dirty") else "")
    return f"From `results/{rec['name']}.json` (`{rec['command']}`; commit {commit}, {rec.get('date', '?')})."


# ---- renderers, one per record kind ----------------------------------------------------------------------
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
    curve = train.get("valid_curve") or []
    if curve:  # [update, epoch, valid ppl] per evaluation, kept by the record when the run dir is gone
        by = "epoch" if all(e is not None for _, e, _ in curve) and len({e for _, e, _ in curve}) == len(curve) else "update"
        points = " · ".join(f"{e if by == 'epoch' else u:,}: {ppl:.1f}" for u, e, ppl in curve)
        best = min(ppl for _, _, ppl in curve)
        paper_valid = f"; the paper's final valid perplexity: {_num(paper['valid_ppl'], '{}')}" if paper.get("valid_ppl") else ""
        out += f"\n\nValidation perplexity by {by} (the trainer's evaluation): {points} (best {best:.1f}{paper_valid})."
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


def _row_tables(d: dict[str, Any], prefix: str = "") -> list[tuple[str, list[dict]]]:
    """The metrics entries that are lists of flat rows (dicts), by their dotted keys."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(_row_tables(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out.append((f"{prefix}{k}", v))
    return out


def render_metrics(rec: dict[str, Any]) -> str:
    """Any record: its metrics as a key/value table, the paper's figure beside where it names the same key."""
    paper = rec.get("paper") or {}
    rows = ["| metric | value |" + (" paper |" if paper else ""), "|---|---:|" + ("---:|" if paper else "")]
    for key, value in _flatten(rec["metrics"]):
        shown = ", ".join(_num(v) for v in value) if isinstance(value, list) else _num(value)
        rows.append(f"| {key} | {shown} |" + (f" {_num(paper.get(key), '{}') if key in paper else ''} |" if paper else ""))
    out = "\n".join(rows) if len(rows) > 2 else ""
    if len(rows) > 22:  # a long table folds (GitHub renders <details>), the figures stay in the page
        out = f"<details><summary>{len(rows) - 2} metrics</summary>\n\n{out}\n\n</details>"
    for key, table in _row_tables(rec["metrics"]):  # lists of rows (e.g. a --jsonl entry): one table each, a row per item
        nested = {c for row in table for c, v in row.items() if isinstance(v, (dict, list))}  # shown by a view, if any
        columns = list(dict.fromkeys(c for row in table for c in row if c not in nested))
        lines = [f"`{key}`:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_num(row.get(c)) if row.get(c) is not None else "" for c in columns) + " |" for row in table]
        out += ("\n\n" if out else "") + "\n".join(lines)
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
def render(name: str, records: dict[str, dict[str, Any]], view: str | None = None) -> str:
    """The region's text: the whole record (view None) or one of its VIEWS; "not yet recorded" without a record."""
    if view is not None and f"{name}:{view}" not in VIEWS:
        raise ValueError(f"<!-- generated:{name}:{view} -->: no such view (known: {', '.join(sorted(VIEWS))})")
    if name in COLLECTIONS and view is None:  # a table over every record, not one record's
        return COLLECTIONS[name](records)
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
    """The records the regions of text show (a view shows its record too; a collection shows no one record)."""
    return [m["name"] for m in REGION.finditer(text) if m["name"] not in COLLECTIONS or m["view"] is not None]


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
