"""REINFORCE with IMM: a POMDP policy helps train an MDP policy (Muneeb & Ohannessian, NeurIPS 2024,
the RL example; official code `uicdice/imm-reinforce` `main.py`, read for its setup, nothing copied).

Full model: an MDP policy π(a | s) on the 11x11 torus (`gridworld.py`), an MLP one-hot(121) -> 32
tanh -> 4 logits, trained by reward-to-go REINFORCE with Adam (lr 1e-2). One epoch = one 50-step
episode from a uniform start; weights G_t = Σ_{k>=t} γ^{k-t} r_k (γ = 0.9, no γ^t factor: the
official estimator), loss -mean_t log π(a_t | s_t) G_t.

Restricted model: the POMDP policy P̂(a | x) that sees only the column x (`gridworld.restricted_policy`).
Induced model: π̄(a | x) = (1/H) Σ_y π(a | (y, x)) (the uniform belief over y is the state
distribution given x that the POMDP solution assumes). IMM adds λ · KL(P̂(· | x_t) ‖ π̄(· | x_t)),
averaged over the epoch's 50 visited columns x_t (`KLDivLoss(reduction="batchmean")` in the official code).
λ from the ratio r = λ/(1+λ): the official rule r = round(0.1891 - 0.0002·epochs, 1) (0.2 up to 220
epochs, then 0.1), λ = r/(1-r). Evaluation: 10 rollouts of 22 steps from uniform starts, actions
sampled from π, score = mean total reward per rollout.

Every policy of an experiment (arm x seed) is one slice of a batched parameter tensor; Adam acts per
element, so this equals separate optimisers. Seeds are paired across arms by common random numbers:
the same initial weights, start states and action uniforms (inverse-CDF sampling), and the same
evaluation starts and uniforms. Because the ratio rule is constant for a given arm up to 220 epochs,
a run evaluated after E epochs is the prefix of the longer run (as in the official scripts, which reuse
the seed for every epoch count); the r = 0.1 arm is a separate run from scratch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmlab.core.imm import gridworld as gw

HIDDEN = 32
EPISODE = 50
EVAL_ROLLOUTS, EVAL_STEPS = 10, 22


def official_ratio(epochs: int) -> float:
    """The official λ/(1+λ) schedule against the number of epochs (its `--lambda_ratio -1`)."""
    return round(-0.0002 * epochs + 0.1891, 1)


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{k>=t} γ^{k-t} r_k along the last axis: (..., T) -> (..., T)."""
    out = torch.empty_like(rewards)
    acc = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        acc = rewards[..., t] + gamma * acc
        out[..., t] = acc
    return out


def reinforce_loss(logp: torch.Tensor, rewards: torch.Tensor, gamma: float, time_discount: bool = False) -> torch.Tensor:
    """Surrogate whose gradient is the REINFORCE estimate: -mean_t log π(a_t|s_t) G_t, per trajectory.

    logp, rewards (..., T) -> (...,). `time_discount=True` multiplies by γ^t, which makes the estimate
    unbiased for ∇ E[Σ_t γ^t r_t] / T; the official code (and the default) leaves it out (for γ = 1 both agree).
    """
    weights = discounted_returns(rewards, gamma)
    if time_discount:
        weights = weights * gamma ** torch.arange(rewards.shape[-1], dtype=rewards.dtype)
    return -(logp * weights.detach()).mean(dim=-1)


class PolicyBank:
    """P independent MLP policies (one-hot state -> HIDDEN tanh -> A logits) as batched tensors."""

    def __init__(self, n_policies: int, init_seeds: list[int], n_states: int = gw.HEIGHT * gw.WIDTH,
                 n_actions: int = gw.N_ACTIONS, hidden: int = HIDDEN):
        # nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), one generator per seed so that
        # policy p = arm * n_seeds + seed starts from the same weights in every arm.
        shapes = [(n_states, hidden), (hidden,), (hidden, n_actions), (n_actions,)]
        bounds = [1 / math.sqrt(n_states)] * 2 + [1 / math.sqrt(hidden)] * 2
        per_seed = []
        for s in init_seeds:
            g = torch.Generator().manual_seed(int(s))
            per_seed.append([(torch.rand(shape, generator=g) * 2 - 1) * b for shape, b in zip(shapes, bounds)])
        reps = n_policies // len(init_seeds)
        self.params = [torch.stack([per_seed[p % len(init_seeds)][i] for p in range(reps * len(init_seeds))])
                       .requires_grad_(True) for i in range(4)]
        self.W1, self.b1, self.W2, self.b2 = self.params

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """states (P, N) long -> logits (P, N, A); a one-hot input is a row lookup."""
        rows = torch.gather(self.W1, 1, states.unsqueeze(-1).expand(-1, -1, self.W1.shape[2]))  # (P, N, H)
        h = torch.tanh(rows + self.b1.unsqueeze(1))
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.W2)


