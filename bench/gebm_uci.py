"""GEBM vs the same RealNVP trained by maximum likelihood on a UCI table, same budget; prints JSON.

Budget: both runs make the same number of optimizer updates in total. The GEBM makes
`schedule.max_steps` base updates plus its energy updates (the preset's `energy_steps` per base step, 50 in the
official UCI recipe, and `energy_steps_init` = 100 at steps 0, 1 and every 500th); the MLE run gets that
total as MLE steps, with the same learning-rate milestones. Both are evaluated once, at the end
(run.eval_interval scaled so), and tested with `evaluate_density` (IS log Z with its s.e. for the GEBM).

    python bench/gebm_uci.py gebm-uci-redwine [--max-steps N] [--threads T] [--out runs/x.json]
"""

from __future__ import annotations

import argparse
import json
import sys

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import resolve
from lmlab.core.gebm.evaluate import evaluate_density
from lmlab.core.gebm.train import Config, train
from lmlab.core.reporting import Reporter


def energy_updates(steps: int, cfg: Config) -> int:
    """Energy updates made in `steps` base steps of Algorithm 1."""
    o = cfg.optim
    return sum(o.energy_steps_init if (s < 2 or s % o.init_every == 0) else o.energy_steps for s in range(steps))


def _dir(args, cfg: Config, name: str) -> str:
    stem = f"{cfg.run.dir.rstrip('/').split('/')[-1]}-{name}-s{args.seed}"
    return f"{args.run_root.rstrip('/')}/{stem}" if args.run_root else f"{cfg.run.dir}-{name}-s{args.seed}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("--max-steps", type=int, default=0, help="schedule.max_steps, the GEBM's base updates (0: the preset's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--is-samples", type=int, default=100000)
    ap.add_argument("--out", default="")
    ap.add_argument("--run-root", default="", help="put the run dirs here instead of the preset's run.dir parent")
    args = ap.parse_args()
    over = {"hardware": {"threads": args.threads, "device": "cpu"}, "seed": args.seed}
    if args.max_steps:
        over["schedule"] = {"max_steps": args.max_steps}
    cfg = resolve(Config, "train-ebm", [args.preset], over)
    steps = cfg.schedule.max_steps
    total = steps + energy_updates(steps, cfg)
    runs = {}
    for name, extra in (("gebm", {}), ("mle", {"optim": {"objective": "mle"}, "schedule": {"max_steps": total}})):
        run = {"dir": _dir(args, cfg, name)}
        if name == "mle":
            run["eval_interval"] = cfg.run.eval_interval * (total // steps)
        c = resolve(Config, "train-ebm", [args.preset], {**over, **extra, "run": run})
        summary = train(c, Reporter(interval_s=30))
        state = load_checkpoint(f"{c.run.dir}/checkpoints/best.pt", "gebm")
        res = evaluate_density(state, split="test", is_samples=args.is_samples, seed=args.seed, device="cpu")
        runs[name] = {"updates": c.schedule.max_steps if name == "mle" else total, "seconds": summary["seconds"],
                      "best_step": state["step"], **res}
        print(json.dumps({name: runs[name]}), file=sys.stderr)
    text = json.dumps({"preset": args.preset, "seed": args.seed, **runs}, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
