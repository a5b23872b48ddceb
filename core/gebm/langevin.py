"""Latent-space samplers of a GEBM (Arbel, Zhou & Gretton, ICLR 2021, Section 4, Algorithms 2 and 3).

A GEBM sample is G(z) with z drawn from the latent posterior  nu(z) ∝ N(z; 0, I) exp(-β E(G(z))), i.e.
exp(-U(z)) with U(z) = ½‖z‖² + β·E(G(z)) (β the inverse temperature; the paper samples at β = 100).
The prior enters U as −log N(z; 0, I) (official `Latent_potential`: −log_prob(z) + β D(G(z))).

Both samplers take the official code's single step parameter λ (`--lmc_gamma`, 1e-4 for CIFAR-10)
and multiply λ by `decay` every `decay_every` steps (official `sample()`: ×0.1 every 200 steps):
- ULA (Algorithm 2, official `LangevinSampler.euler`): z ← z − (λ/2)∇U(z) + √λ ξ.
- KLA (Algorithm 3, official `LMCsampler.leapfrog`): kinetic Langevin dz = v dt, dv = −κ v dt − u ∇U dt
  + √(2κu) dW, stationary in exp(−U(z) − ‖v‖²/(2u)), with time step h = 2√λ (λ = 1e-4 → h = 0.02),
  friction κ (official 100), unit mass u = 1 in the official code, velocity starting at 0 and carried
  across steps. Splitting A-B-O-B-A in the official order: half position step, half momentum step with
  ∇U at the half position, exact Ornstein–Uhlenbeck friction/noise, half momentum step with the same
  gradient, half position step. Since h = 2√λ, a decay of λ by 0.1 shrinks h by √0.1 ≈ 0.316.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def latent_potential(energy_of_latent: Callable[[torch.Tensor], torch.Tensor], beta: float):
    """U(z) = ½‖z‖² + β·E(G(z)) for z (N, d) -> (N,)."""
    def potential(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * z.pow(2).sum(dim=1) + beta * energy_of_latent(z)
    return potential


def grad_potential(potential, z: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(potential(z).sum(), z)
    return g


def step_lambda(step_size: float, t: int, decay_every: int, decay: float) -> float:
    """λ at step t (0-based): λ₀ · decay^(t // decay_every); decay_every = 0 keeps λ fixed."""
    return step_size * (decay ** (t // decay_every)) if decay_every > 0 else step_size


def kla_time_step(lam: float) -> float:
    """KLA's time step h = 2√λ (official `LMCsampler.leapfrog`)."""
    return 2.0 * math.sqrt(lam)


def ula(potential, z0: torch.Tensor, steps: int, step_size: float, *, decay_every: int = 0, decay: float = 1.0,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Unadjusted Langevin (Algorithm 2): z ← z − (λ/2)∇U(z) + √λ ξ, λ = step_size decayed."""
    z = z0.detach().clone()
    for t in range(steps):
        lam = step_lambda(step_size, t, decay_every, decay)
        noise = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
        z = z - 0.5 * lam * grad_potential(potential, z) + math.sqrt(lam) * noise
    return z.detach()


def kla(potential, z0: torch.Tensor, steps: int, step_size: float, *, friction: float = 100.0, mass: float = 1.0,
        decay_every: int = 0, decay: float = 1.0, v0: torch.Tensor | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Kinetic Langevin (Algorithm 3): step_size is λ, the time step is h = 2√λ; friction κ, mass u.

    Returns z; the velocity starts at v0 (default 0, as the official sampler's `eval_velocity`).
    """
    z = z0.detach().clone()
    v = torch.zeros_like(z) if v0 is None else v0.detach().clone()
    for t in range(steps):
        h = kla_time_step(step_lambda(step_size, t, decay_every, decay))
        c = math.exp(-friction * h)
        d = math.sqrt(mass * (1.0 - math.exp(-2.0 * friction * h)))
        z = z + 0.5 * h * v                                       # A: half position step
        g = grad_potential(potential, z)                          # ∇U at the half position
        v = v - 0.5 * h * mass * g                                # B: half momentum step
        noise = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
        v = c * v + d * noise                                     # O: exact OU step, stationary N(0, u I)
        v = v - 0.5 * h * mass * g                                # B (same gradient point)
        z = z + 0.5 * h * v                                       # A
    return z.detach()