def induced_policy(bank: PolicyBank, cols: torch.Tensor, height: int = gw.HEIGHT, width: int = gw.WIDTH) -> torch.Tensor:
    """π̄(a | x) = mean_y π(a | (y, x)): cols (P, N) -> (P, N, A)."""
    P, N = cols.shape
    states = (torch.arange(height).view(1, 1, height) * width + cols.unsqueeze(-1)).reshape(P, N * height)
    probs = torch.softmax(bank.logits(states), dim=-1).reshape(P, N, height, -1)
    return probs.mean(dim=2)


def imm_kl(p_hat: torch.Tensor, q_bar: torch.Tensor) -> torch.Tensor:
    """KL(P̂ ‖ Q̄) summed over actions, averaged over the N contexts: (P, N, A) x2 -> (P,)."""
    return (torch.special.xlogy(p_hat, p_hat) - p_hat * torch.log(q_bar)).sum(-1).mean(-1)


def sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: probs (..., A), u (...) in [0, 1) -> actions (...)."""
    cdf = probs.cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


def evaluate(bank: PolicyBank, nxt: torch.Tensor, reward: torch.Tensor, starts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Mean over rollouts of the total reward: starts (P, R), u (P, R, T) -> (P,)."""
    state, total = starts.clone(), torch.zeros(starts.shape, dtype=reward.dtype)
    with torch.no_grad():
        for t in range(u.shape[-1]):
            a = sample(torch.softmax(bank.logits(state), -1), u[..., t])
            state = nxt[state, a]
            total += reward[state]
    return total.mean(-1)


def run_arms(arms: list[dict], seeds: list[int], eval_at: list[int], *, gamma: float = 0.9, lr: float = 1e-2,
             env_var: float = 0.1, pomdp_var: float = 0.3, progress=None) -> dict[str, np.ndarray]:
    """Train every arm x seed for max(eval_at) epochs in one batch; evaluate after each epoch count in eval_at.

    An arm is {"name", "lam" (λ >= 0), "temperature" (<= 0: maximal-utility action)}.
    Returns {arm name: (len(eval_at), n_seeds) mean evaluation reward}.
    """
    n_arms, n_seeds, epochs = len(arms), len(seeds), max(eval_at)
    P = n_arms * n_seeds
    nxt = torch.as_tensor(gw.next_state_table())
    reward = torch.as_tensor(gw.mountain(env_var).reshape(-1), dtype=torch.float32)
    alphas = gw.restricted_alphas(pomdp_var, gamma)
    p_hat_by_arm = torch.stack([torch.as_tensor(gw.restricted_policy(alphas, a.get("temperature", -1.0)), dtype=torch.float32)
                                for a in arms])  # (n_arms, W, A)
    lam = torch.tensor([float(a["lam"]) for a in arms]).repeat_interleave(n_seeds)  # (P,)
    arm_of = torch.arange(n_arms).repeat_interleave(n_seeds)
    S = nxt.shape[0]
    # common random numbers: one stream per seed, the same for every arm
    train_start, train_u, eval_start, eval_u = [], [], [], []
    for s in seeds:
        g = torch.Generator().manual_seed(10_000 + int(s))
        train_start.append(torch.randint(S, (epochs,), generator=g))
        train_u.append(torch.rand(epochs, EPISODE, generator=g))
        eval_start.append(torch.randint(S, (EVAL_ROLLOUTS,), generator=g))
        eval_u.append(torch.rand(EVAL_ROLLOUTS, EVAL_STEPS, generator=g))
    tile = lambda xs: torch.stack(xs).repeat(n_arms, *([1] * xs[0].dim()))  # (P, ...)
    train_start, train_u, eval_start, eval_u = map(tile, (train_start, train_u, eval_start, eval_u))

    bank = PolicyBank(P, seeds)
    opt = torch.optim.Adam(bank.params, lr=lr)
    out = {a["name"]: np.zeros((len(eval_at), n_seeds)) for a in arms}
    for epoch in range(1, epochs + 1):
        state = train_start[:, epoch - 1]
        states, acts, rews = [], [], []
        with torch.no_grad():
            for t in range(EPISODE):
                a = sample(torch.softmax(bank.logits(state.unsqueeze(1)).squeeze(1), -1), train_u[:, epoch - 1, t])
                states.append(state)
                acts.append(a)
                state = nxt[state, a]
                rews.append(reward[state])
        states, acts, rews = torch.stack(states, 1), torch.stack(acts, 1), torch.stack(rews, 1)  # (P, T)
        logp = torch.log_softmax(bank.logits(states), -1).gather(-1, acts.unsqueeze(-1)).squeeze(-1)
        loss = reinforce_loss(logp, rews, gamma)  # (P,)
        if bool((lam > 0).any()):
            cols = states % gw.WIDTH
            p_hat = p_hat_by_arm[arm_of.unsqueeze(1), cols]  # (P, T, A)
            loss = loss + lam * imm_kl(p_hat, induced_policy(bank, cols))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # policies are independent: the sum's gradient is each policy's own
        opt.step()
        if epoch in eval_at:
            score = evaluate(bank, nxt, reward, eval_start, eval_u).reshape(n_arms, n_seeds).numpy()
            for i, a in enumerate(arms):
                out[a["name"]][eval_at.index(epoch)] = score[i]
            if progress:
                progress(f"epoch {epoch}: " + ", ".join(f"{a['name']} {score[i].mean():.2f}" for i, a in enumerate(arms)))
    return out


