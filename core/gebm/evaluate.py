"""Evaluating a GEBM: test NLL for density runs, FID/KID for image runs.

Density NLL of Q(dx) = exp(-E(x)) b(x) dx / Z with a flow base of density b:
    -log q(x) = E(x) - log b(x) + log Z,    Z = E_{x~B}[exp(-E(x))].
log Z is estimated by importance sampling with the base itself as proposal (weights w_i = exp(-E(x_i)),
x_i ~ B): log Ẑ = log mean_i w_i. Ẑ is unbiased for Z, so log Ẑ is biased low by ≈ Var(w)/(2 M Z²)
(Jensen), which makes the NLL slightly optimistic; we report its delta-method standard error
std(w)/(√M mean(w)) and the effective sample size (Σw)²/Σw² so a reader can judge it. The
learned scalar A (the KALE log-partition) estimates the same quantity and is reported beside it.
NLLs are in nats per row in the whitened coordinates, as in the official code.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from lmlab.core.distributed import pick_device
from lmlab.core.errors import LmlabError
from lmlab.core.gebm import data as gdata
from lmlab.core.gebm.fid import (SmallExtractor, features, frechet_from_stats, kernel_inception_distance,
                                 kid_pool, load_inception, load_real_stats, save_real_stats)
from lmlab.core.gebm.models import from_state
from lmlab.core.gebm.config import SamplerConfig
from lmlab.core.gebm.sample import sample as draw, sampler_config
from lmlab.core.reporting import Reporter, progress_lines


@torch.no_grad()
def log_partition_is(base, energy, num_samples: int, generator: torch.Generator, device, batch: int = 4096) -> dict:
    """log Z = log E_B[exp(-E)] by importance sampling from the base; returns value, s.e. and ESS fraction."""
    neg_e = []
    for start in range(0, num_samples, batch):
        n = min(batch, num_samples - start)
        neg_e.append(-energy(base(base.sample(n, generator, device))).double().cpu())
    a = torch.cat(neg_e)  # -E of each base sample: log of its importance weight
    bad = int((torch.isnan(a) | (a == math.inf)).sum())
    if bad:  # a NaN or E = -inf has no weight to average: the estimate would be meaningless
        raise LmlabError(f"importance sampling of log Z failed: {bad} of {len(a)} base samples have a NaN or -inf energy")
    zero = int((a == -math.inf).sum())  # E = +inf: weight exactly 0, still one of the samples of the average
    if zero == len(a):
        raise LmlabError("importance sampling of log Z failed: every base sample has energy +inf (all weights 0)")
    log_z = torch.logsumexp(a, 0) - math.log(len(a))
    w = torch.exp(a - a.max())  # scaled weights (0 where E = +inf)
    se = float(w.std() / (math.sqrt(len(w)) * w.mean()))
    ess = float(w.sum() ** 2 / (w.pow(2).sum() * len(w)))
    return {"log_z": float(log_z), "log_z_se": se, "ess_frac": ess, "num_samples": len(a), "zero_weight_samples": zero}


@torch.no_grad()
def nll_rows(base, energy, x: torch.Tensor, log_z: float, batch: int = 4096) -> dict:
    """Mean NLL of Q and of the base B on rows x (N, D), nats per row."""
    q, b = [], []
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        lb = base.log_prob(xb).double()
        b.append(-lb)
        q.append(energy(xb).double() - lb + log_z)
    q, b = torch.cat(q), torch.cat(b)
    n = len(q)
    return {"nll_gebm_nats": float(q.mean()), "nll_gebm_se": float(q.std() / math.sqrt(n)),
            "nll_base_nats": float(b.mean()), "nll_base_se": float(b.std() / math.sqrt(n))}


def evaluate_density(state: dict, *, split: str = "test", is_samples: int = 100000, seed: int = 0,
                     device: str = "auto", splits: dict | None = None) -> dict:
    """Test NLL of the GEBM Q (IS estimate of log Z) and of its base B, from a checkpoint."""
    dev = pick_device(device)
    cfg, base, energy, log_partition = from_state(state, dev)
    if cfg.data.kind != "density":
        raise LmlabError("this checkpoint is an image GEBM; NLL needs a density run (use FID/KID)")
    splits = splits if splits is not None else gdata.load_for_config(cfg.data)
    if split not in ("train", "valid", "test"):
        raise LmlabError(f"--split {split!r}: expected train, valid or test")
    x = torch.as_tensor(splits[split], device=dev)
    mle = state.get("objective", cfg.optim.objective) == "mle"
    z = {"log_z": 0.0, "log_z_se": 0.0, "ess_frac": 1.0, "num_samples": 0} if mle else \
        log_partition_is(base, energy, is_samples, torch.Generator().manual_seed(seed), dev)
    out = nll_rows(base, energy, x, z["log_z"])
    if not mle and getattr(energy, "flow", None) is not None and hasattr(energy, "_base"):
        with torch.no_grad():  # E = -log p_phi + log b: Q = p_phi exactly (Z = 1), a check on the IS estimate
            q = -energy.flow.log_prob(x).double()
        out["nll_gebm_exact_nats"], out["nll_gebm_exact_se"] = float(q.mean()), float(q.std() / math.sqrt(len(q)))
    if mle:
        out["nll_gebm_nats"] = out["nll_gebm_se"] = None  # the energy is untrained: only the base is a model
    return {"split": split, "rows": len(x), "objective": "mle" if mle else "gebm", **out,
            "log_z_is": z["log_z"], "log_z_se": z["log_z_se"], "is_ess_frac": z["ess_frac"],
            "is_samples": z["num_samples"], "log_partition_A": log_partition, "step": state.get("step")}


def make_extractor(inception: str | None, device, classifier: str | None = None) -> torch.nn.Module:
    """Inception-v3 FID weights, a CIFAR-10 classifier's penultimate layer (core/gebm/classifier.py), or the seeded
    small random net."""
    if inception and classifier:
        raise LmlabError("--inception and --classifier name two feature extractors: give one")
    if classifier:
        from lmlab.core.gebm.classifier import load_classifier
        return load_classifier(classifier).to(device)
    return load_inception(inception).to(device) if inception else SmallExtractor().to(device)


def extractor_id(inception: str | None, classifier: str | None = None) -> str:
    """What a statistics file must have been computed with: the weights file's sha256, or the seeded small net."""
    from lmlab.core.textio import sha256_file
    if classifier:
        return f"cifar10-classifier {Path(classifier).name} sha256 {sha256_file(classifier)}"
    if not inception:
        return "small-random-conv (seed 0, 64 features)"
    return f"inception-v3 {Path(inception).name} sha256 {sha256_file(inception)}"


