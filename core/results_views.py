"""The named views of result records: one table each, shown by a paper doc's `<!-- generated:NAME:VIEW -->` region
(core/results_doc.py renders the regions; a record's whole rendering is there too)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable


def num(value: Any, fmt: str = "{:,}") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and fmt == "{:,}":
        fmt = "{:,.4g}" if abs(value) < 1000 else "{:,.1f}"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def pm(mean: float, spread: float) -> str:
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
             f"**{ours['valid_ppl']:.3f}**", f"**{ours['test_ppl']:.3f}**", num(ref.get("seconds_ours"))],
            ["slow reference (`bench/imm_kn_ptb.py`)", "", f"{ref['bigram_types']:,}", d(ref["reference_discounts"]),
             f"{ref['valid_ppl_reference']:.3f}", f"{ref['test_ppl_reference']:.3f}", num(ref.get("seconds_reference"))]]
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
                  [[_arm_label(rec, a)] + [pm(summ[a][k]["mean"], summ[a][k]["sd"]) for k, _ in _TOY_METRICS]
                   + [f"{summ[a]['modes_covered']['mean']:g}/{summ[a]['modes']['mean']:g}"] for a in arms])
    paired = _table(["arm − generator"] + [label for _, label in _TOY_METRICS],
                    [[_arm_label(rec, a)] + [pm(summ[a][k]["diff_vs_generator"], summ[a][k]["diff_se"])
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
                 [[str(n)] + [pm(m["test_acc"]["mean"][i], m["test_acc"]["sd"][i]) + f", r {m['selected_ratio'][i]:g}"
                              for m in meth.values()] for i, n in enumerate(mt["sizes"])])
    diff = _table(["n"] + [f"{_LOGISTIC_METHODS.get(k, k)} − MLE (better/worse)" for k in paired],
                  [[str(n)] + [pm(p["mean"][i], p["se"][i]) + f" ({p['n_better'][i]}/{p['n_worse'][i]})"
                               for p in paired.values()] for i, n in enumerate(mt["sizes"])])
    r = mt["restricted_only_test_acc"]
    return (f"Test accuracy, mean ± sd over {len(rec.get('seeds') or [])} seeds, at the r chosen on validation "
            f"(thresholding P̄(y | x1) alone: {pm(r['mean'], r['sd'])}; Bayes accuracy {mt['bayes_accuracy']:g}):\n\n"
            f"{acc}\n\nPaired difference to MLE (mean ± s.e.; seeds better/worse):\n\n{diff}")


def view_imm_reinforce(rec: dict[str, Any]) -> str:
    """Mean total reward per epoch count for each arm (the official cached mean beside), the paired gain over no
    IMM, and the λ/(1+λ) sweep."""
    mt = rec["metrics"]
    arms, paired, sweep = mt["arms"], mt["paired_vs_none"], mt["lambda_sweep"]
    imm_arm = next((a for a in arms if a != "none"), None)
    head = ["epochs"] + (["λ/(1+λ)"] if imm_arm else []) + [f"{a} (official)" for a in arms]
    reward = _table(head, [[str(e)] + ([f"{arms[imm_arm]['lambda_ratio'][i]:g}"] if imm_arm else [])
                           + [pm(a["mean"][i], a["sd"][i])
                              + (f" ({a['official_cached_mean'][i]:g})" if a.get("official_cached_mean") else "")
                              for a in arms.values()] for i, e in enumerate(mt["epochs"])])
    gain = _table(["epochs"] + [f"{a} − none (better/worse)" for a in paired],
                  [[str(e)] + [pm(p["mean"][i], p["se"][i]) + f" ({p['n_better'][i]}/{p['n_worse'][i]})"
                               for p in paired.values()] for i, e in enumerate(mt["epochs"])])
    sp = sweep["paired_vs_ratio0"]
    lam = _table(["λ/(1+λ)"] + [f"{e} epochs: reward (− ratio 0 ± s.e.)" for e in sweep["epochs"]],
                 [[f"{r:g}"] + [pm(sweep["mean"][j][i], sweep["sd"][j][i])
                                + (f" ({pm(sp['mean'][j][i], sp['se'][j][i])})" if r else "")
                                for j in range(len(sweep["epochs"]))] for i, r in enumerate(sweep["ratios"])])
    return (f"Mean total reward ± sd over {len(rec.get('seeds') or [])} seeds (the official repository's cached mean "
            f"in brackets):\n\n{reward}\n\nPaired gain over no IMM (mean ± s.e.; seeds better/worse):\n\n{gain}\n\n"
            f"λ/(1+λ) sweep, maximal-utility IMM:\n\n{lam}")


def view_residual_bracket(rec: dict[str, Any]) -> str:
    """The joint model's test perplexity bracket per n beside the base LM's, each n's paired per-window gain, and
    Algorithm 1's cost against one base-LM sampling pass."""
    mt = rec["metrics"]
    test, gen = mt["test"], mt.get("generation") or {}
    rows = [["base LM", "", f"{test['base_lm']['ppl']:.2f}", "", ""]]
    for r in test["joint"]:
        gain = r.get("paired_gain_upper") or r["paired_gain_lower"]  # the upper (bias-corrected) estimate where n ≥ 2
        rows.append(["joint", str(r["n"]), f"{r['lower_ppl']:.2f}", num(r.get("upper_ppl"), "{:.2f}"),
                     pm(gain["mean_nats_per_window"], gain["se"])])
    table = _table(["model", "n", "lower ppl", "upper ppl", "paired gain, nats/window (± s.e.)"], rows)
    cost = (f"\n\nAlgorithm 1 ({gen['prefixes']} prefixes × {gen['candidates']} top-{gen['top_k']} candidates) took "
            f"{gen['ratio']:.2f}× one batched base-LM sampling pass of as many continuations." if gen.get("ratio") else "")
    return (f"Test split, {test['examples']} windows of {test['prefix_len']} + {test['continuation_len']} tokens, "
            f"perplexity per continuation token:\n\n{table}{cost}")