# ---- the experiment: the official curves (reward against epochs) and its λ/(1+λ) search -----------

EPOCHS = [10, 20, 50, 75, 100, 125, 150, 175, 200, 250, 300, 350, 400, 450, 500]
ARMS = {"none": None, "imm-max-utility": -1.0, "imm-softmax-T0.5": 0.5, "imm-softmax-T1.0": 1.0}  # name: temperature
COLORS = {"none": "darkred", "imm-max-utility": "seagreen", "imm-softmax-T0.5": "darkblue", "imm-softmax-T1.0": "#e28e1f"}
# Means of the official repository's cached runs (csv_cached/, 30 seeds x 10 rollouts, mean of the
# per-seed means), read from uicdice/imm-reinforce at fd072e0, for comparison only.
OFFICIAL = {"none": [1.28, 1.23, 2.48, 7.47, 12.61, 15.34, 15.78, 16.71, 17.29, 17.54, 18.3, 18.48, 18.39, 18.92, 18.72],
            "imm-max-utility": [1.67, 2.31, 8.8, 14.78, 17.27, 18.16, 18.72, 18.55, 18.9, 18.68, 19.12, 19.45, 19.33, 19.3, 19.36],
            "imm-softmax-T0.5": [1.57, 1.81, 5.57, 12.84, 15.41, 17.01, 16.9, 17.37, 17.61, 18.48, 18.18, 18.65, 18.64, 18.9, 19.35],
            "imm-softmax-T1.0": [1.48, 1.71, 4.87, 11.23, 14.55, 15.57, 16.9, 16.58, 17.83, 18.29, 18.75, 18.96, 18.75, 19.04, 18.7]}


def experiment(seeds: list[int], epochs: list[int], sweep_epochs: list[int], sweep_ratios: list[float], progress=print) -> dict:
    from lmlab.core.imm.toy_stats import paired, summary
    lam = lambda r: r / (1 - r)
    # each IMM arm runs once per distinct ratio of the official rule; a point E takes the run whose ratio the rule gives E
    configs = [{"name": "none", "lam": 0.0}]
    for name, temp in ARMS.items():
        if temp is not None:
            configs += [{"name": f"{name}@{r}", "lam": lam(r), "temperature": temp} for r in sorted({official_ratio(e) for e in epochs})]
    runs = run_arms(configs, seeds, epochs, progress=progress)
    metrics: dict = {"epochs": epochs, "arms": {}, "paired_vs_none": {}}
    scores = {}
    for name in ARMS:
        rows = [runs[name if name == "none" else f"{name}@{official_ratio(e)}"][i] for i, e in enumerate(epochs)]
        scores[name] = np.stack(rows)  # (E, S)
        metrics["arms"][name] = {"temperature": ARMS[name], "lambda_ratio": [0.0 if name == "none" else official_ratio(e) for e in epochs],
                                 **summary(scores[name]), "per_seed": scores[name].tolist(),
                                 "official_cached_mean": [OFFICIAL[name][EPOCHS.index(e)] if e in EPOCHS else None for e in epochs]}
        if name != "none":
            metrics["paired_vs_none"][name] = paired(scores[name], scores["none"])
    if sweep_epochs:  # the official lambda search: maximal-utility IMM at fixed ratios
        sweep = run_arms([{"name": f"r={r}", "lam": lam(r), "temperature": -1.0} for r in sweep_ratios], seeds, sweep_epochs,
                         progress=progress)
        table = np.stack([sweep[f"r={r}"] for r in sweep_ratios], axis=1)  # (E_sweep, R, S)
        metrics["lambda_sweep"] = {"epochs": sweep_epochs, "ratios": sweep_ratios, **summary(table),
                                   "paired_vs_ratio0": paired(table, table[:, :1]) if sweep_ratios[0] == 0 else None}
    return metrics


