"""GEBM losses and samplers against known values (Arbel et al. 2021, Algorithms 1-3)."""

import math

import pytest
import torch

from lmlab.core.gebm.kale import base_loss, energy_loss, gradient_penalty, init_log_partition, log_mean_exp
from lmlab.core.gebm.langevin import kla, latent_potential, ula

pytestmark = pytest.mark.usefixtures("one_thread")



def _moments(z):
    return z.mean().item(), z.var().item()


@pytest.mark.parametrize("sampler", ["ula", "kla"])
def test_zero_energy_gives_latent_prior(sampler):
    g = torch.Generator().manual_seed(0)
    pot = latent_potential(lambda z: torch.zeros(z.shape[0]), beta=100.0)
    z0 = torch.randn(4000, 2, generator=g) * 3 + 2  # start far from the target
    if sampler == "ula":
        z = ula(pot, z0, 400, 0.05, generator=g)
    else:
        z = kla(pot, z0, 400, (0.2 / 2) ** 2, friction=1.0, mass=1.0, generator=g)  # lambda: h = 2 sqrt(lambda) = 0.2
    mean, var = _moments(z)
    assert abs(mean) < 0.06
    assert abs(var - 1.0) < 0.08  # ULA's O(γ) bias is 1/(1-γ/4)-1 ≈ 0.013 here


@pytest.mark.parametrize("sampler", ["ula", "kla"])
def test_quadratic_energy_gives_its_gaussian(sampler):
    # G = identity, E(x) = a/2 ‖x‖², β: U = ½(1+βa)‖z‖², so z ~ N(0, 1/(1+βa)).
    a, beta = 0.5, 6.0
    target_var = 1.0 / (1.0 + beta * a)
    g = torch.Generator().manual_seed(1)
    pot = latent_potential(lambda x: 0.5 * a * x.pow(2).sum(1), beta)
    z0 = torch.randn(4000, 3, generator=g)
    if sampler == "ula":
        z = ula(pot, z0, 500, 0.02, generator=g)
    else:
        z = kla(pot, z0, 500, (0.1 / 2) ** 2, friction=2.0, mass=0.5, generator=g)  # h = 0.1
    mean, var = _moments(z)
    assert abs(mean) < 0.03
    assert abs(var / target_var - 1.0) < 0.08


def test_step_size_decay_freezes_chain():
    g = torch.Generator().manual_seed(0)
    pot = latent_potential(lambda z: torch.zeros(z.shape[0]), 1.0)
    z0 = torch.zeros(10, 2)
    z = ula(pot, z0, 50, 1e-2, decay_every=1, decay=0.0, generator=g)  # only the first step moves
    assert (z - z0).abs().max() < 0.5 and (z - z0).abs().max() > 0


def test_optimal_log_partition_for_fixed_energy():
    torch.manual_seed(0)
    e_real, e_fake = torch.randn(64), torch.randn(256) * 0.7 + 0.3
    a = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([a], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = energy_loss(e_real, e_fake, a)
        loss.backward()
        return loss

    opt.step(closure)
    assert a.item() == pytest.approx(log_mean_exp(-e_fake).item(), abs=1e-4)
    assert init_log_partition(lambda x: x, lambda: e_fake, 3) == pytest.approx(log_mean_exp(-e_fake).item(), abs=1e-5)


def test_discrete_optimum_is_log_density_ratio():
    # On 5 points, min over (E, A) of Σp(E+A) + Σb exp(-E-A) - 1 gives E + A = -log(p/b); the value is -KL(p||b).
    p = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64)
    b = torch.tensor([0.3, 0.1, 0.2, 0.2, 0.2], dtype=torch.float64)
    e = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([e, a], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = (p * (e + a)).sum() + (b * torch.exp(-(e + a))).sum() - 1  # expectations, not sample means
        loss.backward()
        return loss

    opt.step(closure)
    ratio = -(e + a).detach()
    assert torch.allclose(ratio, torch.log(p / b), atol=1e-6)
    # energy_loss with weighted samples reproduces the expectation form
    kl = (p * torch.log(p / b)).sum()
    assert closure().item() == pytest.approx(-kl.item(), abs=1e-8)


def test_base_loss_gradient_is_softmax_weighted():
    torch.manual_seed(0)
    theta = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(50, 3, dtype=torch.float64)
    c = torch.randn(3, dtype=torch.float64)

    def energy(x):
        return (x - c).pow(2).sum(1) + x[:, 0].sin()

    loss = base_loss(energy(z @ theta))
    (grad,) = torch.autograd.grad(loss, theta)
    # analytic: Σ_i softmax(-E)_i ∇θ E(G(z_i))
    x = (z @ theta).detach().requires_grad_(True)
    e = energy(x)
    w = torch.softmax(-e.detach(), 0)
    (dx,) = torch.autograd.grad(e.sum(), x)
    expected = z.T @ (w[:, None] * dx)
    assert torch.allclose(grad, expected, atol=1e-10)
    # finite differences on one coordinate
    eps = 1e-6
    t2 = theta.detach().clone()
    t2[1, 2] += eps
    fd = (base_loss(energy(z @ t2)) - loss.detach()) / eps
    assert fd.item() == pytest.approx(grad[1, 2].item(), rel=1e-4, abs=1e-6)


def test_gradient_penalty_of_linear_energy():
    w = torch.tensor([3.0, 4.0])
    pen = gradient_penalty(lambda x: x @ w, torch.randn(8, 2), torch.randn(8, 2))
    assert pen.item() == pytest.approx(25.0)


def test_energy_loss_value():
    loss = energy_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, math.log(2.0)]), torch.tensor(0.0))
    assert loss.item() == pytest.approx(2.0 + 0.75 - 1.0)


