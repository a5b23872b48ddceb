"""Residual EBM (Deng et al. 2020): NCE loss, log Z estimators, perplexity bounds, energy padding, Algorithm 1."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from lmlab.core.generate import sample_continuations, sequence_logprob
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig
from lmlab.core.residual.config import EnergyConfig
from lmlab.core.residual.energy import BiTEnergy, UniTEnergy
from lmlab.core.residual.estimators import (classification_accuracy, log_z_bounds, log_z_leave_one_out, log_z_tn,
                                            nce_loss)
from lmlab.core.residual.evaluate import joint_ppl_from_windows
from lmlab.core.residual.joint import ResidualModel
from lmlab.core.residual.sample import joint_sample
from lmlab.core.residual.windows import Windows


pytestmark = pytest.mark.usefixtures("one_thread_module")


def tiny_lm(vocab: int = 5, kind: str = "transformer", seed: int = 0, sharpen: float = 40.0):
    torch.manual_seed(seed)
    cfg = ModelConfig(kind=kind, d_model=16, n_layers=1)
    cfg.transformer.n_heads, cfg.transformer.context, cfg.transformer.dropout = 2, 32, 0.0
    cfg.lstm.hidden_size, cfg.lstm.dropout = 16, 0.0
    lm = build_language_model(cfg, vocab).eval()
    with torch.no_grad():  # sharpen the output so the distribution is far from uniform
        lm.output.weight.mul_(sharpen)
    return lm


class ZeroEnergy(nn.Module):
    def forward(self, tokens, mask=None):
        return torch.zeros(tokens.size(0))


class TableEnergy(nn.Module):
    """A fixed energy depending on the continuation's last two tokens: E = table[x_{T-1}, x_T]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, tokens, mask=None):
        return self.table[tokens[:, -2], tokens[:, -1]]


# --- NCE -------------------------------------------------------------------------------------------
def test_nce_loss_value_and_gradient_signs():
    e_pos = torch.zeros(4, requires_grad=True)
    e_neg = torch.zeros(4, 3, requires_grad=True)
    loss = nce_loss(e_pos, e_neg)
    assert loss.item() == pytest.approx(2 * math.log(2))
    loss.backward()
    # d softplus(E)/dE = sigmoid(E) = 1/2, averaged over B positives / B*K negatives
    assert torch.allclose(e_pos.grad, torch.full((4,), 0.5 / 4))
    assert torch.allclose(e_neg.grad, torch.full((4, 3), -0.5 / 12))
    assert e_pos.grad.shape == e_pos.shape and e_neg.grad.shape == e_neg.shape


def test_nce_loss_is_bce_with_logit_minus_energy():
    e_pos, e_neg = torch.randn(6), torch.randn(6, 2)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(-e_pos, torch.ones(6)) + bce(-e_neg, torch.zeros(6, 2))
    assert nce_loss(e_pos, e_neg).item() == pytest.approx(expected.item(), rel=1e-6)
    acc = classification_accuracy(torch.tensor([-1.0, 1.0]), torch.tensor([[2.0], [2.0]]))
    assert acc["acc_real"] == 0.5 and acc["acc_lm"] == 1.0 and acc["acc_pairwise"] == 1.0


# --- log Z estimators -----------------------------------------------------------------------------
def test_leave_one_out_matches_brute_force():
    e = torch.randn(3, 5, dtype=torch.float64)
    brute = torch.stack([log_z_tn(e[:, [j for j in range(5) if j != i]]) for i in range(5)], -1).mean(-1)
    assert torch.allclose(log_z_leave_one_out(e), brute)
    lo, up = log_z_bounds(e)
    assert torch.allclose(up, 9 * lo - 8 * brute)
    assert log_z_bounds(e[:, :1])[1] is None


def test_estimators_bracket_log_z_on_an_enumerable_distribution():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(12))  # proposal P_LM over 12 outcomes
    energy = rng.normal(0, 1.5, 12)
    log_z = math.log(float((p * np.exp(-energy)).sum()))
    n, reps = 4, 40000
    draws = torch.from_numpy(energy[rng.choice(12, size=(reps, n), p=p)])
    lo, up = log_z_bounds(draws)
    # Theorem 2: E[T_n] < log Z < E[(2n-1)T_n - 2(n-1)T_{n-1}], and the corrected bias is much smaller
    assert lo.mean().item() < log_z - 0.02
    assert up.mean().item() > log_z
    assert abs(up.mean().item() - log_z) < abs(lo.mean().item() - log_z) / 2
    big = torch.from_numpy(energy[rng.choice(12, size=(1, 200000), p=p)])
    assert log_z_tn(big).item() == pytest.approx(log_z, abs=0.01)


