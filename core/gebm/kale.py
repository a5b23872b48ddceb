"""KALE losses of Generalized EBMs (Arbel, Zhou & Gretton, ICLR 2021, Algorithm 1).

The model is Q(dx) = exp(-E(x) - A) B(dx) with B = G#N(0, I). Training alternates
- the energy step: minimise  mean_data(E + A) + mean_fake(exp(-(E + A))) - 1  (+ gradient penalty),
  the negative KALE lower bound of KL(P || B); A is a learnable scalar log-partition;
- the base step: minimise  -mean_data(E) - log mean_i exp(-E(G(z_i)))  (the official generator loss:
  KALE with A replaced by its batch optimum; the data term matters only when E depends on the base,
  as the official UCI energy E = -log p_phi + log b does, where it is the base's maximum likelihood).
At the optimum over (E, A) for fixed B, exp(-E-A) = dP/dB, so Q = P.
"""

from __future__ import annotations

import math

import torch


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def energy_loss(e_real: torch.Tensor, e_fake: torch.Tensor, log_partition: torch.Tensor) -> torch.Tensor:
    """Negative KALE of Algorithm 1's energy step: mean(E(x)+A) + mean(exp(-(E(G(z))+A))) - 1.  (B,), (B,) -> ()"""
    return (e_real + log_partition).mean() + torch.exp(-(e_fake + log_partition)).mean() - 1.0


def kale_estimate(e_real: torch.Tensor, e_fake: torch.Tensor, log_partition: torch.Tensor) -> torch.Tensor:
    """KALE(P || B) lower bound, the value of the energy step (>= 0 at its optimum, 0 when P = B)."""
    return -energy_loss(e_real, e_fake, log_partition)


def base_loss(e_fake: torch.Tensor, e_real: torch.Tensor | None = None) -> torch.Tensor:
    """Base step of Algorithm 1: -mean(E(x)) - log mean_i exp(-E(G(z_i))); the G(z) gradient is the
    softmax(-E)-weighted mean of grad E(G(z_i)). `e_real` None drops the data term (constant in G)."""
    loss = -log_mean_exp(-e_fake, dim=0)
    return loss if e_real is None else loss - e_real.mean()


def gradient_penalty(energy, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i ||grad_x E(x_i)||^2 at x_i = a real_i + (1-a) fake_i, a ~ U(0,1) per example (official penalty).
    `alpha` (n, 1, ...): given weights instead of drawing them (a process's rows of the global batch's draw)."""
    n = min(real.shape[0], fake.shape[0])
    shape = (n,) + (1,) * (real.dim() - 1)
    if alpha is None:
        alpha = torch.rand(shape, generator=generator)
    alpha = alpha.to(real.device, real.dtype)
    x = (alpha * real[:n].detach() + (1 - alpha) * fake[:n].detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
    return grad.reshape(n, -1).pow(2).sum(dim=1).mean()


def weight_l2_penalty(params) -> torch.Tensor:
    """Official `gradient_l2` weight term: sum ||w||^2 / sum over tensors of the sum of their shape dims."""
    params = list(params)
    total = sum(p.pow(2).sum() for p in params)
    return total / float(sum(sum(p.shape) for p in params))


@torch.no_grad()
def transform_grads(params, log_partition: torch.Tensor | None) -> None:
    """Official `grad_clip` before Adam: g -> 2g/(1+g^2) on the energy weights (bounded in [-1, 1]) and
    g -> g/(1-g) on A (A's gradient 1 - mean exp(-(E+A)) becomes 1/mean exp(-(E+A)) - 1); non-finite -> 0."""
    for p in params:
        if p.grad is not None:
            g = 2 * p.grad / (1 + p.grad.pow(2))
            p.grad.copy_(g if torch.isfinite(g).all() else torch.zeros_like(g))
    if log_partition is not None and log_partition.grad is not None:
        g = log_partition.grad / (1 - log_partition.grad)
        log_partition.grad.copy_(g if torch.isfinite(g).all() else torch.zeros_like(g))


@torch.no_grad()
def init_log_partition(energy, sample_fake, batches: int) -> float:
    """A_0 = log mean exp(-E(G(z))) over `batches` latent batches (the optimal A for the initial E)."""
    values = [(-energy(sample_fake())).double() for _ in range(max(1, batches))]
    return float(log_mean_exp(torch.cat(values)))
