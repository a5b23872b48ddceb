"""Result records: one small JSON file per result under `results/`, the only source of every figure
in docs/ (`make results` renders the tables from them; nothing is typed by hand).

A record: {"name", "command", "commit", "dirty", "date", "machine": {...}, "wall_s", "seeds", "metrics": {...},
"kind" (how lmlab.core.results_doc renders it: lm, metrics, markdown, reliability), "paper": {...} (the paper's
figures beside ours, optional), "markdown" (kind markdown: the table its script printed), "notes" (optional)}.
"machine" is lmlab.core.machine.machine_info() at the start (CPU model, cores, torch, GPU, load) plus
"load_avg_at_end". A record of trained arms also keeps "arm_machines": what each arm ran on (its metrics key ->
arm_hardware), since the arms of one record may have run in different sessions, machines or torch builds. NAME is
the make target that writes the record; `python -m lmlab.core.records` (main below) assembles one from the files a
pipeline wrote.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from lmlab.core.errors import LmlabError
from lmlab.core.machine import hardware as arm_hardware, machine_info

RESULTS_DIR = Path(os.environ.get("LMLAB_RESULTS", "results"))


# What a pipeline writes before its record (figures, regenerated docs, the records themselves): not code, so a
# change there does not make the commit's code differ from what ran.
OUTPUT_PATHS = ("results/", "docs/")


def git_commit(cwd: str | Path = ".") -> tuple[str | None, bool]:
    """(commit hash, whether the work tree had uncommitted changes to tracked files outside OUTPUT_PATHS)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.splitlines()
        dirty = any(not line[3:].strip('"').startswith(OUTPUT_PATHS) for line in status if line.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, False


def strict(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (strict JSON never holds Infinity/NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def make_record(name: str, command: str, metrics: dict[str, Any], *, wall_s: float | None = None,
                machine: dict[str, Any] | None = None, seeds: list[int] | None = None,
                paper: dict[str, Any] | None = None, notes: str | None = None, **extra: Any) -> dict[str, Any]:
    commit, dirty = git_commit()
    record = {"name": name, "command": command, "commit": commit, "dirty": dirty,
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine or machine_info(), "wall_s": wall_s, "seeds": seeds or [], "metrics": metrics}
    if paper:
        record["paper"] = paper
    if notes:
        record["notes"] = notes
    record.update(extra)
    return strict(record)


def write_record(record: dict[str, Any], results_dir: str | Path | None = None) -> Path:
    """Write results/<name>.json atomically (temp file + rename)."""
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{record['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_records(results_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))}


# ---- assembling a record from the files a pipeline wrote -----------------------------------------------------

def recorded_entry(ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`RECORD.json#KEY` -> (the record, its metrics[KEY]): an arm of an earlier result whose run dir is gone (run
    dirs are scratch; records are kept). One error line names what is missing."""
    path, sep, key = str(ref).partition("#")
    if not sep or not key:
        raise LmlabError(f"{ref}: expected RECORD.json#KEY, e.g. results/imm-ptb-cpu.json#train-dropout-s1")
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlabError(f"{path}: no such record") from None
    except json.JSONDecodeError as e:
        raise LmlabError(f"{path}: not a JSON record ({e})") from None
    entries = record.get("metrics", {}) if isinstance(record, dict) else {}
    if key not in entries:
        keys = ", ".join(k for k in entries if k.startswith("train")) or "none"
        raise LmlabError(f"{path}: no '{key}' in its metrics; its train entries: {keys}")
    return record, entries[key]


def is_record_ref(ref: str | Path) -> bool:
    """Whether a run argument names a record's entry (`RECORD.json#KEY`) rather than a run dir."""
    return ".json#" in str(ref)

def load_json(path: str | Path) -> Any:
    """A JSON file, or the last non-empty line of a JSON-lines file (e.g. a command's stdout)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads([line for line in text.splitlines() if line.strip()][-1])


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str] | None, flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"lmlab records: {flag} {item!r}: expected KEY=VALUE")
        out.append((key, value))
    return out


def train_summary_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """What a train summary (train-lm / train-ebm stdout, stored as runs/X.train.json) adds to a record: its
    wall time and machine (load at start and end), and tokens/s from the run dir's last metrics line."""
    facts: dict[str, Any] = {k: v for k, v in summary.items() if k != "machine"}
    run_dir = Path(summary.get("run_dir", ""))
    config_file, metrics_file = run_dir / "config.json", run_dir / "metrics.jsonl"
    if summary.get("run_dir") and config_file.is_file():
        config = json.loads(config_file.read_text())
        model, energy = config.get("model", {}), config.get("energy")
        if isinstance(energy, dict) and energy.get("kind"):  # a residual EBM run: its energy network
            facts["model"] = f"{energy['kind'].upper()} energy, {energy.get('n_layers')} layers x {energy.get('d_model')}"
        elif model.get("kind") and model.get("n_layers"):  # an LM or translation model; a GEBM's model says no shape
            shape = (f"{model['n_layers']}x{model['lstm']['hidden_size']}" if model["kind"] == "lstm"
                     else f"{model['n_layers']} layers x {model.get('d_model')}")
            tied = ", tied" if model.get("output", {}).get("tie") else ""
            facts["model"] = f"{str(model['kind']).upper()} {shape}{tied}"
    if summary.get("run_dir") and metrics_file.is_file():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        trained = [r for r in rows if "tokens_per_s" in r]
        if trained:
            facts["tokens"] = trained[-1].get("tokens")
            facts["tokens_per_s"] = round(trained[-1]["tokens_per_s"], 1)
        curve = [[r["step"], r.get("epoch"), round(r["valid_ppl"], 3)] for r in rows
                 if r.get("valid_ppl") is not None and "step" in r]
        if curve:  # [update, epoch, valid ppl] per evaluation: the run's curve survives its run dir
            facts["valid_curve"] = curve
    if summary.get("train_tokens_per_s"):  # training-only mean over the (last) process; metrics rows hold interval rates
        facts["tokens_per_s"] = summary["train_tokens_per_s"]
    return facts


def _seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integer seeds, e.g. 1 or '1 2 3'") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m lmlab.core.records NAME --command CMD [--train [KEY=]FILE] [--since FILE] [--json KEY=FILE]
    [--jsonl KEY=FILE] [--markdown FILE] [--metric KEY=VALUE] [--paper KEY=VALUE --paper-source TEXT] [--kind KIND]`:
    assemble results/NAME.json from the files a pipeline wrote (the make targets call it; see the Makefile)."""

    ap = argparse.ArgumentParser(prog="python -m lmlab.core.records", description=main.__doc__)
    ap.add_argument("name", help="record name = the make target that produces it (results/NAME.json)")
    ap.add_argument("--command", required=True, help="the exact command line that produced the result")
    ap.add_argument("--kind", default="metrics", help="how `make results` renders it (lm, metrics, ...)")
    ap.add_argument("--train", action="append", default=[], metavar="[KEY=]FILE",
                    help="a completed train summary (runs/X.train.json): wall time, machine, tokens/s. "
                         "With several, KEY names each (its wall times are summed). RECORD.json#train-KEY reuses an "
                         "arm of an earlier record as it was recorded (marked with that record's path and commit).")
    ap.add_argument("--json", action="append", metavar="KEY=FILE", help="metrics[KEY] = the JSON in FILE")
    ap.add_argument("--jsonl", action="append", metavar="KEY=FILE", help="metrics[KEY] = the list of JSON lines in FILE")
    ap.add_argument("--markdown", metavar="FILE", help="the Markdown the producing script printed (kind markdown: "
                                                        "`make results` shows it as written)")
    ap.add_argument("--since", metavar="FILE", help="`python -m lmlab.core.machine` output written when the result "
                                                   "started: machine, load at start, and wall time to now")
    ap.add_argument("--metric", action="append", metavar="KEY=VALUE", help="metrics[KEY] = VALUE (JSON or text)")
    ap.add_argument("--paper", action="append", metavar="KEY=VALUE", help="the paper's figure beside ours")
    ap.add_argument("--paper-source", help="paper, table and setting the --paper figures come from")
    ap.add_argument("--seed", action="append", type=_seeds, default=[], help="seed(s) of the run: repeat the flag or give "
                    "one space-separated list ('1 2 3', as a Make variable holds them)")
    ap.add_argument("--notes")
    ap.add_argument("--results-dir", default=None, help="default: $LMLAB_RESULTS or results/")
    args = ap.parse_args(argv)

    metrics: dict[str, Any] = {}
    arm_machines: dict[str, dict[str, Any]] = {}
    machine, wall = None, None
    for item in args.train:
        key, sep, path = item.partition("=") if "=" in item else ("", "", item)
        name = f"train-{key}" if key else "train"
        if is_record_ref(path):  # an arm recorded earlier: its facts as they were, where and at which commit
            try:
                record, entry = recorded_entry(path)
            except LmlabError as e:
                raise SystemExit(f"lmlab records: --train {item}: {e}") from None
            metrics[name] = {**entry, "recorded_in": path.partition("#")[0], "recorded_commit": record.get("commit")}
            # as that record kept it; a record from before arm_machines has only its own (first arm's) machine
            arm_machines[name] = ((record.get("arm_machines") or {}).get(path.partition("#")[2])
                                  or arm_hardware(record.get("machine")))
            continue  # its wall time and machine belong to that record, not to this one
        summary = load_json(path)
        if summary.get("stopped_by") or summary.get("stopped"):
            raise SystemExit(f"lmlab records: {path}: training did not complete; rerun its make target")
        metrics[name] = train_summary_facts(summary)
        arm_machines[name] = arm_hardware(summary.get("machine"))
        machine = machine or summary.get("machine")
        if summary.get("wall_s") is not None:
            wall = (wall or 0.0) + summary["wall_s"]
    for key, path in _pairs(args.json, "--json"):
        metrics[key] = load_json(path)
    for key, path in _pairs(args.jsonl, "--jsonl"):
        metrics[key] = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for key, value in _pairs(args.metric, "--metric"):
        metrics[key] = _scalar(value)
    paper = {k: _scalar(v) for k, v in _pairs(args.paper, "--paper")}
    if paper and args.paper_source:
        paper["source"] = args.paper_source
    from lmlab.core.machine import load_average, machine_at_end
    if args.since:  # the whole result, not only its training steps
        start = load_json(args.since)
        machine = machine_at_end({k: v for k, v in start.items() if k != "time"})
        wall = round(time.time() - start["time"], 1)
    elif machine is not None:
        machine = {**machine, "load_avg_at_record": load_average()}
    extra: dict[str, Any] = {"kind": "markdown" if args.markdown and args.kind == "metrics" else args.kind}
    if arm_machines:
        extra["arm_machines"] = arm_machines
    if args.markdown:
        extra["markdown"] = Path(args.markdown).read_text(encoding="utf-8").strip() + "\n"
    record = make_record(args.name, args.command, metrics, wall_s=wall, machine=machine, seeds=[seed for group in args.seed for seed in group],
                         paper=paper or None, notes=args.notes, **extra)
    path = write_record(record, args.results_dir)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
