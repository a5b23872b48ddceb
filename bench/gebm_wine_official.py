"""GEBM vs the same RealNVP by maximum likelihood on a UCI table at the official epoch budget: curves against epochs,
both selection rules, the authors' logged points beside them. Prints markdown; --json writes the numbers.

Epochs are passes over the training rows by the updates that read data: the GEBM's energy updates (its base
updates draw base samples only) and every MLE update, `updates x batch / train rows`. Each evaluation row of the
runs' metrics.jsonl holds the validation NLL and, with eval.test_each_eval, the test NLL of the same weights (the
GEBM's with the same importance-sampling log Z). Two selection rules:
  - validation-selected: the evaluation with the lowest validation NLL (the run's best.pt), its test NLL, and
    the test NLL of best.pt re-estimated with more importance samples (--test, lmlab.core.gebm.evaluate);
  - min-over-test: the lowest test NLL over all evaluations, as the official tables (tables/UCI.tex) take it.

    python bench/gebm_wine_official.py --gebm RUN --mle RUN [--test-gebm J] [--test-mle J] [--official E:NLL,...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmlab.core.config import merge
from lmlab.core.errors import LmlabError
from lmlab.core.gebm import data as gdata
from lmlab.core.gebm.train import Config
from lmlab.core.plot import plot_series, read_metrics

MARKS = (40, 80, 200, 500, 1000, 2000)  # epochs at which the curves are tabled (the nearest evaluation)


def run_config(run_dir: Path) -> Config:
    return merge(Config(), json.loads((run_dir / "config.json").read_text()))


def energy_updates(steps: int, cfg: Config) -> int:
    """Energy updates made before base step `steps` of Algorithm 1 (energy_steps_init at 0, 1 and every init_every)."""
    o = cfg.optim
    return sum(o.energy_steps_init if (s < 2 or s % o.init_every == 0) else o.energy_steps for s in range(steps))


def curve(run_dir: Path) -> tuple[list[dict], dict]:
    """The evaluation rows of a run with their epoch, and the run's facts (objective, rows, batch)."""
    cfg = run_config(run_dir)
    rows_train = len(gdata.load_for_config(cfg.data)["train"])
    gebm = cfg.optim.objective == "gebm"
    key = "nll_gebm_nats" if gebm else "nll_base_nats"
    out = []
    for r in read_metrics(run_dir):
        if f"valid_{key}" not in r:
            continue
        data_updates = energy_updates(r["step"], cfg) if gebm else r["step"]
        out.append({"step": r["step"], "epoch": data_updates * cfg.data.batch_size / rows_train,
                    "valid": r[f"valid_{key}"], "test": r.get(f"test_{key}")})
    if not out:
        raise LmlabError(f"{run_dir}: no evaluation rows in metrics.jsonl")
    return out, {"objective": cfg.optim.objective, "train_rows": rows_train, "batch": cfg.data.batch_size,
                 "base_steps" if gebm else "updates": cfg.schedule.max_steps}


def at_epoch(rows: list[dict], epoch: float) -> dict:
    """valid and test NLL at `epoch`, linearly interpolated between the two evaluations around it."""
    after = next(i for i, r in enumerate(rows) if r["epoch"] >= epoch)
    a, b = rows[max(after - 1, 0)], rows[after]
    w = 0.0 if b["epoch"] == a["epoch"] else (epoch - a["epoch"]) / (b["epoch"] - a["epoch"])
    mix = (lambda k: None if a[k] is None or b[k] is None else a[k] + w * (b[k] - a[k]))
    return {"epoch": epoch, "valid": mix("valid"), "test": mix("test")}


def summary(rows: list[dict], test_json: Path | None) -> dict:
    chosen = min(rows, key=lambda r: r["valid"])
    tested = [r for r in rows if r["test"] is not None]
    out = {"evaluations": len(rows), "last": rows[-1],
           "validation_selected": {**chosen},
           "min_over_test": min(tested, key=lambda r: r["test"]) if tested else None,
           "at_epochs": {str(m): at_epoch(rows, m) for m in MARKS if rows[0]["epoch"] <= m <= rows[-1]["epoch"]}}
    if test_json:
        t = json.loads(test_json.read_text())
        out["validation_selected"]["test_reestimated"] = t.get("nll_gebm_nats") or t.get("nll_base_nats")
        out["validation_selected"]["test_reestimated_is_samples"] = t.get("is_samples")
        out["validation_selected"]["log_z_se"] = t.get("log_z_se")
    return out