def view_define_cache(rec: dict[str, Any]) -> str:
    """The demo DeFINE LM's validation score with its live unit and with the unit cached as a V x m table: equal
    figures are the claim; the evaluation rate is one timing of each, at the record's load."""
    mt = rec["metrics"]
    live, cached, sizes = mt["best"], mt["cached"], mt.get("cache") or {}
    rows = [[f"`{Path(r['checkpoint']).name}`", kind, num(sizes.get(key)), f"{r['nats_per_token']:.12f}",
             f"{r['ppl']:.2f}", num(r["tokens_per_s"], "{:,.0f}")]
            for r, kind, key in ((live, "DeFINE unit", "embedding_params_before"),
                                 (cached, "V x m table", "embedding_params_after"))]
    table = _table(["checkpoint", "input embedding", "embedding params", "valid nats/token", "valid ppl",
                    "eval tokens/s"], rows)
    diff = cached["nats_per_token"] - live["nats_per_token"]
    return (f"{table}\n\ncached − live: {diff:+.1e} nats/token over {live['tokens']:,} tokens of "
            f"`{live['source']}`; the cached model evaluated {cached['tokens_per_s'] / live['tokens_per_s']:.2f}× as "
            f"fast (one timing each).")


def view_gebm_wine(rec: dict[str, Any]) -> str:
    """GEBM vs the same RealNVP by maximum likelihood at an equal number of updates: test NLL per row (the GEBM's by
    importance sampling beside its exact −log p_φ and its base alone), log Ẑ and the IS effective sample size."""
    mt = rec["metrics"]
    g, m, tg, tm = mt["test-gebm"], mt["test-mle"], mt["train-gebm"], mt["train-mle"]
    se = lambda x, s: pm(x, s) if x is not None else "—"  # noqa: E731
    rows = [["GEBM (KALE)", num(tg["updates"]), f"{tg['best_metric']:.2f}", se(g["nll_gebm_nats"], g["nll_gebm_se"]),
             se(g["nll_gebm_exact_nats"], g["nll_gebm_exact_se"]), se(g["nll_base_nats"], g["nll_base_se"]),
             se(g["log_z_is"], g["log_z_se"]), f"{g['is_ess_frac']:.2f} of {g['is_samples']:,}"],
            ["RealNVP by MLE", num(tm["updates"]), f"{tm['best_metric']:.2f}", se(m["nll_base_nats"], m["nll_base_se"]),
             "", "", "", ""]]
    table = _table(["model", "updates", "valid NLL", "test NLL (± s.e., rows)", "exact −log p_φ", "base b alone",
                    "log Ẑ (± s.e.)", "IS ESS"], rows)
    return (f"Nats per row, {g['rows']} test rows:\n\n{table}\n\nGEBM − MLE on test: "
            f"{g['nll_gebm_nats'] - m['nll_base_nats']:+.2f} nats/row; the energy over its base: "
            f"{g['nll_gebm_nats'] - g['nll_base_nats']:+.2f}; log Ẑ is {abs(g['log_z_is']) / g['log_z_se']:.1f} s.e. "
            f"from 0.")


def view_gebm_images(rec: dict[str, Any]) -> str:
    """FID and KID of the generator alone and of the GEBM's latent sampler against the same real images; which
    feature extractor scored them (a random conv net's numbers compare only with each other)."""
    mt = rec["metrics"]
    fk, tr = mt["fid-kid"], mt["train"]
    sc = fk["sampler_config"]
    names = [k[len("fid_"):] for k in fk if k.startswith("fid_")]

    def label(name: str) -> str:
        if name == "generator":
            return "generator alone, G(z₀)"
        return f"GEBM, {sc['sampler'].upper()} ({sc['steps']} steps)"

    rows = [[label(n), f"{fk[f'fid_{n}']:.4g}", pm(fk[f"kid_{n}"], fk[f"kid_{n}_std"])] for n in names]
    table = _table(["samples", "FID", "KID (± sd over subsets)"], rows)
    gebm = next((n for n in names if n != "generator"), None)
    diff = (f"\n\n{label(gebm)} − generator alone: FID {fk[f'fid_{gebm}'] - fk['fid_generator']:+.3g}, KID "
            f"{fk[f'kid_{gebm}'] - fk['kid_generator']:+.3g}." if gebm and "fid_generator" in fk else "")
    return (f"{fk['fake_images']:,} samples against {fk['real_images']:,} real images, features of the "
            f"{fk['extractor']} extractor; trained {tr['step']:,} base steps ({tr['updates']:,} updates):\n\n"
            f"{table}{diff}")