# --- perplexity bounds through the LM ----------------------------------------------------------------
def test_zero_energy_bounds_equal_base_lm_perplexity():
    lm = tiny_lm()
    stream = np.random.default_rng(1).integers(0, 5, 400)
    windows = Windows(stream, 4, 3)
    model = ResidualModel(lm, ZeroEnergy(), 4, 3)
    out = joint_ppl_from_windows(model, windows, samples=[1, 2, 8], max_examples=20, batch_size=8, seed=0)
    base = out["base_lm"]["ppl"]
    prefixes, conts = windows.get(np.arange(20))
    expected = math.exp(-sequence_logprob(lm, prefixes, conts).sum().item() / 60)
    assert base == pytest.approx(expected, rel=1e-6)
    for row in out["joint"]:
        assert row["lower_ppl"] == pytest.approx(base, rel=1e-9)
        assert row["upper_ppl"] is None if row["n"] == 1 else row["upper_ppl"] == pytest.approx(base, rel=1e-9)


def test_joint_ppl_converges_to_exact_enumerated_value():
    lm = tiny_lm(vocab=3, seed=2)
    table = torch.tensor([[0.0, 1.5, -1.0], [2.0, 0.0, 0.5], [-0.5, 1.0, 0.0]])
    energy = TableEnergy(table)
    windows = Windows(np.random.default_rng(3).integers(0, 3, 60), 2, 2)
    model = ResidualModel(lm, energy, 2, 2)
    prefixes, conts = windows.get(np.arange(4))
    # exact: enumerate all 9 continuations of each prefix
    allc = torch.tensor(list(itertools.product(range(3), repeat=2)))  # (9, 2)
    exact_nll = 0.0
    for b in range(4):
        pre = prefixes[b:b + 1].expand(9, -1)
        logp = sequence_logprob(lm, pre, allc)
        log_z = torch.logsumexp(logp - table[allc[:, 0], allc[:, 1]], 0).item()
        exact_nll += -sequence_logprob(lm, prefixes[b:b + 1], conts[b:b + 1]).item() \
            + table[conts[b, 0], conts[b, 1]].item() + log_z
    exact_ppl = math.exp(exact_nll / 8)
    out = joint_ppl_from_windows(model, windows, samples=[2, 4000], max_examples=4, batch_size=4, seed=0)
    big = out["joint"][-1]
    assert big["lower_ppl"] == pytest.approx(exact_ppl, rel=0.01)
    assert big["upper_ppl"] == pytest.approx(exact_ppl, rel=0.01)
    assert big["lower_ppl"] <= big["upper_ppl"]
    assert abs(out["base_lm"]["ppl"] - exact_ppl) > 0.03 * exact_ppl  # the energy does change the model



def _exact_toy():
    """Vocab 3, prefix 2, continuation 2, E = table[x_1, x_2]: every quantity enumerable."""
    lm = tiny_lm(vocab=3, seed=2)
    table = torch.tensor([[0.0, 1.5, -1.0], [2.0, 0.0, 0.5], [-0.5, 1.0, 0.0]])
    windows = Windows(np.random.default_rng(3).integers(0, 3, 60), 2, 2)
    return lm, table, windows, ResidualModel(lm, TableEnergy(table), 2, 2)


def _exact_position_gains(lm, table, prefixes, conts) -> np.ndarray:
    """log P_joint(x_t | x_<t) - log P_LM(x_t | x_<t) per window and position, by enumeration: (B, 2)."""
    allc = torch.tensor(list(itertools.product(range(3), repeat=2)))  # (9, 2)
    gains = []
    for b in range(prefixes.size(0)):
        logp = sequence_logprob(lm, prefixes[b:b + 1].expand(9, -1), allc)  # log P_LM(y_1, y_2)
        joint = logp - table[allc[:, 0], allc[:, 1]]
        joint = joint - torch.logsumexp(joint, 0)  # log P_joint(y_1, y_2)
        x1, x2 = int(conts[b, 0]), int(conts[b, 1])
        first = allc[:, 0] == x1
        j1, l1 = torch.logsumexp(joint[first], 0), torch.logsumexp(logp[first], 0)  # marginals of x_1
        pair = first & (allc[:, 1] == x2)
        gains.append([(j1 - l1).item(), ((joint[pair] - j1) - (logp[pair] - l1)).item()])
    return np.array(gains)


