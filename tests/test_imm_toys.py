"""IMM toy experiments (core/imm/logistic.py, gridworld.py, reinforce.py, toy_stats.py): known values
on cases small enough to compute by hand or enumerate. A few seconds of CPU in all."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lmlab.core.imm import gridworld as gw
from lmlab.core.imm import logistic as lg
from lmlab.core.imm import reinforce as rf
from lmlab.core.imm.toy_stats import paired, summary

# ---- logistic regression ---------------------------------------------------------------------------


def test_imm_loss_by_hand_on_three_points():
    # θ = (ln 3, ln 3, 0, 0): Q(1 | x̄_i, x_j) = σ(ln 3 · (x_i1 + x_j2)) and σ(k ln 3) = 3^k / (1 + 3^k):
    # k = -2, -1, 0, 1, 2 -> 1/10, 1/4, 1/2, 3/4, 9/10.
    theta = torch.tensor([math.log(3), math.log(3), 0.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -1.0, 0.0]], dtype=torch.float64)
    # x̄ = 1:  k = 1, 2, 0  -> (3/4 + 9/10 + 1/2) / 3 = 43/60
    # x̄ = 0:  k = 0, 1, -1 -> (1/2 + 3/4 + 1/4) / 3 = 1/2
    # x̄ = -1: k = -1, 0, -2 -> (1/4 + 1/2 + 1/10) / 3 = 17/60
    q1, q0 = lg.induced_probs(theta, x)
    assert q1.tolist() == pytest.approx([43 / 60, 1 / 2, 17 / 60], abs=1e-15)
    assert (q1 + q0).tolist() == pytest.approx([1.0] * 3, abs=1e-15)
    p_bar = torch.tensor([0.8, 0.5, 0.1], dtype=torch.float64)
    by_hand = -(0.8 * math.log(43 / 60) + 0.2 * math.log(17 / 60)
                + 0.5 * math.log(1 / 2) + 0.5 * math.log(1 / 2)
                + 0.1 * math.log(17 / 60) + 0.9 * math.log(43 / 60)) / 3
    assert lg.imm_loss(theta, x, p_bar).item() == pytest.approx(by_hand, abs=1e-14)
    # the training objective: (1 - r) CE + r IMM, and r = 0 is plain MLE for every method
    y = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    z = lg.logits(theta, x)  # ln 3 · (1, 1, -2)
    ce = -(math.log(3 / 4) + math.log(1 / 4) + math.log(9 / 10)) / 3
    assert lg.objective("mle", torch.tensor(0.0), theta, x, y, p_bar).item() == pytest.approx(ce, abs=1e-14)
    r = torch.tensor(0.25, dtype=torch.float64)
    assert lg.objective("imm", r, theta, x, y, p_bar).item() == pytest.approx(0.75 * ce + 0.25 * by_hand, abs=1e-14)
    for method in ("imm", "rkd", "noising"):
        got = lg.objective(method, torch.tensor([0.0], dtype=torch.float64), theta, x, y, p_bar, torch.Generator().manual_seed(0))
        assert got.item() == pytest.approx(ce, abs=1e-14)
    assert z.tolist() == pytest.approx([math.log(3), math.log(3), -2 * math.log(3)])


def test_restricted_predictor_by_hand():
    # w = (1, 1, 1), b = 0: P̄(1 | x1) = area{x2 + x3 > -x1} / 4 on the square [-1, 1]^2.
    x1 = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64)
    # x1 = 1: the corner triangle x2 + x3 <= -1 has legs 1, area 1/2 -> 1 - 1/8 = 7/8;
    # x1 = 0.5: the triangle x2 + x3 <= -0.5 has legs 3/2, area 9/8 -> 1 - 9/32 = 23/32; symmetric below 0.
    expected = [1 / 8, 9 / 32, 1 / 2, 23 / 32, 7 / 8]
    assert lg.restricted_predictor(x1).tolist() == pytest.approx(expected, abs=1e-15)
    flip = 0.1
    assert lg.restricted_predictor(x1, flip=flip).tolist() == pytest.approx([flip + 0.8 * e for e in expected], abs=1e-15)


@pytest.mark.parametrize("w,b", [((0.7, -1.3, 0.4), 0.2), ((1.0, 0.0, 2.0), -0.3), ((2.0, 1.0, 1.0), 0.0)])
def test_restricted_predictor_equals_the_enumerated_conditional(w, b):
    # The true conditional P(y = 1 | x1) of the data: enumerate a midpoint grid of (x2, x3) on the square.
    m = 600
    grid = (torch.arange(m, dtype=torch.float64) + 0.5) / m * 2 - 1
    x2, x3 = torch.meshgrid(grid, grid, indexing="ij")
    for v in (-0.9, -0.3, 0.0, 0.4, 0.95):
        counted = ((w[0] * v + w[1] * x2 + w[2] * x3 + b) > 0).double().mean().item()
        closed = lg.restricted_predictor(torch.tensor([v], dtype=torch.float64), w=w, b=b).item()
        assert closed == pytest.approx(counted, abs=4 / m)
    # and the sampler's labels follow it (Monte Carlo over the whole cube: E[P̄(1 | x1)] = P(y = 1))
    x, y = lg.sample_data(200_000, torch.Generator().manual_seed(0), w=w, b=b, dtype=torch.float64)
    assert y.mean().item() == pytest.approx(lg.restricted_predictor(x[:, 0], w=w, b=b).mean().item(), abs=0.005)


def test_noising_is_reverse_kd_in_expectation_and_sampled_imm_is_exact_for_k_at_least_n():
    g = torch.Generator().manual_seed(1)
    x, y = lg.sample_data(6, g, dtype=torch.float64)
    p_bar = lg.restricted_predictor(x[:, 0])
    theta = torch.tensor([0.5, -1.0, 2.0, 0.1], dtype=torch.float64)
    r = torch.tensor([0.3], dtype=torch.float64)
    rkd = lg.objective("rkd", r, theta, x, y, p_bar).item()
    M = 20_000  # noise draws, as one batch of identical configurations
    draws = lg.objective("noising", r.expand(M), theta.expand(M, 4), x, y, p_bar, g)
    assert draws.mean().item() == pytest.approx(rkd, abs=4 * draws.std().item() / math.sqrt(M))
    exact = lg.objective("imm", r, theta, x, y, p_bar).item()
    assert lg.objective("imm", r, theta, x, y, p_bar, g, k=6).item() == pytest.approx(exact, abs=1e-15)
    sampled = lg.objective("imm", r, theta, x, y, p_bar, g, k=2).item()
    assert sampled != pytest.approx(exact, abs=1e-12)


def test_batched_training_equals_separate_runs():
    # configurations are independent slices of one tensor: training them together changes nothing
    g = torch.Generator().manual_seed(2)
    xs, ys = zip(*(lg.sample_data(5, g, dtype=torch.float64) for _ in range(3)))
    x, y = torch.stack(xs), torch.stack(ys)
    p_bar = lg.restricted_predictor(x[..., 0])
    together = lg.train("imm", [0.2, 0.6], x, y, p_bar, steps=20)
    for i, r in enumerate([0.2, 0.6]):
        for s in range(3):
            alone = lg.train("imm", [r], x[s:s + 1], y[s:s + 1], p_bar[s:s + 1], steps=20)
            assert torch.allclose(together[i, s], alone[0, 0], atol=1e-12)


# ---- the grid POMDP and its restricted policy ------------------------------------------------------


def test_fib_on_the_grid_is_q_value_iteration_and_matches_the_official_alphas():
    alphas = gw.restricted_alphas(var=0.3, gamma=0.9)  # (S, A)
    # deterministic moves and observations: FIB's sum over observations keeps one next state, so FIB = Q_MDP
    nxt, R = gw.next_state_table(), gw.mountain(0.3).reshape(-1)
    q = np.zeros_like(alphas)
    for _ in range(2000):
        q = R[:, None] + 0.9 * q.max(axis=1)[nxt]
    assert np.allclose(alphas, q, atol=1e-9)
    # a few entries of the official alphas_cached.h5 (Julia FIB.jl, stopped at its 1e-3 tolerance)
    official = {0: [1.83701658, 2.04208192, 1.83701658, 2.04208192], 60: [4.70942599] * 4,
                57: [3.46573976, 3.46573976, 3.2711895, 3.97260925]}
    for s, row in official.items():
        assert alphas[s] == pytest.approx(row, abs=0.01)


def test_fib_by_hand_on_a_one_state_pomdp():
    T, O, R = np.ones((1, 1, 1)), np.ones((1, 1, 1)), np.array([[1.0]])
    assert gw.fib_alphas(T, O, R, gamma=0.5)[0, 0] == pytest.approx(2.0)  # 1 / (1 - 0.5)


def test_restricted_policy_points_to_the_peak_column():
    p = gw.restricted_policy(gw.restricted_alphas())
    assert p.argmax(1).tolist() == [gw.RIGHT] * 5 + [gw.UP] + [gw.LEFT] * 5  # centre: UP and DOWN tie exactly
    soft = gw.restricted_policy(gw.restricted_alphas(), temperature=0.5)
    assert np.allclose(soft.sum(1), 1) and (soft.argmax(1)[:5] == gw.RIGHT).all()


# ---- REINFORCE and the induced policy -------------------------------------------------------------


def test_discounted_returns_by_hand():
    G = rf.discounted_returns(torch.tensor([1.0, 0.0, 2.0]), 0.5)
    assert G.tolist() == pytest.approx([1.5, 1.0, 2.0])


def _two_state_mdp():
    mu = torch.tensor([0.6, 0.4], dtype=torch.float64)  # start distribution
    P = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.3, 0.7]]], dtype=torch.float64)  # P[s, a, s']
    reward = torch.tensor([0.0, 1.0], dtype=torch.float64)  # reward of the state entered
    return mu, P, reward


@pytest.mark.parametrize("gamma,time_discount", [(1.0, False), (0.9, True)])
def test_reinforce_estimator_expectation_is_the_exact_policy_gradient(gamma, time_discount):
    # Enumerate every trajectory of a 2-state, 2-action MDP over T = 3 steps with a tabular softmax policy.
    mu, P, reward = _two_state_mdp()
    T = 3
    theta = torch.tensor([[0.3, -0.2], [-0.5, 0.4]], dtype=torch.float64, requires_grad=True)
    pi = torch.softmax(theta, -1)
    expected_estimate = torch.zeros_like(theta)
    J = torch.zeros((), dtype=torch.float64)
    for s0 in range(2):
        for steps in itertools.product(range(2), repeat=2 * T):  # (a_0, s_1, a_1, s_2, a_2, s_3)
            states, acts = [s0] + list(steps[1::2]), list(steps[0::2])
            prob = mu[s0]
            for t in range(T):
                prob = prob * pi[states[t], acts[t]] * P[states[t], acts[t], states[t + 1]]
            rewards = reward[states[1:]]
            J = J + prob * (gamma ** torch.arange(T, dtype=torch.float64) * rewards).sum()
            logp = torch.log_softmax(theta, -1)[states[:-1], acts]
            (g,) = torch.autograd.grad(rf.reinforce_loss(logp, rewards, gamma, time_discount), theta)
            expected_estimate += prob.detach() * g
    (exact,) = torch.autograd.grad(J, theta)  # ∇ E[Σ_t γ^t r_t]
    assert torch.allclose(-T * expected_estimate, exact, atol=1e-12)  # the loss is a mean over T steps


def test_official_estimator_without_gamma_t_is_biased_for_gamma_below_one():
    mu, P, reward = _two_state_mdp()
    # One step of bias is enough to see: with T = 2 the second step's weight lacks γ.
    theta = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    pi = torch.softmax(theta, -1)
    est_off, est_on = torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    for s0, a0, s1, a1, s2 in itertools.product(range(2), repeat=5):
        prob = (mu[s0] * pi[s0, a0] * P[s0, a0, s1] * pi[s1, a1] * P[s1, a1, s2]).detach()
        logp = torch.log_softmax(theta, -1)[[s0, s1], [a0, a1]]
        rewards = reward[[s1, s2]]
        est_off += prob * torch.autograd.grad(rf.reinforce_loss(logp, rewards, 0.5, False), theta, retain_graph=True)[0]
        est_on += prob * torch.autograd.grad(rf.reinforce_loss(logp, rewards, 0.5, True), theta)[0]
    assert not torch.allclose(est_off, est_on, atol=1e-6)


def test_inverse_cdf_sampling_has_the_policy_frequencies():
    probs = torch.tensor([0.2, 0.5, 0.3])
    u = (torch.arange(1000) + 0.5) / 1000
    counts = torch.bincount(rf.sample(probs.expand(1000, 3), u), minlength=3)
    assert counts.tolist() == [200, 500, 300]


def test_induced_policy_is_the_mean_over_hidden_rows_and_kl_zero_when_matched():
    bank = rf.PolicyBank(2, [7, 8])
    cols = torch.tensor([[0, 5, 10], [3, 3, 9]])
    got = rf.induced_policy(bank, cols)
    for p in range(2):
        for n, x in enumerate(cols[p].tolist()):
            states = torch.tensor([[y * gw.WIDTH + x for y in range(gw.HEIGHT)]])
            probs = torch.softmax(rf.PolicyBank.logits(_slice(bank, p), states), -1)[0]
            assert torch.allclose(got[p, n], probs.mean(0), atol=1e-6)
    assert torch.allclose(rf.imm_kl(got, got), torch.zeros(2), atol=1e-6)
    one_hot = torch.nn.functional.one_hot(torch.tensor([[1, 2, 3], [0, 0, 1]]), 4).float()
    expected = -torch.log(torch.gather(got, -1, one_hot.argmax(-1, keepdim=True))).squeeze(-1).mean(-1)
    assert torch.allclose(rf.imm_kl(one_hot, got), expected, atol=1e-6)


def _slice(bank, p):
    view = rf.PolicyBank.__new__(rf.PolicyBank)
    view.W1, view.b1, view.W2, view.b2 = (t[p:p + 1] for t in bank.params)
    return view


def test_arms_share_seeds_and_the_official_ratio_rule():
    arms = [{"name": "a", "lam": 0.0}, {"name": "b", "lam": 0.0}, {"name": "c", "lam": 0.25}]
    out = rf.run_arms(arms, [1, 2], [1, 2])
    assert np.array_equal(out["a"], out["b"])  # same seed, same λ: identical (common random numbers)
    assert not np.array_equal(out["a"], out["c"])
    assert [rf.official_ratio(e) for e in (10, 175, 200, 500)] == [0.2, 0.2, 0.1, 0.1]


def test_paired_statistics_by_hand():
    a, b = np.array([[3.0, 5.0, 4.0]]), np.array([[1.0, 2.0, 4.0]])
    d = paired(a, b)  # differences 2, 3, 0: mean 5/3, sd sqrt(7/3)
    assert d["mean"][0] == pytest.approx(5 / 3) and d["sd"][0] == pytest.approx(math.sqrt(7 / 3))
    assert d["se"][0] == pytest.approx(math.sqrt(7 / 9)) and (d["n_better"], d["n_worse"]) == ([2], [0])
    assert summary(np.array([1.0, 3.0]))["sd"] == pytest.approx(math.sqrt(2))


def test_entry_points_write_a_record_and_a_figure(tmp_path):
    import json
    threads = torch.get_num_threads()  # main() sets its own thread count; give the session's back
    lg.main(["--seeds", "2", "--sizes", "4,8", "--ratios", "0.5", "--steps", "3", "--n-eval", "50",
             "--out", str(tmp_path), "--figure", str(tmp_path / "l.png")])
    rf.main(["--seeds", "2", "--epochs", "1,2", "--sweep-epochs", "1", "--sweep-ratios", "0.0,0.5",
             "--out", str(tmp_path), "--figure", str(tmp_path / "r.png")])
    torch.set_num_threads(threads)
    for name, fig in (("imm-logistic", "l.png"), ("imm-reinforce", "r.png")):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["seeds"] == [1, 2] and record["wall_s"] is not None and record["machine"]["cores"]
        assert (tmp_path / fig).stat().st_size > 10_000
    record = json.loads((tmp_path / "imm-logistic.json").read_text())
    assert set(record["metrics"]["paired_vs_mle"]) == {"imm", "rkd", "noising"}
    assert len(record["metrics"]["methods"]["imm"]["test_acc"]["per_seed"]) == 2  # one row per size