def test_base_loss_data_term_and_official_helpers():
    from lmlab.core.gebm.kale import transform_grads, weight_l2_penalty
    e_real, e_fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, math.log(2.0)])
    # -mean E(x) - log mean exp(-E(G z)) = -2 - log(0.75)
    assert base_loss(e_fake, e_real).item() == pytest.approx(-2.0 - math.log(0.75))
    w = torch.nn.Parameter(torch.ones(2, 3))
    assert weight_l2_penalty([w]).item() == pytest.approx(6.0 / 5.0)  # sum w^2 / (2 + 3), official gradient_l2
    a = torch.nn.Parameter(torch.zeros(()))
    w.grad, a.grad = torch.tensor([[1.0, 0.0, -3.0]] * 2), torch.tensor(0.5)
    transform_grads([w], a)
    assert w.grad[0].tolist() == pytest.approx([1.0, 0.0, -0.6])  # 2g / (1 + g^2)
    assert a.grad.item() == pytest.approx(1.0)  # g / (1 - g)


def test_lr_milestones():
    from lmlab.core.gebm.train import lr_factor, milestones
    steps = milestones("500, 50,750")
    assert steps == [50, 500, 750]
    assert [lr_factor(u, steps, 0.8) for u in (0, 49, 50, 499, 500, 10_000)] == pytest.approx(
        [1, 1, 0.8, 0.8, 0.64, 0.512])


def test_realnvp_inverse_and_change_of_variables():
    from lmlab.core.gebm.flows import CombinedFlowEnergy, FlowBase
    torch.manual_seed(0)
    base = FlowBase(3, transforms=3, hidden=8).double()
    z = torch.randn(5, 3, dtype=torch.float64)
    x = base(z)
    u = x
    for layer in base.flow.layers:
        u, _ = layer.direct(u)
    assert torch.allclose(u, z, atol=1e-10)  # G is the inverse of the density pass
    # log b(x) = log N(G^-1 x) + log|det dG^-1/dx|, the determinant from autograd
    for i in range(2):
        def f(v):
            for layer in base.flow.layers:
                v, _ = layer.direct(v)
            return v
        jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], x[i])
        want = torch.distributions.Normal(0.0, 1.0).log_prob(z[i]).sum() + torch.linalg.slogdet(jac)[1]
        assert base.log_prob(x[i:i + 1]).item() == pytest.approx(want.item(), abs=1e-8)
    energy = CombinedFlowEnergy(3, base, transforms=2, hidden=8).double()
    assert len(list(energy.parameters())) == len(list(energy.flow.parameters()))  # base weights not its own
    assert torch.allclose(energy(x), -energy.flow.log_prob(x) + base.log_prob(x))