def figure(metrics: dict, path: str) -> None:
    from lmlab.core.imm.toy_stats import band, pyplot, save
    plt = pyplot()
    E = metrics["epochs"]
    sweep = metrics.get("lambda_sweep")
    fig, axes = plt.subplots(1, 3 if sweep else 2, figsize=(15 if sweep else 10, 4.4))
    ax = axes[0]
    for name, arm in metrics["arms"].items():
        band(ax, E, arm["mean"], arm["sd"], name, COLORS[name])
        official = [(e, v) for e, v in zip(E, arm["official_cached_mean"]) if v is not None]
        if official:
            ax.plot(*zip(*official), ":", color=COLORS[name], linewidth=1)
    ax.plot([], [], ":", color="0.3", label="official cached runs (mean)")
    ax.set(xlabel="epochs (one 50-step episode each)", ylabel="evaluation reward (22 steps)",
           title=f"REINFORCE ± IMM, mean ± sd over {len(arm['per_seed'][0])} seeds")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    for j, (name, d) in enumerate(metrics["paired_vs_none"].items()):
        xs = np.asarray(E) + 4 * (j - 1)
        ax.errorbar(xs, d["mean"], yerr=d["sd"], fmt="o-", capsize=3, linewidth=1, markersize=4, color=COLORS[name], label=f"{name} − none")
        ax.errorbar(xs, d["mean"], yerr=d["se"], fmt="none", elinewidth=3.5, color=COLORS[name])
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set(xlabel="epochs", ylabel="paired reward difference", title="paired per-seed difference: mean, ± sd (thin), ± se (thick)")
    ax.legend(frameon=False, fontsize=8)
    if sweep:
        ax = axes[2]
        for i, e in enumerate(sweep["epochs"]):
            band(ax, sweep["ratios"], sweep["mean"][i], sweep["sd"][i], f"{e} epochs", plt.get_cmap("viridis")(i / max(1, len(sweep["epochs"]) - 1)))
        ax.set(xlabel="λ/(1+λ)  (0 = no IMM)", ylabel="evaluation reward", title="maximal-utility IMM: λ/(1+λ) sweep, mean ± sd")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys
    from lmlab.core.imm.toy_stats import Timer, write
    p = argparse.ArgumentParser(prog="python -m lmlab.core.imm.reinforce", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=30, help="seeds 1..S, paired across arms")
    p.add_argument("--epochs", default=",".join(map(str, EPOCHS)))
    p.add_argument("--sweep-epochs", default="50,200,400", help="'' skips the λ/(1+λ) sweep")
    p.add_argument("--sweep-ratios", default="0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results")
    p.add_argument("--name", default="imm-reinforce")
    p.add_argument("--figure", default="docs/figures/imm-reinforce.png")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    timer = Timer()
    seeds = list(range(1, a.seeds + 1))
    ints = lambda s: [int(v) for v in s.split(",") if v]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    metrics = experiment(seeds, ints(a.epochs), ints(a.sweep_epochs), [float(v) for v in a.sweep_ratios.split(",") if v], log)
    figure(metrics, a.figure)
    config = {"grid": "11x11 torus", "env_reward_var": 0.1, "pomdp_reward_var": 0.3, "gamma": 0.9, "policy": "one-hot 121 -> 32 tanh -> 4",
              "optimizer": "Adam lr 1e-2", "episode_steps": EPISODE, "eval": f"{EVAL_ROLLOUTS} rollouts x {EVAL_STEPS} steps",
              "lambda_rule": "ratio = round(0.1891 - 0.0002 * epochs, 1), lambda = ratio / (1 - ratio)"}
    path = write(a.name, metrics, seeds, timer, a.out, config=config, figure=a.figure,
                 notes="Setup of uicdice/imm-reinforce main.py; runs batched over arms x seeds with common random numbers.")
    log(f"wrote {path} and {a.figure}")


if __name__ == "__main__":
    main()
