"""GEBM on a CIFAR-10 subset end to end on CPU: train, ULA/KLA sampling, PNG grids, FID/KID vs the generator alone.

FID/KID use `--inception PATH` (FID Inception-v3 weights) when given, else a small seeded random
conv extractor (numbers comparable only with each other).

    python bench/gebm_images.py --preset gebm-cifar10-cpu --run-dir runs/gebm-cifar10-cpu-bench --out-dir runs/gebm-cifar10-cpu-bench/out

(`make -f pipelines/gebm.mk gebm-cifar10-cpu` does the same through the CLI.)
"""

from __future__ import annotations

import argparse
import json

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import resolve
from lmlab.core.gebm import data as gd
from lmlab.core.gebm.evaluate import evaluate_images
from lmlab.core.gebm.sample import sample, sampler_config, write_samples
from lmlab.core.gebm.train import Config, train
from lmlab.core.reporting import Reporter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gebm-cifar10-cpu")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inception", default="")
    ap.add_argument("--fid-samples", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=None, help="override the preset's [sample] steps")
    ap.add_argument("--step-size", type=float, default=None, help="override the preset's [sample] lambda")
    ap.add_argument("--beta", type=float, default=None, help="override the preset's [sample] beta")
    args = ap.parse_args()
    flags = {k: getattr(args, k) for k in ("steps", "step_size", "beta") if getattr(args, k) is not None}
    scfg = sampler_config([args.preset], **flags)  # the same sampler as `lmlab sample --preset` and the evaluator
    cfg = resolve(Config, "train-ebm", [args.preset],
                  {"run": {"dir": args.run_dir}, "hardware": {"threads": args.threads, "device": "cpu"}})
    summary = train(cfg, Reporter(interval_s=20))
    state = load_checkpoint(f"{args.run_dir}/checkpoints/best.pt", "gebm")
    for sampler in ("none", "ula", "kla"):
        x = sample(state, scfg, sampler=sampler, seed=0, device="cpu")
        write_samples(x, f"{args.out_dir}/samples-{sampler}.png")
        write_samples(x, f"{args.out_dir}/samples-{sampler}.npy")
    real = gd.load_cifar10(cfg.data.path, "test", args.fid_samples, seed=0)
    write_samples(gd.to_float(real[:64]), f"{args.out_dir}/real.png")
    res = {"train": summary}
    for sampler in ("ula", "kla"):
        res[sampler] = evaluate_images(state, real, scfg, sampler=sampler, inception=args.inception or None,
                                       num_samples=args.fid_samples, seed=0, device="cpu", kid_subset=500)
    text = json.dumps(res, indent=2)
    print(text)
    with open(f"{args.out_dir}/results.json", "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
