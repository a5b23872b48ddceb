"""Sample-quality metrics for low-dimensional GEBM experiments, computed exactly on finite samples.

- `mmd2`: unbiased squared MMD with a Gaussian kernel k(x, y) = exp(-‖x − y‖² / (2σ²)) (Gretton et al. 2012,
  U-statistic): 0 in expectation when both samples come from the same law, so it can be slightly negative.
- `sliced_wasserstein`: sliced W_p over `n_dirs` evenly spaced directions of the unit circle (2-D) or seeded
  random directions (d > 2); with equal sample sizes each 1-D W_p is exact (sorted samples matched in order).
- `mode_stats`: for a mixture with known centres and scale, the fraction of samples within `radius`·σ of their
  nearest centre ("high quality"), the number of modes holding at least `min_frac` of the high-quality mass
  divided evenly (covered), and the total variation between the modes' share of samples and the mixture weights.
"""

from __future__ import annotations

import math

import torch


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2 * x @ y.T).clamp_min(0)  # (N, M)


def mmd2(x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    """Unbiased MMD² between samples x (N, d) and y (M, d), Gaussian kernel of bandwidth σ."""
    x, y = x.double(), y.double()
    n, m = len(x), len(y)
    kxx = torch.exp(-_sq_dists(x, x) / (2 * sigma ** 2))
    kyy = torch.exp(-_sq_dists(y, y) / (2 * sigma ** 2))
    kxy = torch.exp(-_sq_dists(x, y) / (2 * sigma ** 2))
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())


def directions(dim: int, n_dirs: int, seed: int = 0) -> torch.Tensor:
    """(n_dirs, dim) unit vectors: evenly spaced angles in [0, π) for dim 2, seeded Gaussian directions otherwise."""
    if dim == 2:
        theta = torch.arange(n_dirs, dtype=torch.float64) * math.pi / n_dirs
        return torch.stack([theta.cos(), theta.sin()], 1)
    d = torch.randn(n_dirs, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return d / d.norm(dim=1, keepdim=True)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_dirs: int = 256, p: int = 1, seed: int = 0) -> float:
    """Sliced W_p: (mean over directions of W_p(θᵀx, θᵀy)^p)^(1/p); x and y must have the same size."""
    if len(x) != len(y):
        raise ValueError(f"sliced_wasserstein needs equal sample sizes, got {len(x)} and {len(y)}")
    dirs = directions(x.shape[1], n_dirs, seed)
    px = (x.double() @ dirs.T).sort(0).values  # (N, n_dirs)
    py = (y.double() @ dirs.T).sort(0).values
    return float((px - py).abs().pow(p).mean() ** (1.0 / p))


def mode_stats(x: torch.Tensor, centres: torch.Tensor, sigma: float, weights: torch.Tensor | None = None,
               radius: float = 3.0, min_frac: float = 0.1) -> dict:
    """High-quality fraction, modes covered, and TV distance of the mode histogram to the mixture weights."""
    k = len(centres)
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights.double()
    d2 = _sq_dists(x.double(), centres.double())
    nearest = d2.argmin(1)
    hq = d2.min(1).values.sqrt() <= radius * sigma
    counts = torch.bincount(nearest[hq], minlength=k).double()
    n_hq = int(hq.sum())
    share = counts / max(n_hq, 1)
    covered = int((share >= min_frac * weights).sum()) if n_hq else 0
    return {"hq_frac": n_hq / len(x), "modes_covered": covered, "modes": k,
            "mode_tv": float(0.5 * (share - weights).abs().sum()) if n_hq else 1.0}
