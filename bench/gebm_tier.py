"""The GEBM CPU image tier (issue #19, 4b): the generator alone against ULA and KLA samples of the GEBM, per seed,
as mean ± sd over seeds and the paired difference to the generator (same run, same z_0, same feature extractor).

    python bench/gebm_tier.py --seed 1=runs/gebm-cifar10-tier/s1 --seed 2=runs/gebm-cifar10-tier/s2 \
        [--reference fid-reference.json] [--figure docs/figures/gebm-cifar10-cpu-tier.png] [--json summary.json] > summary.md

Each seed dir holds fid-ula.json and fid-kla.json (python -m lmlab.core.gebm.evaluate --out) and, for the figure,
samples-{none,ula,kla}.png (lmlab sample). The claim (Arbel et al. 2021, Sec. 6.1) is a lower FID/KID for the
GEBM's samples than for its generator's: the table says where the paired difference is below zero by more than
two standard errors.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ARMS = (("generator alone", "generator", "fid-kla.json"), ("ULA", "gebm_ula", "fid-ula.json"),
        ("KLA", "gebm_kla", "fid-kla.json"))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarize(seeds: dict[str, Path]) -> dict:
    per_seed = {}
    for seed, run in seeds.items():
        row, files = {}, {name: json.loads((run / name).read_text()) for name in {name for _, _, name in ARMS}}
        for _, key, name in ARMS:
            js = files[name]
            row[f"fid_{key}"], row[f"kid_{key}"] = js[f"fid_{key}"], js[f"kid_{key}"]
            row["extractor"], row["fake_images"], row["real_images"] = js["extractor"], js["fake_images"], js["real_images"]
        per_seed[seed] = row
    extractors = {r["extractor"] for r in per_seed.values()}
    if len(extractors) != 1:
        raise SystemExit(f"the seeds were scored with different feature extractors: {sorted(extractors)}")
    arms = []
    for label, key, _ in ARMS:
        out = {"arm": label}
        for metric in ("fid", "kid"):
            vals = [r[f"{metric}_{key}"] for r in per_seed.values()]
            out[metric], out[f"{metric}_sd"] = _mean_sd(vals)
            if key != "generator":
                diffs = [r[f"{metric}_{key}"] - r[f"{metric}_generator"] for r in per_seed.values()]
                mean, sd = _mean_sd(diffs)
                out[f"{metric}_diff"], out[f"{metric}_diff_se"] = mean, sd / math.sqrt(len(diffs))
        arms.append(out)
    first = next(iter(per_seed.values()))
    return {"seeds": list(per_seed), "extractor": first["extractor"], "fake_images": first["fake_images"],
            "real_images": first["real_images"], "per_seed": per_seed, "arms": arms}


def with_reference(summary: dict, reference: dict) -> dict:
    """Adds the real-vs-real floor (python -m lmlab.core.gebm.evaluate --reference-split): checked to be on the
    same extractor and real images as the seeds' scores."""
    if (reference["extractor"], reference["real_images"]) != (summary["extractor"], summary["real_images"]):
        raise SystemExit(f"the reference was scored on {reference['extractor']} / {reference['real_images']} real images, "
                         f"the seeds on {summary['extractor']} / {summary['real_images']}")
    return {**summary, "reference": {"split": reference["reference_split"], "images": reference["reference_images"],
                                     "fid": reference["fid_real_reference"], "kid": reference["kid_real_reference"]}}


def markdown(summary: dict) -> str:
    n = len(summary["seeds"])
    lines = [f"FID/KID on {summary['extractor']} features: {summary['fake_images']:,} samples against "
             f"{summary['real_images']:,} CIFAR-10 test images; mean ± sd over {n} seeds (one trained GEBM each); "
             "paired difference to the generator alone, mean ± SE (negative: the GEBM's samples are closer to the data).",
             "", "| arm | FID | KID ×10³ | ΔFID vs generator | ΔKID ×10³ vs generator | below by > 2 SE |",
             "|---|---|---|---|---|---|"]
    for a in summary["arms"]:
        fid = f"{a['fid']:.3f} ± {a['fid_sd']:.3f}"  # classifier-feature FIDs can be small: 3 decimals
        kid = f"{1e3 * a['kid']:.3f} ± {1e3 * a['kid_sd']:.3f}"
        if "fid_diff" in a:
            dfid = f"{a['fid_diff']:+.3f} ± {a['fid_diff_se']:.3f}"
            dkid = f"{1e3 * a['kid_diff']:+.3f} ± {1e3 * a['kid_diff_se']:.3f}"
            below = "yes" if a["fid_diff"] < -2 * a["fid_diff_se"] and a["kid_diff"] < -2 * a["kid_diff_se"] else "no"
        else:
            dfid = dkid = below = ""
        lines.append(f"| {a['arm']} | {fid} | {kid} | {dfid} | {dkid} | {below} |")
    ref = summary.get("reference")
    if ref:  # the floor: what a sampler that drew real images would score with as many images
        lines.append(f"| real {ref['split']} images ({ref['images']:,}): the floor | {ref['fid']:.3f} | "
                     f"{1e3 * ref['kid']:.3f} |  |  |  |")
    lines += ["", "Per seed (FID): " + "; ".join(
        f"seed {s}: generator {r['fid_generator']:.3f}, ULA {r['fid_gebm_ula']:.3f}, KLA {r['fid_gebm_kla']:.3f}"
        for s, r in summary["per_seed"].items()) + "."]
    return "\n".join(lines) + "\n"


def figure(run: Path, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    for ax, (title, which) in zip(axes, (("generator alone", "none"), ("GEBM, ULA", "ula"), ("GEBM, KLA", "kla"))):
        ax.imshow(mpimg.imread(run / f"samples-{which}.png"))
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"CIFAR-10 CPU tier, {run.name}: the same z_0 through G, and sampled from the energy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", action="append", required=True, metavar="SEED=DIR")
    ap.add_argument("--figure", default="")
    ap.add_argument("--json", default="")
    ap.add_argument("--reference", default="", help="real images scored as a sampler would be (evaluate --reference-split)")
    args = ap.parse_args()
    seeds = {}
    for item in args.seed:
        seed, _, run = item.partition("=")
        if not run:
            raise SystemExit(f"--seed {item!r}: expected SEED=DIR")
        seeds[seed] = Path(run)
    summary = summarize(seeds)
    if args.reference:
        summary = with_reference(summary, json.loads(Path(args.reference).read_text()))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.figure:
        figure(next(iter(seeds.values())), Path(args.figure))
    print(markdown(summary), end="")


if __name__ == "__main__":
    main()