def extractor_name(inception: str | None, classifier: str | None = None) -> str:
    return "cifar10-classifier" if classifier else "inception-v3" if inception else "small-random-conv"


def real_features(real, extractor, dev, stats_path: str | None, meta: dict) -> tuple:
    """(mu, sigma, features for KID, count) of the real images: from `stats_path` when it exists (checked against
    `meta`), else computed from `real` (an array or a function returning one) and, with `stats_path`, saved there."""
    if stats_path and Path(stats_path).exists():
        return load_real_stats(stats_path, meta)
    real = real() if callable(real) else real
    if isinstance(real, np.ndarray) and real.dtype == np.uint8:
        real = gdata.to_float(real)
    real = torch.as_tensor(real).float()
    f_real = features(extractor, real, device=dev)
    if stats_path:
        save_real_stats(stats_path, f_real, meta)
    return f_real.mean(0), np.cov(f_real, rowvar=False), kid_pool(f_real), len(real)


def _real_side(real, inception: str | None, classifier: str | None, dev, real_stats: str | None,
               real_meta: dict | None) -> tuple:
    """The feature extractor, the real images' (mu, sigma, KID features), and the result's first keys: what every
    comparison against `real` shares."""
    extractor = make_extractor(inception, dev, classifier)
    meta = {"extractor": extractor_id(inception, classifier), **(real_meta or {})}
    mu_real, sigma_real, f_real, count = real_features(real, extractor, dev, real_stats, meta)
    head = {"extractor": extractor_name(inception, classifier), "real_images": count, "real_stats": real_stats or None}
    return extractor, (mu_real, sigma_real, f_real), head


def _distances(real_stats: tuple, f_other: np.ndarray, kid_subset: int, name: str) -> dict:
    """fid_NAME, kid_NAME and kid_NAME_std of features f_other against the real statistics."""
    mu_real, sigma_real, f_real = real_stats
    kid, kid_std = kernel_inception_distance(f_real, f_other, subset_size=kid_subset)
    return {f"fid_{name}": frechet_from_stats(mu_real, sigma_real, f_other), f"kid_{name}": kid, f"kid_{name}_std": kid_std}