# ---- collections: one table over every record (<!-- generated:NAME -->, NAME a key of COLLECTIONS) ---------------
CLAIMS = {"below": "{arm} below {base} by more than 2 SE", "not-above": "{arm} not above {base} + 2 SE",
          "not-worse": "{arm} no worse than {base} by 2 SE"}


def paired_comparisons(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a record's metrics written by the paired-seed scripts (bench/imm_paired.py, bench/mt_seeds.py):
    each dict that names a base arm, an arm and the paper's claim about them."""
    return [v for v in metrics.values() if isinstance(v, dict) and v.get("claim") in CLAIMS
            and isinstance(v.get("base"), str) and isinstance(v.get("arm"), str)]


def gebm_tier_comparisons(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """bench/gebm_tier.py's arms (each sampler paired with its own run's generator over seeds) in the paired shape:
    the GEBM paper's claim is that sampling the energy's latent posterior brings the samples closer to the data."""
    summary = metrics.get("summary")
    if not isinstance(summary, dict) or not isinstance(summary.get("arms"), list) or "per_seed" not in summary:
        return []
    arms, n = summary["arms"], len(summary["per_seed"])
    base = next((a for a in arms if a.get("arm") == "generator alone"), None)
    out = []
    for a in arms:
        if base is None or a is base or "fid_diff" not in a:
            continue
        entry: dict[str, Any] = {"base": "generator", "arm": a["arm"], "claim": "below"}
        for metric in ("fid", "kid"):
            diff, se = a[f"{metric}_diff"], a.get(f"{metric}_diff_se")
            entry[metric] = {"generator": {"mean": base[metric], "sd": base.get(f"{metric}_sd")},
                             a["arm"]: {"mean": a[metric], "sd": a.get(f"{metric}_sd")},
                             "difference": {"n": n, "mean": diff, "se": se,
                                            "shows_claim": None if se is None else diff < -2 * se}}
        out.append(entry)
    return out


def _mean_sd(s: dict[str, Any]) -> str:
    return pm(s["mean"], s["sd"]) if s.get("sd") is not None else f"{s['mean']:.4g}"


def collection_claims(records: dict[str, dict[str, Any]]) -> str:
    """Each paired-seed comparison the records hold that tests a claim of a paper: both arms' mean ± sd, the paired
    difference ± its standard error, and whether these seeds show the claim (a metric with one seed cannot)."""
    rows = []
    for name in sorted(records):
        metrics = records[name].get("metrics", {})
        for entry in paired_comparisons(metrics) + gebm_tier_comparisons(metrics):
            base, arm = entry["base"], entry["arm"]
            for metric, m in entry.items():
                d = m.get("difference") if isinstance(m, dict) else None
                if not isinstance(d, dict) or "shows_claim" not in d or base not in m or arm not in m:
                    continue
                if d["shows_claim"] is None and d.get("se") is not None:  # a metric the claim is not about
                    continue
                shows = {True: "**shows**", False: "does not show", None: "one seed: no SE"}[d["shows_claim"]]
                rows.append([f"`{name}`", f"{arm} vs {base}", metric, str(d["n"]), _mean_sd(m[base]), _mean_sd(m[arm]),
                             ("+" if d["mean"] > 0 else "") + pm(d["mean"], d["se"]) if d.get("se") is not None
                             else f"{d['mean']:+.4g}",
                             CLAIMS[entry["claim"]].format(arm=arm, base=base), shows])
    if not rows:
        return "_No record holds a paired-seed comparison yet._"
    return _table(["record", "comparison", "metric", "seeds", "base mean ± sd", "arm mean ± sd",
                   "arm − base ± SE", "the paper's claim", "these seeds"], rows)


COLLECTIONS: dict[str, Callable[[dict[str, dict[str, Any]]], str]] = {"claims": collection_claims}


VIEWS: dict[str, Callable[[dict[str, Any]], str]] = {
    "residual-demo:bracket": view_residual_bracket,
    "kn-bigram-ptb:ppl": view_kn_bigram, "gebm-toy:arms": view_gebm_toy_arms,
    "gebm-toy:ablation": view_gebm_toy_ablation, "gebm-toy:sampler-checks": view_gebm_sampler_checks,
    "imm-logistic:accuracy": view_imm_logistic, "imm-reinforce:reward": view_imm_reinforce,
    "define-cache:equivalence": view_define_cache, "gebm-redwine:nll": view_gebm_wine,
    "gebm-whitewine:nll": view_gebm_wine, "gebm-cifar10-cpu:fid": view_gebm_images,
    "gebm-cifar10:fid": view_gebm_images}