def test_per_position_gains_converge_to_the_enumerated_conditionals():
    lm, table, windows, model = _exact_toy()
    prefixes, conts = windows.get(np.arange(6))
    exact = _exact_position_gains(lm, table, prefixes, conts)  # (6, 2)
    assert np.abs(exact).max() > 0.2  # the energy moves both positions' conditionals
    out = joint_ppl_from_windows(model, windows, samples=[2], max_examples=6, batch_size=3, seed=0,
                                 position_samples=4000)
    rows = out["per_position"]["positions"]
    assert [r["position"] for r in rows] == [1, 2] and out["per_position"]["windows"] == 6
    for t, row in enumerate(rows):
        assert row["gain_nats_per_token"] == pytest.approx(exact[:, t].mean(), abs=0.02)
        assert row["joint_ppl"] == pytest.approx(row["base_ppl"] * math.exp(-row["gain_nats_per_token"]), rel=1e-12)
    # the positions' conditionals multiply to the joint of the whole continuation, as the bracket's large-n estimate
    total_gain = sum(r["gain_nats_per_token"] for r in rows)
    assert total_gain == pytest.approx(exact.sum(1).mean(), abs=0.03)


def test_per_position_leaves_the_bracket_unchanged():
    _, _, windows, model = _exact_toy()
    plain = joint_ppl_from_windows(model, windows, samples=[2, 8], max_examples=6, batch_size=3, seed=0)
    with_positions = joint_ppl_from_windows(model, windows, samples=[2, 8], max_examples=6, batch_size=3, seed=0,
                                            position_samples=4)
    assert with_positions["joint"] == plain["joint"] and "per_position" not in plain


def test_paired_gain_is_the_per_window_log_ratio_with_its_standard_error():
    lm, table, windows, model = _exact_toy()
    out = joint_ppl_from_windows(model, windows, samples=[4000], max_examples=8, batch_size=4, seed=0)
    gain = out["joint"][0]["paired_gain_lower"]
    prefixes, conts = windows.get(np.arange(8))
    exact = _exact_position_gains(lm, table, prefixes, conts).sum(1)  # log P_joint - log P_LM per window
    assert gain["windows"] == 8
    assert gain["mean_nats_per_window"] == pytest.approx(exact.mean(), abs=0.03)
    assert gain["se"] == pytest.approx(exact.std(ddof=1) / math.sqrt(8), rel=0.1)
    # the mean gain is the bracket's: base NLL minus the joint's lower NLL, per window
    per_window = (out["base_lm"]["nll_nats_per_token"] - out["joint"][0]["nll_lower_nats_per_token"]) * 2
    assert gain["mean_nats_per_window"] == pytest.approx(per_window, rel=1e-9)
    zero = joint_ppl_from_windows(ResidualModel(lm, ZeroEnergy(), 2, 2), windows, samples=[1, 4], max_examples=8,
                                  batch_size=4, seed=0)
    assert zero["joint"][1]["paired_gain_lower"]["mean_nats_per_window"] == pytest.approx(0.0, abs=1e-12)
    assert zero["joint"][1]["paired_gain_upper"]["se"] == pytest.approx(0.0, abs=1e-12)


# --- energy networks: padding never enters ------------------------------------------------------------
@pytest.mark.parametrize("which", ["bit", "bit-post", "unit-transformer", "unit-lstm"])
def test_padding_does_not_change_energy(which):
    torch.manual_seed(0)
    if which.startswith("bit"):
        norm = "post" if which == "bit-post" else "pre"
        energy = BiTEnergy(7, 12, EnergyConfig(d_model=16, n_layers=2, n_heads=2, dropout=0.0, norm=norm))
    else:
        energy = UniTEnergy(tiny_lm(vocab=7, kind=which.split("-")[1]), 16)
        nn.init.normal_(energy.head.weight)
    energy.eval()
    real = torch.tensor([[1, 2, 3, 4, 5, 6, 1, 2]])
    e_ref = energy(real)
    right = torch.cat([real, torch.tensor([[3, 3, 3, 3]])], 1)
    left = torch.cat([torch.tensor([[6, 0, 2, 5]]), real], 1)
    m_right = torch.tensor([[True] * 8 + [False] * 4])
    m_left = torch.tensor([[False] * 4 + [True] * 8])
    other_pads = right.clone()
    other_pads[0, 8:] = torch.tensor([0, 6, 1, 2])
    for tokens, mask in [(right, m_right), (left, m_left), (other_pads, m_right)]:
        assert torch.allclose(energy(tokens, mask), e_ref, atol=1e-5)
    changed = real.clone()
    changed[0, 2] = 0
    assert not torch.allclose(energy(changed), e_ref, atol=1e-4)