@pytest.mark.parametrize("kind", ["maf", "made"])
def test_maf_and_made_are_autoregressive_invertible_and_change_variables(kind):
    """The official `maf` / `made` flows: each MADE's output i reads x_<i only (its Jacobian is lower triangular),
    G = inverse pass undoes the density pass, and log b is log N(u) + log|det du/dx| with the determinant from
    autograd."""
    from lmlab.core.gebm.flows import MADE, CombinedFlowEnergy, FlowBase
    torch.manual_seed(0)
    made = MADE(4, 12).double()
    jac = torch.autograd.functional.jacobian(lambda v: made.direct(v[None])[0][0], torch.randn(4, dtype=torch.float64))
    assert torch.count_nonzero(torch.triu(jac, diagonal=1)) == 0 and torch.count_nonzero(torch.diagonal(jac)) == 4
    base = FlowBase(4, transforms=3, hidden=12, kind=kind).double()
    z = torch.randn(6, 4, dtype=torch.float64) * 0.5
    x = base(z)

    def density_pass(v):  # x -> u, as log_prob walks it
        for layer in base.flow.layers:
            v = layer.direct(v)[0]
            v = v.flip(-1) if kind == "maf" else v
        return v

    assert torch.allclose(density_pass(x), z, atol=1e-9)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: density_pass(v[None])[0], x[i])
        want = torch.distributions.Normal(0.0, 1.0).log_prob(z[i]).sum() + torch.linalg.slogdet(jac)[1]
        assert base.log_prob(x[i:i + 1]).item() == pytest.approx(want.item(), abs=1e-8)
    loss = base(torch.randn(3, 4, dtype=torch.float64)).pow(2).sum()  # G is differentiable in its weights
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in base.parameters())
    energy = CombinedFlowEnergy(4, base, transforms=3, hidden=12, kind=kind).double()
    assert torch.allclose(energy(x), -energy.flow.log_prob(x) + base.log_prob(x))
    assert len(base.flow.layers) == (3 if kind == "maf" else 1)


def test_conv_energy_is_truncated_below():
    from lmlab.core.gebm.nets import ConvEnergy
    torch.manual_seed(0)
    net = ConvEnergy(width=2, spectral=False, floor=0.5)
    with torch.no_grad():
        net.out.bias.fill_(-100.0)  # raw output far below -floor
        e = net(torch.rand(3, 3, 32, 32))
    assert torch.allclose(e, torch.full((3,), -0.5))


def test_importance_sampled_log_z_counts_zero_weights_and_refuses_nan():
    """An energy of +inf is a weight of exactly 0: it stays in the average (dropping it would inflate Z);
    a NaN or -inf energy makes the estimate meaningless and is one clear error."""
    from lmlab.core.errors import LmlabError
    from lmlab.core.gebm.evaluate import log_partition_is

    class Base(torch.nn.Module):
        def sample(self, n, generator, device):
            return torch.arange(n, dtype=torch.float32)

        def forward(self, z):
            return z

    def energy_of(values):
        return lambda x: torch.tensor(values, dtype=torch.float32)[x.long()]

    out = log_partition_is(Base(), energy_of([0.0, 0.0, math.inf, math.inf]), 4, None, "cpu")
    assert out["log_z"] == pytest.approx(math.log(0.5)) and out["zero_weight_samples"] == 2
    for bad in (math.nan, -math.inf):
        with pytest.raises(LmlabError, match="NaN or -inf"):
            log_partition_is(Base(), energy_of([0.0, bad]), 2, None, "cpu")


def test_resnet_sn_networks_are_the_official_shapes():
    """configs/training.yaml's `resnet-sn` generator and critic (SNGAN's CIFAR ResNets): 32x32 RGB out of z, a scalar
    energy truncated at -floor, spectral norm on every critic weight, and the parameter count of that architecture."""
    from torch.nn.utils import parametrize

    from lmlab.core.gebm.nets import ResNetEnergy, ResNetGenerator
    torch.manual_seed(0)
    w, d = 16, 10
    gen, critic = ResNetGenerator(d, w), ResNetEnergy(w, floor=10.0)
    x = gen(torch.randn(3, d))
    assert x.shape == (3, 3, 32, 32) and x.abs().max() <= 1
    assert critic(x).shape == (3,)
    n_gen = (16 * w * d + 16 * w) + 3 * (2 * (9 * w * w + w) + 2 * 2 * w) + 2 * w + (27 * w + 3)
    n_critic = (27 * w + w) + (9 * w * w + w) + (3 * w + w) + (2 * (9 * w * w + w) + (w * w + w)) \
        + 2 * 2 * (9 * w * w + w) + (w + 1)
    assert sum(p.numel() for p in gen.parameters()) == n_gen
    assert sum(p.numel() for p in critic.parameters()) == n_critic
    weighted = [m for m in critic.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == 11 and all(parametrize.is_parametrized(m, "weight") for m in weighted)
    with torch.no_grad():
        critic.out.parametrizations.weight.original.fill_(-100.0)
        critic.out.bias.fill_(-1e4)
    assert torch.allclose(critic(x), torch.full((3,), -10.0))  # the official truncation at -max