def parse_official(text: str) -> list[tuple[float, float]]:
    try:
        return [(float(e), float(v)) for e, v in (p.split(":") for p in text.split(",") if p)]
    except ValueError:
        raise LmlabError(f"--official {text!r}: expected EPOCH:NLL,EPOCH:NLL") from None


def fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(res: dict) -> str:
    arms = res["arms"]
    lines = ["| rule | " + " | ".join(f"{a}: epoch | {a}: valid NLL | {a}: test NLL" for a in arms) + " |",
             "|---|" + "---:|" * (3 * len(arms))]
    rules = [("validation-selected (best.pt)", "validation_selected"), ("min over test (official tables)", "min_over_test"),
             ("last evaluation", "last")]
    for label, key in rules:
        cells = []
        for a in arms.values():
            r = a["summary"][key] or {}
            cells += [fmt(r.get("epoch")), fmt(r.get("valid")), fmt(r.get("test"))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, a in arms.items():
        v = a["summary"]["validation_selected"]
        if v.get("test_reestimated") is not None:
            how = (f"re-estimated with {v['test_reestimated_is_samples']:,} importance samples"
                   if v.get("test_reestimated_is_samples") else "recomputed (a flow: exact)")
            lines.append(f"\n{name}: best.pt's test NLL {how}: **{v['test_reestimated']:.3f}** nats"
                         + (f" (log Z s.e. {v['log_z_se']:.3f})" if v.get("log_z_se") else ""))
    marks = sorted({int(m) for a in arms.values() for m in a["summary"]["at_epochs"]})
    if marks:
        lines += ["", "Test NLL at fixed epochs (linear between the two evaluations around each):", "",
                  "| epoch | " + " | ".join(f"{a} test NLL" for a in arms)
                  + (" | authors' logged GEBM" if res["official"] else "") + " |",
                  "|---:|" + "---:|" * (len(arms) + bool(res["official"]))]
        official = dict(res["official"])
        for m in marks:
            cells = [fmt((a["summary"]["at_epochs"].get(str(m)) or {}).get("test")) for a in arms.values()]
            if res["official"]:
                cells.append(fmt(official.get(float(m))))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gebm", type=Path, required=True, help="the GEBM run dir")
    ap.add_argument("--mle", type=Path, required=True, help="the MLE run dir")
    ap.add_argument("--test-gebm", type=Path, help="lmlab.core.gebm.evaluate's JSON for the GEBM's best.pt")
    ap.add_argument("--test-mle", type=Path, help="the same for the MLE run")
    ap.add_argument("--official", default="", help="the authors' logged GEBM test NLL as EPOCH:NLL,... (cited)")
    ap.add_argument("--figure", type=Path, help="PNG of test (and valid) NLL against epochs")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    try:
        res = {"arms": {}, "official": parse_official(args.official)}
        for name, run, test in (("GEBM", args.gebm, args.test_gebm), ("MLE", args.mle, args.test_mle)):
            rows, facts = curve(run)
            res["arms"][name] = {"run": str(run), **facts, "summary": summary(rows, test), "curve": rows}
    except (LmlabError, OSError, KeyError, ValueError) as exc:
        sys.exit(f"gebm_wine_official: {exc}")
    if args.figure:
        series = {}
        for name, a in res["arms"].items():
            series[f"{name} test"] = [(r["epoch"], r["test"]) for r in a["curve"] if r["test"] is not None]
            series[f"{name} valid"] = [(r["epoch"], r["valid"]) for r in a["curve"]]
        if res["official"]:
            series["authors' logged GEBM test"] = res["official"]
        plot_series(series, args.figure, xlabel="epoch (passes over the training rows)", ylabel="NLL (nats, log scale)", logy=True,
                    title="red wine: GEBM vs RealNVP by MLE")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    sys.stdout.write(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