def evaluate_images(state: dict, real, cfg: SamplerConfig | None = None, *,
                    inception: str | None = None, num_samples: int = 1000, seed: int = 0, device: str = "auto",
                    kid_subset: int = 1000, real_stats: str | None = None, real_meta: dict | None = None,
                    classifier: str | None = None, reporter: Reporter | None = None, **overrides) -> dict:
    """FID/KID of the generator alone and of the GEBM (same G, same z_0) against `real` images (an array, or a
    function returning one: with `real_stats` saved earlier, the images are never loaded).

    The GEBM is sampled with `cfg` (default SamplerConfig(), the one set of sampler defaults) plus keyword
    overrides of its fields; `num_samples` is the number of fake images for FID/KID. `real_stats`: an .npz of the
    real features' statistics, computed once and reused while `real_meta` (source, split, count) and the extractor
    are the same. `reporter`: progress lines while each arm's chains run (minutes on a CPU).
    """
    cfg = sampler_config(None, cfg, **overrides)
    dev = pick_device(device)
    extractor, stats, head = _real_side(real, inception, classifier, dev, real_stats, real_meta)
    out = {**head, "fake_images": num_samples, "sampler_config": dataclasses.asdict(cfg)}
    for name, which in (("generator", "none"), ("gebm_" + cfg.sampler, cfg.sampler)):
        if name != "generator" and (which == "none" or cfg.steps <= 0):
            continue
        progress = progress_lines(reporter, f"sampling {name}", every_s=60.0) if reporter else None
        fake = draw(state, dataclasses.replace(cfg, sampler=which), num_samples=num_samples, seed=seed,
                    device=str(dev), progress=progress)
        out.update(_distances(stats, features(extractor, fake, device=dev), kid_subset, name))
    return out


def evaluate_real_reference(real, reference, *, inception: str | None = None, classifier: str | None = None,
                            device: str = "auto", kid_subset: int = 1000, real_stats: str | None = None,
                            real_meta: dict | None = None) -> dict:
    """FID/KID of other real images (`reference`, e.g. CIFAR-10 training images; an array or a function returning
    one) against `real`, on the same extractor and statistics as evaluate_images: the figure a perfect sampler
    would reach with that many images, which gives a sampler's FID its scale."""
    dev = pick_device(device)
    extractor, stats, head = _real_side(real, inception, classifier, dev, real_stats, real_meta)
    reference = reference() if callable(reference) else reference
    f_ref = features(extractor, torch.as_tensor(gdata.to_float(reference)).float(), device=dev)
    return {**head, "reference_images": len(reference), **_distances(stats, f_ref, kid_subset, "real_reference")}


