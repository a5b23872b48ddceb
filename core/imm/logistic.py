"""IMM on logistic regression: the paper's first, toy experiment (Muneeb & Ohannessian, NeurIPS 2024,
"we first motivate IMM using logistic regression"). The official code, `uicdice/imm-logistic-regression`,
could not be read here; its README (seen through a search excerpt) fixes the data: three features
(x1, x2, x3), a restricted model that is the Bayes-optimal P̄(y | x1), computed as the area of the
part of the x1-slice on the y = 1 side, and λ set through the ratio λ/(1+λ). Everything else below
(the cube, the plane, the baselines' exact form, full-batch gradient descent) is our derivation; see
docs/imm.md.

Data: x ~ Uniform([-1, 1]^3), y = 1[w*·x + b* > 0] (each label flipped with probability `flip`).
Full model: Q(y=1 | x) = σ(θ·x + θ0). Restricted feature: x̄ = x1.

Restricted predictor (exact): with U = w2 x2 + w3 x3 (a sum of two independent uniforms, widths
2|w2| and 2|w3|), P̄(y=1 | x1) = flip + (1 - 2 flip) · P(U > -(w1 x1 + b)). The CDF of U is
    F(t) = [h(t+A+B) - h(t+A-B) - h(t-A+B) + h(t-A-B)] / (4AB),  h(s) = max(s, 0)²/2,  A=|w2|, B=|w3|,
the area of a polygon (the slice of the square below a line) over the square's area.

Objectives on n training points, r = λ/(1+λ) (the loss is divided by 1+λ, as the official code
normalises its SGD step):
    MLE        CE(y_i, Q(·|x_i))
    IMM        (1-r) CE(y_i, Q(·|x_i)) + r · (1/n) Σ_i CE(P̄(·|x̄_i), Q̄(·|x̄_i)),
               Q̄(y | x̄_i) = (1/n) Σ_j Q(y | x̄_i, x_j2, x_j3)   (the induced model: the full model
               averaged over the training set's other features, independent of x1 here)
    reverse KD (1-r) CE(y_i, Q(·|x_i)) + r · CE(P̄(·|x̄_i), Q(·|x_i))   (the restricted model as a
               teacher at every full context: the inconsistent target the paper contrasts with IMM)
    noising    CE(ỹ_i, Q(·|x_i)), ỹ_i = y_i, or with probability r a fresh draw from P̄(·|x̄_i) at every
               step (label noising from the restricted model: reverse KD in expectation)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TRUE_W = (1.0, 1.0, 1.0)
TRUE_B = 0.0


# ---- data and the restricted predictor -----------------------------------------------------------

def sample_data(n: int, generator: torch.Generator, w=TRUE_W, b: float = TRUE_B, flip: float = 0.0,
                dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, 3) uniform on the cube, y (n,) in {0., 1.})."""
    x = torch.rand(n, 3, generator=generator, dtype=dtype) * 2 - 1
    y = (x @ torch.tensor(w, dtype=dtype) + b > 0).to(dtype)
    if flip > 0:
        flips = torch.rand(n, generator=generator, dtype=dtype) < flip
        y = torch.where(flips, 1 - y, y)
    return x, y


def _sum_of_uniforms_cdf(t: torch.Tensor, A: float, B: float) -> torch.Tensor:
    """P(A·u + B·v <= t), u, v ~ Uniform(-1, 1) independent, A, B >= 0."""
    if A == 0 and B == 0:
        return (t >= 0).to(t.dtype)
    if A == 0 or B == 0:
        width = max(A, B)
        return ((t + width) / (2 * width)).clamp(0, 1)
    h = lambda s: s.clamp_min(0) ** 2 / 2
    return ((h(t + A + B) - h(t + A - B) - h(t - A + B) + h(t - A - B)) / (4 * A * B)).clamp(0, 1)


def restricted_predictor(x1: torch.Tensor, w=TRUE_W, b: float = TRUE_B, flip: float = 0.0) -> torch.Tensor:
    """Bayes-optimal P̄(y=1 | x1) for the cube and plane above: (n,) -> (n,)."""
    above = 1 - _sum_of_uniforms_cdf(-(w[0] * x1 + b), abs(w[1]), abs(w[2]))
    return flip + (1 - 2 * flip) * above