def test_unit_starts_from_the_base_lm_weights():
    lm = tiny_lm()
    energy = UniTEnergy(lm, 16)
    assert torch.equal(energy.embed.table.weight, lm.embed.table.weight)
    assert energy.embed.table.weight.data_ptr() != lm.embed.table.weight.data_ptr()  # a copy: the LM stays frozen
    assert energy(torch.tensor([[1, 2, 3]])).item() == 0.0  # zero head: joint model starts as the base LM


# --- Algorithm 1 ---------------------------------------------------------------------------------------
def test_algorithm1_with_zero_energy_returns_a_base_lm_top_k_sample():
    lm = tiny_lm()
    model = ResidualModel(lm, ZeroEnergy(), 4, 4)
    prefixes = torch.tensor([[1, 2, 3, 4], [0, 0, 1, 1]])
    res = joint_sample(model, prefixes, candidates=8, top_k=2, max_new_tokens=3,
                       generator=torch.Generator().manual_seed(5))
    cand = sample_continuations(lm, prefixes, num_samples=8, max_new_tokens=3, top_k=2,
                                generator=torch.Generator().manual_seed(5)).view(2, 8, 3)
    for b in range(2):
        assert torch.equal(res["tokens"][b, 0], cand[b, res["index"][b, 0]])
    # distributionally: the first token follows the LM's top-2 distribution
    with torch.no_grad():
        logits = lm(prefixes[:1])[0][0, -1]
    top = torch.topk(logits, 2)
    p = torch.zeros(5).scatter(0, top.indices, top.values.softmax(-1))
    many = joint_sample(model, prefixes[:1], candidates=4, top_k=2, max_new_tokens=1, num_samples=3000,
                        generator=torch.Generator().manual_seed(6))["tokens"].flatten()
    freq = torch.bincount(many, minlength=5).float() / many.numel()
    assert torch.allclose(freq, p, atol=0.03)


def test_algorithm1_approaches_the_joint_distribution_with_many_candidates():
    lm = tiny_lm(vocab=3, seed=4, sharpen=1.0)  # a flat proposal: 64 candidates make the resampling bias small
    table = torch.tensor([[0.0, 1.5, -1.0], [1.0, 0.0, 0.5], [-1.0, 1.0, 0.0]])
    model = ResidualModel(lm, TableEnergy(table), 2, 2)
    prefix = torch.tensor([[1, 2]])
    allc = torch.tensor(list(itertools.product(range(3), repeat=2)))
    joint = (sequence_logprob(lm, prefix.expand(9, -1), allc) - table[allc[:, 0], allc[:, 1]]).softmax(0)
    res = joint_sample(model, prefix, candidates=64, top_k=0, max_new_tokens=2, num_samples=3000,
                       generator=torch.Generator().manual_seed(7))["tokens"][0]  # (S, 2)
    freq = torch.bincount(res[:, 0] * 3 + res[:, 1], minlength=9).float() / res.size(0)
    assert torch.allclose(freq, joint.float(), atol=0.03)
    base = sequence_logprob(lm, prefix.expand(9, -1), allc).exp()
    assert (freq - base.float()).abs().max() > 0.1  # and differs from the base LM


# --- non-finite energies are refused, not dropped by logsumexp ---------------------------------------------------
class InfOnToken(nn.Module):
    """E = +inf on rows whose last token is `token` (exp(-E) = 0 would silently vanish from log Z), else 0."""

    def __init__(self, token: int, value: float = float("inf")):
        super().__init__()
        self.token, self.value = token, value

    def forward(self, tokens, mask=None):
        return torch.where(tokens[:, -1] == self.token, torch.tensor(self.value), torch.tensor(0.0))


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_log_z_refuses_non_finite_energies(value):
    from lmlab.core.errors import LmlabError
    lm = tiny_lm(vocab=3, seed=2, sharpen=1.0)  # every token likely: some LM sample ends in token 1
    windows = Windows(np.random.default_rng(3).integers(0, 3, 60), 2, 2)
    model = ResidualModel(lm, InfOnToken(1, value), 2, 2)
    with pytest.raises(LmlabError, match=r"non-finite \(nan/inf\) on \d+ of \d+ (LM samples|real continuations)"):
        joint_ppl_from_windows(model, windows, samples=[8], max_examples=4, batch_size=4, seed=0)
    ok = joint_ppl_from_windows(ResidualModel(lm, ZeroEnergy(), 2, 2), windows, samples=[8], max_examples=4,
                                batch_size=4, seed=0)
    assert math.isfinite(ok["joint"][0]["lower_ppl"])