def main(argv: list[str] | None = None) -> dict:
    """`python -m lmlab.core.gebm.evaluate CKPT [--out r.json]`: test NLL (density) or FID/KID (images) as JSON.

    Density: NLL of Q (IS log Z from the base, with s.e.) and of the base B on --split.
    Images: FID/KID of the generator alone and of the GEBM sampled by --sampler against --real images
    (an image folder/tarball/pickle dir; --real-split, --real-count); --inception for Inception-v3 weights.
    Floor: --reference-split train (no checkpoint needed with --real) scores real images of that split instead.
    The sampler settings are SamplerConfig's defaults <- --preset's [sample] table <- the sampler flags,
    exactly as `lmlab sample` resolves them.
    """
    import argparse
    import sys

    from lmlab.core.checkpoint import load_checkpoint

    ap = argparse.ArgumentParser(prog="python -m lmlab.core.gebm.evaluate", description=main.__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default="", help="a GEBM checkpoint (optional with --reference-split "
                    "and --real)")
    ap.add_argument("--split", default="test", help="density: train | valid | test")
    ap.add_argument("--is-samples", type=int, default=100000, help="density: base samples for log Z")
    ap.add_argument("--real", default="", help="images: real images (default: the run's data.path)")
    ap.add_argument("--real-split", default="test")
    ap.add_argument("--real-count", type=int, default=1000)
    ap.add_argument("--real-stats", default="", help="images: .npz of the real images' feature statistics; computed "
                    "and saved on first use, then read instead of the images (refused if the source, split, count "
                    "or extractor differ)")
    ap.add_argument("--inception", default="", help="images: FID Inception-v3 state dict; empty = small random extractor")
    ap.add_argument("--classifier", default="", help="images: a CIFAR-10 classifier file (python -m "
                    "lmlab.core.gebm.classifier) whose penultimate features replace Inception's (the CPU tier)")
    ap.add_argument("--num-samples", type=int, default=1000, help="images: fake images for FID/KID")
    ap.add_argument("--reference-split", default="", help="images: instead of sampling, score --reference-count real "
                    "images of this split (e.g. train) against --real: the FID/KID floor on the same features")
    ap.add_argument("--reference-count", type=int, default=10000)
    ap.add_argument("--preset", default="", help="images: presets whose [sample] tables set the sampler "
                    "(comma list); flags below override; unset flags keep SamplerConfig's defaults")
    d = SamplerConfig()
    ap.add_argument("--sampler", default=None, choices=("ula", "kla"), help=f"default {d.sampler}")
    ap.add_argument("--steps", type=int, default=None, help=f"default {d.steps}")
    ap.add_argument("--step-size", type=float, default=None, help=f"lambda (KLA: h = 2 sqrt(lambda)); default {d.step_size}")
    ap.add_argument("--beta", type=float, default=None, help=f"default {d.beta}")
    ap.add_argument("--friction", type=float, default=None, help=f"KLA friction; default {d.friction}")
    ap.add_argument("--mass", type=float, default=None, help=f"KLA mass; default {d.mass}")
    ap.add_argument("--decay-every", type=int, default=None, help=f"default {d.decay_every}")
    ap.add_argument("--decay", type=float, default=None, help=f"factor on lambda; default {d.decay}")
    ap.add_argument("--kid-subset", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args(argv)
    try:
        if args.reference_split:
            return _write(_real_reference_from_args(args), args.out)
        if not args.checkpoint:
            raise LmlabError("give a GEBM checkpoint (or --reference-split with --real)")
        state = load_checkpoint(args.checkpoint, "gebm")
        cfg = from_state(state, "cpu")[0]
        if cfg.data.kind == "density":
            res = evaluate_density(state, split=args.split, is_samples=args.is_samples, seed=args.seed,
                                   device=args.device)
        else:
            source = args.real or cfg.data.path
            real = lambda: gdata.load_cifar10(source, args.real_split, args.real_count, seed=args.seed)  # noqa: E731
            flags = {k: getattr(args, k) for k in ("sampler", "steps", "step_size", "beta", "friction", "mass",
                                                   "decay_every", "decay") if getattr(args, k) is not None}
            scfg = sampler_config([args.preset] if args.preset else None, **flags)
            res = evaluate_images(state, real, scfg, inception=args.inception or None, classifier=args.classifier or None,
                                  num_samples=args.num_samples,
                                  seed=args.seed, device=args.device, kid_subset=args.kid_subset,
                                  real_stats=args.real_stats or None, reporter=Reporter(),
                                  real_meta={"source": str(Path(source).resolve()), "split": args.real_split,
                                             "requested": args.real_count, "seed": args.seed})
    except LmlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return _write(res, args.out)


def _write(res: dict, out: str) -> dict:
    """The result as JSON on stdout and, with --out, atomically in that file."""
    import json

    from lmlab.core.checkpoint import atomic_write_text
    text = json.dumps(res, indent=2)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")
    return res


def _real_reference_from_args(args) -> dict:
    """--reference-split: real images of that split scored against --real (the FID/KID floor)."""
    from lmlab.core.checkpoint import load_checkpoint
    if not (args.real or args.checkpoint):
        raise LmlabError("--reference-split needs --real (or a checkpoint whose data.path names the images)")
    source = args.real or from_state(load_checkpoint(args.checkpoint, "gebm"), "cpu")[0].data.path
    res = evaluate_real_reference(
        lambda: gdata.load_cifar10(source, args.real_split, args.real_count, seed=args.seed),
        lambda: gdata.load_cifar10(source, args.reference_split, args.reference_count, seed=args.seed),
        inception=args.inception or None, classifier=args.classifier or None, device=args.device,
        kid_subset=args.kid_subset, real_stats=args.real_stats or None,
        real_meta={"source": str(Path(source).resolve()), "split": args.real_split, "requested": args.real_count,
                   "seed": args.seed})
    return {**res, "reference_split": args.reference_split}


if __name__ == "__main__":
    main()
