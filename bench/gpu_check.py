"""The GPU tier's check: each paper-size Make target started unedited with HW=gpu for a bounded time.

A device lease here is minutes, a paper run is hours to days, so this does not reproduce a paper: it shows that each
target builds its data, starts training on the GPU with the paper's preset, and how fast it goes there. Each goal
runs as `make GOAL HW=gpu VARS...` under `timeout -s TERM SECONDS` (the trainers save and stop on SIGTERM); from the
plain progress lines (core/reporting.py: "[lmlab HH:MM:SS] PHASE done/total ...") it reports the phase reached,
the update rate after the first progress line (compilation and data loading excluded) and the hours the whole
budget would take at that rate. A goal that fails before its time is up is reported with its last error line.

    python bench/gpu_check.py --seconds 60 --logs DIR --json out.json imm-large=runs/ptb-lstm-large.train.json ...
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

PROGRESS = re.compile(r"^\[lmlab (\d\d):(\d\d):(\d\d)\] (\w[\w-]*) (\d+)/(\d+)(\s|$)")
TIMED_OUT = 124  # timeout(1)'s status when it had to stop the command


def seconds_of_day(h: str, m: str, s: str) -> int:
    return int(h) * 3600 + int(m) * 60 + int(s)


def progress_of(lines: list[str]) -> dict | None:
    """The last training phase in a log: its name, updates done of its total, and the update rate measured between
    its first and last progress lines, else from the trainer's own s_per_step, else None."""
    points: dict[str, list[tuple[int, int, int]]] = {}
    last_phase, last_line = None, {}
    for line in lines:
        m = PROGRESS.match(line)
        if m:
            last_line[m.group(4)] = line
            h, mi, s, phase, done, total = m.groups()[:6]
            points.setdefault(phase, []).append((seconds_of_day(h, mi, s), int(done), int(total)))
            last_phase = phase
    if last_phase is None:
        return None
    pts = points[last_phase]
    (t0, d0, _), (t1, d1, total) = pts[0], pts[-1]
    elapsed = (t1 - t0) % 86400
    rate = (d1 - d0) / elapsed if elapsed > 0 and d1 > d0 else None
    per_step = re.search(r"\bs_per_step=([0-9.eE+-]+)", last_line[last_phase])
    if rate is None and per_step and float(per_step.group(1)) > 0:  # a trainer that times its own steps (gebm)
        rate = 1.0 / float(per_step.group(1))
    return {"phase": last_phase, "done": d1, "total": total, "updates_per_s": rate,
            "hours_for_total": (total / rate / 3600) if rate else None}


def last_error(lines: list[str]) -> str:
    """The line a failed goal ended on: lmlab's one-line error, else a Python exception's, else make's, else the last."""
    for pattern in (r"^(lmlab: )?error", r"^\w+(Error|Exception): ", r"Error|Traceback|No rule to make target"):
        hits = [l for l in lines if re.search(pattern, l)]
        if hits:
            return hits[-1].strip()[:300]
    return (lines[-1].strip() if lines else "")[:300]


def check(name: str, goal: str, variables: list[str], seconds: int, hw: str, logs: Path) -> dict:
    """Run one goal under the time limit and classify how it ended."""
    cmd = ["timeout", "-s", "TERM", "-k", "30", str(seconds), "make", goal, f"HW={hw}", *variables]
    log = logs / f"{name}.log"
    start = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    lines = log.read_text(errors="replace").splitlines()
    progress = progress_of(lines)
    if rc == 0:
        status = "completed"
    elif rc == TIMED_OUT or any("training stopped by" in l for l in lines):
        status = "running at the time limit" if progress else "no training progress by the time limit"
    else:
        status = "failed"
    row = {"name": name, "command": shlex.join(cmd[6:]), "limit_s": seconds, "status": status, "exit": rc, "wall_s": round(wall, 1),
           "progress": progress}
    if status != "completed" and status != "running at the time limit":
        row["last_line"] = last_error(lines)
    return row


def markdown(rows: list[dict]) -> str:
    out = [f"Each target started unedited for at most the time limit (`timeout -s TERM`); the rate is measured after the "
           "first progress line, the hours are the preset's whole budget at that rate.", "",
           "| target | command | limit s | status | phase reached | updates/s | hours for the budget |",
           "|---|---|---:|---|---|---:|---:|"]
    for r in rows:
        p = r["progress"] or {}
        reached = f"{p['phase']} {p['done']:,}/{p['total']:,}" if p else "-"
        rate = f"{p['updates_per_s']:.2f}" if p.get("updates_per_s") else "-"
        hours = f"{p['hours_for_total']:.1f}" if p.get("hours_for_total") else "-"
        status = r["status"] + (f": `{r['last_line']}`" if r.get("last_line") else "")
        out.append(f"| {r['name']} | `{r['command']}` | {r['limit_s']} | {status} | {reached} | {rate} | {hours} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("goals", nargs="+", help="NAME[@SECONDS]=GOAL[,VAR=VALUE...]: a make goal, the variables it is run with and its own time limit")
    ap.add_argument("--seconds", type=int, default=60, help="time limit per goal")
    ap.add_argument("--hw", default="gpu", help="the hardware preset (HW=) every goal runs with")
    ap.add_argument("--logs", type=Path, required=True, help="folder for one log per goal")
    ap.add_argument("--json", type=Path, required=True, help="the rows as JSON (for the record)")
    args = ap.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.goals:
        name, _, rest = spec.partition("=")
        name, _, seconds = name.partition("@")
        goal, *variables = rest.split(",")
        if not name or not goal or (seconds and not seconds.isdigit()):
            ap.error(f"{spec!r}: expected NAME[@SECONDS]=GOAL[,VAR=VALUE...]")
        rows.append(check(name, goal, variables, int(seconds or args.seconds), args.hw, args.logs))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    args.json.write_text(json.dumps({"seconds_per_target": args.seconds, "hw": args.hw, "targets": rows}, indent=1))
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