# ---- losses ---------------------------------------------------------------------------------------

def _bce(p_target: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the target probability against σ(logit), elementwise."""
    return -(p_target * F.logsigmoid(logit) + (1 - p_target) * F.logsigmoid(-logit))


def induced_probs(theta: torch.Tensor, x: torch.Tensor, others: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Q̄(1 | x̄_i), Q̄(0 | x̄_i): the full model at x̄_i averaged over the other features of `others`.

    theta (..., 4) = (θ1, θ2, θ3, θ0); x (..., n, 3); others (..., k, 3), default x itself (the exact
    empirical average over the n training points) -> two (..., n) tensors. Both classes are averaged
    directly (not 1 - the other), so a saturated model keeps a finite log Q̄.
    """
    others = x if others is None else others
    a = theta[..., 0:1] * x[..., 0] + theta[..., 3:4]  # (..., n): the restricted part, + bias
    c = theta[..., 1:2] * others[..., 1] + theta[..., 2:3] * others[..., 2]  # (..., k): the other features
    z = a.unsqueeze(-1) + c.unsqueeze(-2)  # (..., n, k)
    return torch.sigmoid(z).mean(-1), torch.sigmoid(-z).mean(-1)


def imm_loss(theta: torch.Tensor, x: torch.Tensor, p_bar: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """(1/n) Σ_i CE(P̄(·|x̄_i), Q̄(·|x̄_i)): (..., 4), (..., n, 3), (..., n) -> (...)."""
    q1, q0 = induced_probs(theta, x, others)
    tiny = torch.finfo(q1.dtype).tiny
    return -(p_bar * q1.clamp_min(tiny).log() + (1 - p_bar) * q0.clamp_min(tiny).log()).mean(-1)


def logits(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (theta[..., :3].unsqueeze(-2) * x).sum(-1) + theta[..., 3:4]


def objective(method: str, ratio: torch.Tensor, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              p_bar: torch.Tensor, generator: torch.Generator | None = None, k: int | None = None) -> torch.Tensor:
    """The training loss of one method, per configuration: ratio broadcasts against theta[..., 0].

    IMM with k < n averages Q̄ over k points drawn with replacement from the training set at every
    step (the paper's sampled IMM, Algorithm 1); k = None or k >= n uses all n (exact).
    """
    z = logits(theta, x)
    ce = _bce(y, z).mean(-1)
    if method == "mle":
        return ce
    if method == "imm":
        others = None
        if k is not None and k < x.shape[-2]:
            idx = torch.randint(x.shape[-2], (*x.shape[:-2], k), generator=generator)
            others = torch.gather(x, -2, idx.unsqueeze(-1).expand(*idx.shape, 3))
        return (1 - ratio) * ce + ratio * imm_loss(theta, x, p_bar, others)
    if method == "rkd":
        return (1 - ratio) * ce + ratio * _bce(p_bar, z).mean(-1)
    if method == "noising":
        u = torch.rand(z.shape, generator=generator, dtype=z.dtype)
        v = torch.rand(z.shape, generator=generator, dtype=z.dtype)
        noisy = torch.where(u < ratio.unsqueeze(-1), (v < p_bar).to(z.dtype), y.expand_as(z))
        return _bce(noisy, z).mean(-1)
    raise ValueError(f"unknown method {method!r} (mle, imm, rkd, noising)")


# ---- training and evaluation ----------------------------------------------------------------------

def train(method: str, ratios: list[float], x: torch.Tensor, y: torch.Tensor, p_bar: torch.Tensor, *,
          steps: int = 500, lr: float = 4.0, k: int | None = 64, noise_seed: int = 0) -> torch.Tensor:
    """Full-batch gradient descent from θ = 0 for every (ratio, seed): x (S, n, 3) -> θ (R, S, 4).

    The configurations are independent slices; the gradient of their summed loss is each one's own.
    """
    ratio = torch.tensor(ratios, dtype=x.dtype).view(-1, 1)  # (R, 1)
    theta = torch.zeros(len(ratios), x.shape[0], 4, dtype=x.dtype, requires_grad=True)
    g = torch.Generator().manual_seed(noise_seed)
    for _ in range(steps):
        loss = objective(method, ratio, theta, x, y, p_bar, g, k).sum()
        (grad,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * grad
    return theta.detach()


def accuracy(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of correct hard decisions: θ (..., S, 4), x (S, m, 3), y (S, m) -> (..., S)."""
    return ((logits(theta, x) > 0).to(y.dtype) == y).to(x.dtype).mean(-1)


# ---- the experiment: methods x training-set sizes x λ/(1+λ), seeds paired --------------------------

METHODS = ("mle", "imm", "rkd", "noising")
LABELS = {"mle": "MLE", "imm": "IMM", "rkd": "reverse KD", "noising": "noising"}
COLORS = {"mle": "0.3", "imm": "tab:green", "rkd": "tab:orange", "noising": "tab:purple"}


def experiment(seeds: list[int], sizes: list[int], ratios: list[float], *, steps: int, lr: float, k: int,
               n_eval: int, flip: float, progress=print) -> dict:
    """Test and validation accuracy for every method, size, ratio and seed; r selected per (method, n)
    by the mean validation accuracy over seeds (never by the test set)."""
    from lmlab.core.imm.toy_stats import paired, summary
    train_sets, val_sets, test_sets = [], [], []
    for s in seeds:  # one stream per seed: nested training sets (prefixes), then validation and test
        g = torch.Generator().manual_seed(int(s))
        train_sets.append(sample_data(max(sizes), g, flip=flip))
        val_sets.append(sample_data(n_eval, g, flip=flip))
        test_sets.append(sample_data(n_eval, g, flip=flip))
    stack = lambda sets: (torch.stack([a for a, _ in sets]), torch.stack([b for _, b in sets]))
    (X, Y), (Xv, Yv), (Xt, Yt) = stack(train_sets), stack(val_sets), stack(test_sets)
    restricted_test = ((restricted_predictor(Xt[..., 0], flip=flip) > 0.5).to(Yt.dtype) == Yt).float().mean(-1)
    acc = {m: {"val": np.zeros((len(sizes), len(ratios), len(seeds))), "test": np.zeros((len(sizes), len(ratios), len(seeds)))}
           for m in METHODS}
    for i, n in enumerate(sizes):
        x, y = X[:, :n], Y[:, :n]
        p_bar = restricted_predictor(x[..., 0], flip=flip)
        for m in METHODS:
            rs = [0.0] if m == "mle" else ratios
            theta = train(m, rs, x, y, p_bar, steps=steps, lr=lr, k=k, noise_seed=1000 + i)
            acc[m]["val"][i] = accuracy(theta, Xv, Yv).numpy()  # (1 or R, S): MLE broadcasts over ratios
            acc[m]["test"][i] = accuracy(theta, Xt, Yt).numpy()
        progress(f"n={n}: test acc " + ", ".join(f"{m} {acc[m]['test'][i].mean(-1).max():.4f}" for m in METHODS))
    metrics: dict = {"sizes": sizes, "ratios": ratios, "bayes_accuracy": 1 - flip,
                     "restricted_only_test_acc": summary(restricted_test.numpy()), "methods": {}}
    chosen_test = {}
    for m in METHODS:
        best = acc[m]["val"].mean(-1).argmax(-1)  # (N,) index of the selected ratio per size
        chosen_test[m] = np.stack([acc[m]["test"][i, best[i]] for i in range(len(sizes))])  # (N, S)
        metrics["methods"][m] = {
            "selected_ratio": [0.0 if m == "mle" else ratios[b] for b in best],
            "test_acc": {**summary(chosen_test[m]), "per_seed": chosen_test[m].tolist()},
            "test_acc_by_ratio": summary(acc[m]["test"]), "val_acc_by_ratio": summary(acc[m]["val"])}
    metrics["paired_vs_mle"] = {m: paired(chosen_test[m], chosen_test["mle"]) for m in METHODS if m != "mle"}
    return metrics


def figure(metrics: dict, path: str) -> None:
    from lmlab.core.imm.toy_stats import band, pyplot, save
    plt = pyplot()
    sizes, ratios = metrics["sizes"], metrics["ratios"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    for m in METHODS:
        t = metrics["methods"][m]["test_acc"]
        band(ax, sizes, t["mean"], t["sd"], LABELS[m], COLORS[m])
    ax.axhline(metrics["restricted_only_test_acc"]["mean"], color="0.6", linestyle=":", label="restricted model alone")
    ax.set(xscale="log", xlabel="training-set size n", ylabel="test accuracy",
           title="λ/(1+λ) chosen on validation, mean ± sd over seeds")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    for j, m in enumerate(METHODS[1:]):
        d = metrics["paired_vs_mle"][m]
        xs = np.asarray(sizes) * (1 + 0.06 * (j - 1))
        ax.errorbar(xs, d["mean"], yerr=d["sd"], fmt="o-", capsize=3, linewidth=1, color=COLORS[m], label=f"{LABELS[m]} − MLE")
        ax.errorbar(xs, d["mean"], yerr=d["se"], fmt="none", elinewidth=3.5, color=COLORS[m])
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set(xscale="log", xlabel="training-set size n", ylabel="paired test-accuracy difference",
           title="paired per-seed difference: mean, ± sd (thin), ± se (thick)")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[2]
    cmap = plt.get_cmap("viridis")
    mle = metrics["methods"]["mle"]["test_acc_by_ratio"]["mean"]
    for i, n in enumerate(sizes):
        imm = metrics["methods"]["imm"]["test_acc_by_ratio"]
        c = cmap(i / max(1, len(sizes) - 1))
        band(ax, [0.0] + ratios, [mle[i][0]] + imm["mean"][i], [metrics["methods"]["mle"]["test_acc_by_ratio"]["sd"][i][0]]
             + imm["sd"][i], f"n={n}", c)
    ax.set(xlabel="λ/(1+λ)  (0 = MLE)", ylabel="IMM test accuracy", title="IMM: sweep of λ/(1+λ), mean ± sd")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys
    from lmlab.core.imm.toy_stats import Timer, write
    p = argparse.ArgumentParser(prog="python -m lmlab.core.imm.logistic", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=30, help="seeds 1..S, paired across methods")
    p.add_argument("--sizes", default="4,8,16,32,64,128", help="training-set sizes (nested per seed)")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="λ/(1+λ) grid")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=4.0, help="GD step; lr x steps (gradient-flow time) is what matters")
    p.add_argument("--k", type=int, default=64, help="IMM: draws for Q̄ when n > k (exact average when n <= k)")
    p.add_argument("--n-eval", type=int, default=10000, help="validation and test points per seed")
    p.add_argument("--flip", type=float, default=0.0, help="label-flip probability")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results", help="results dir (writes <name>.json)")
    p.add_argument("--name", default="imm-logistic")
    p.add_argument("--figure", default="docs/figures/imm-logistic.png")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    timer = Timer()
    seeds = list(range(1, a.seeds + 1))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    metrics = experiment(seeds, [int(v) for v in a.sizes.split(",")], [float(v) for v in a.ratios.split(",")],
                         steps=a.steps, lr=a.lr, k=a.k, n_eval=a.n_eval, flip=a.flip, progress=log)
    figure(metrics, a.figure)
    config = {"true_w": TRUE_W, "true_b": TRUE_B, "flip": a.flip, "features": "Uniform([-1,1]^3)", "restricted": "x1",
              "optimizer": f"full-batch GD from 0, lr {a.lr}, {a.steps} steps", "imm_k": a.k, "n_eval": a.n_eval}
    path = write(a.name, metrics, seeds, timer, a.out, config=config, figure=a.figure,
                 notes="Official logistic code not readable here: data and baselines derived from the paper and the "
                       "official README (docs/imm.md). Ratio per (method, n) chosen on a validation set.")
    log(f"wrote {path} and {a.figure}")


if __name__ == "__main__":
    main()
