"""RealNVP base and energies for GEBM density modelling (Arbel et al. 2021, Section 6.2; official UCI runs use
the "NVP" of their code: 5 affine coupling layers, 100 hidden units, scale net tanh / translate net ReLU,
alternating masks, no batch norm since `gen_bn = dis_bn = False` in configs/uci/*.yaml).

Plain torch (no flow library): the energy step's gradient penalty differentiates log p(x) twice, and a small
hand-written coupling keeps that double backward cheap on CPU.
- `RealNVP`: x -> u direct pass with log|det|, u -> x inverse, log p(x) = log N(u; 0, I) + sum log s.
- `MAF` / `SingleMADE`: the official `maf` and `made` networks (masked autoregressive layers), chosen by model.flow.
- `FlowBase`: B = G#N(0, I) with G the inverse pass, so B has a tractable `log_prob(x)` (the MLE baseline, NLLs).
- `FlowEnergy`: E(x) = -log p_phi(x), a second RealNVP's negative log-density (Q ∝ p_phi · b).
- `CombinedFlowEnergy`: E(x) = -log p_phi(x) + log b(x), the official UCI runs' `combined_discriminator`:
  Q ∝ exp(-E) b = p_phi, so Q is normalised (Z = 1) and its base step gets a maximum-likelihood term.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Coupling(nn.Module):
    """Affine coupling (Dinh et al. 2017): u = x * exp(s(x_m)) + t(x_m) on the unmasked coordinates."""

    def __init__(self, dim: int, hidden: int, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)
        self.scale = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, dim))
        self.shift = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, dim))

    def _st(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xm = x * self.mask
        return self.scale(xm) * (1 - self.mask), self.shift(xm) * (1 - self.mask)  # (N, D), (N, D)

    def direct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_s, t = self._st(x)
        return x * torch.exp(log_s) + t, log_s.sum(-1)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        log_s, t = self._st(u)  # the masked coordinates are unchanged, so s, t are the same
        return (u - t) * torch.exp(-log_s)


class RealNVP(nn.Module):
    def __init__(self, dim: int, transforms: int = 5, hidden: int = 100):
        super().__init__()
        mask = (torch.arange(dim) % 2).float()
        layers = []
        for _ in range(transforms):
            layers.append(Coupling(dim, hidden, mask))
            mask = 1 - mask
        self.layers = nn.ModuleList(layers)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(u; 0, I) + sum_k log|det du_k/du_{k-1}|.  (N, D) -> (N,)"""
        ladj = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, l = layer.direct(x)
            ladj = ladj + l
        return ladj - 0.5 * x.pow(2).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in): MADE's autoregressive wiring."""

    def __init__(self, d_in: int, d_out: int, mask: torch.Tensor):
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


def made_masks(dim: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MADE's masks (Germain et al. 2015) with the official degrees: inputs 0..D-1, hidden units k mod (D-1), the two
    output halves i - 1, and a unit connected to one of degree <= its own; so output i (its shift and log scale)
    depends on x_<i only."""
    x_deg = torch.arange(dim)
    h_deg = torch.arange(hidden) % (dim - 1)
    out_deg = torch.arange(2 * dim) % dim - 1
    return ((h_deg[:, None] >= x_deg[None, :]).float(), (h_deg[:, None] >= h_deg[None, :]).float(),
            (out_deg[:, None] >= h_deg[None, :]).float())


class MADE(nn.Module):
    """One masked autoregressive layer (the official `made` network, Papamakarios et al. 2017's building block):
    u_i = (x_i - m_i(x_<i)) exp(-a_i(x_<i)), log|det du/dx| = -sum a. The inverse fills x one coordinate at a time;
    as the official inverse, it caps a at 5 there."""

    def __init__(self, dim: int, hidden: int, activation: type[nn.Module] = nn.LeakyReLU):
        super().__init__()
        if dim < 2:
            raise ValueError("MADE needs at least 2 dimensions")
        m_in, m_hidden, m_out = made_masks(dim, hidden)
        self.net = nn.Sequential(MaskedLinear(dim, hidden, m_in), activation(), MaskedLinear(hidden, hidden, m_hidden),
                                 activation(), MaskedLinear(hidden, 2 * dim, m_out))

    def direct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, a = self.net(x).chunk(2, dim=-1)  # (N, D) each
        return (x - m) * torch.exp(-a), -a.sum(-1)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        columns: list[torch.Tensor] = []
        for i in range(u.shape[1]):  # x_i needs x_<i: D passes (no in-place writes, so G stays differentiable)
            x = torch.cat(columns + [torch.zeros_like(u[:, i:])], dim=1)
            m, a = self.net(x).chunk(2, dim=-1)
            columns.append((u[:, i] * torch.exp(a[:, i].clamp(max=5.0)) + m[:, i]).unsqueeze(1))
        return torch.cat(columns, dim=1)


class MAF(nn.Module):
    """Masked autoregressive flow (Papamakarios et al. 2017): `blocks` MADE layers (ReLU, as the official MAF's),
    the coordinate order reversed between them. The official MAF also puts a BatchNormFlow after each MADE; it is
    left out here (docs/gebm.md lists the departure). `reverse=False` with one leaky-ReLU block is the official
    `made` base/energy (single_made)."""

    def __init__(self, dim: int, blocks: int = 5, hidden: int = 100, activation: type[nn.Module] = nn.ReLU,
                 reverse: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(MADE(dim, hidden, activation) for _ in range(blocks))
        self.reverse = reverse

    def _order(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if self.reverse else x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        ladj = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, l = layer.direct(x)
            ladj = ladj + l
            x = self._order(x)
        return ladj - 0.5 * x.pow(2).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(self._order(z))
        return z


def single_made(dim: int, blocks: int = 1, hidden: int = 100) -> MAF:
    """The official `made` base/energy: one MADE layer with leaky-ReLU units, no reversal (`blocks` is ignored)."""
    return MAF(dim, 1, hidden, nn.LeakyReLU, reverse=False)


FLOWS = {"nvp": RealNVP, "maf": MAF, "made": single_made}


def build_flow(kind: str, dim: int, transforms: int, hidden: int) -> nn.Module:
    """nvp: RealNVP with `transforms` couplings; maf: `transforms` MADE blocks; made: one MADE layer."""
    return FLOWS[kind](dim, transforms, hidden)


class FlowBase(nn.Module):
    def __init__(self, dim: int, transforms: int = 5, hidden: int = 100, kind: str = "nvp"):
        super().__init__()
        self.dim = dim
        self.flow = build_flow(kind, dim, transforms, hidden)

    @property
    def latent_dim(self) -> int:
        return self.dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): the inverse pass, differentiable in the flow's parameters.  (N, D) -> (N, D)"""
        return self.flow.inverse(z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)  # (N,)

    def sample(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        return torch.randn((n, self.dim), generator=generator).to(device)


class FlowEnergy(nn.Module):
    def __init__(self, dim: int, transforms: int = 5, hidden: int = 100, kind: str = "nvp"):
        super().__init__()
        self.flow = build_flow(kind, dim, transforms, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.flow.log_prob(x)  # (N,)


class CombinedFlowEnergy(nn.Module):
    """E(x) = -log p_phi(x) + log b(x); only p_phi's weights are parameters (the base stays the base's)."""

    def __init__(self, dim: int, base: FlowBase, transforms: int = 5, hidden: int = 100, kind: str = "nvp"):
        super().__init__()
        self.flow = build_flow(kind, dim, transforms, hidden)
        self._base = [base]  # a plain list: the base's weights are not this module's parameters/state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.flow.log_prob(x) + self._base[0].log_prob(x)  # (N,)
