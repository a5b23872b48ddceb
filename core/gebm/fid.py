"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) with a plain-torch Inception-v3 or a small extractor.

`InceptionV3` is the FID variant of Inception-v3 (the TF 2015-12-05 graph as ported by pytorch-fid:
average pools that exclude padding, max pool in the last block), returning the 2048-d pool3
features. Its weights are never downloaded: pass a state-dict file (e.g. pytorch-fid's
`pt_inception-2015-12-05-*.pth`), loaded with `weights_only=True`. Without weights, `SmallExtractor`
(a seeded random conv net) gives features for development runs; such FIDs are only comparable
with each other, not with published numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.core.errors import LmlabError


class BasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class BlockA(nn.Module):
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = BasicConv(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv(cin, pool, kernel_size=1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class BlockB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, 2)], 1)


class BlockC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg(x))], 1)


class BlockD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class BlockE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv(cin, 192, kernel_size=1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pool = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pool)], 1)


class InceptionV3(nn.Module):
    """FID Inception-v3: images (N, 3, H, W) in [-1, 1] -> pool3 features (N, 2048)."""

    dim = 2048

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # present in the FID weights; unused for features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # inputs already in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)


def load_inception(path: str | Path) -> InceptionV3:
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"--inception {path} does not exist (a state dict of the FID Inception-v3, e.g. pytorch-fid's)")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling a foreign file fails in many types (a text file: IndexError)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LmlabError(f"--inception {path}: not a plain state dict ({first[:120]})") from exc
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    net = InceptionV3()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise LmlabError(f"--inception {path}: missing weights (first: {missing[0]}); expected FID Inception-v3 keys")
    return net.eval()


class SmallExtractor(nn.Module):
    """A seeded random conv net: 32x32 images -> `dim` features (tests / development FIDs only)."""

    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(64, dim, 3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        torch.random.set_rng_state(gen_state)
        self.dim = dim

    def forward(self, x):
        return self.net(x)


@torch.no_grad()
def features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 100, device="cpu") -> np.ndarray:
    extractor = extractor.to(device).eval()
    out = [extractor(images[i:i + batch_size].to(device).float()).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """‖μ1-μ2‖² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½, with symmetric eigen-decompositions (no scipy)."""
    return frechet_from_stats(f1.mean(0), np.cov(f1, rowvar=False), f2)


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, f2: np.ndarray) -> float:
    """frechet_distance with the first set given by its mean and covariance (saved real-image statistics)."""
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(mid, 0, None)).sum())


KID_FEATURES_KEPT = 10_000  # real features a statistics file keeps for KID (its subsets draw from these)


def kid_pool(feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """The real features KID draws its subsets from: a seeded KID_FEATURES_KEPT of them, stored as float32, so an
    evaluation from saved statistics and one from the images give the same KID."""
    keep = np.random.RandomState(seed).permutation(len(feats))[:KID_FEATURES_KEPT]
    return feats[keep].astype(np.float32).astype(np.float64)


def save_real_stats(path: str | Path, feats: np.ndarray, meta: dict) -> None:
    """The real images' feature mean and covariance (FID) and kid_pool(feats) (KID), with `meta` (extractor, source,
    split, requested count) that a later evaluation must match; written atomically."""
    import json
    import os
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), kid_features=kid_pool(feats).astype(np.float32),
             count=np.array(len(feats)), meta=np.array(json.dumps(meta, sort_keys=True)))
    os.replace(tmp, path)


def load_real_stats(path: str | Path, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(mu, sigma, KID features, image count) saved by save_real_stats; refused unless its meta equals `meta`."""
    import json
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = json.loads(str(z["meta"]))
            stats = z["mu"], z["sigma"], z["kid_features"].astype(np.float64), int(z["count"])
    except (OSError, KeyError, ValueError) as exc:
        raise LmlabError(f"--real-stats {path}: not a statistics file written by this command ({exc}); delete it "
                         "to recompute it") from None
    differ = sorted(k for k in set(saved) | set(meta) if saved.get(k) != meta.get(k))
    if differ:
        raise LmlabError(f"--real-stats {path} was computed with other " + ", ".join(
            f"{k} ({saved.get(k)!r}, now {meta.get(k)!r})" for k in differ) + "; delete it or give another path")
    return stats


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD² with the cubic kernel (x·y/d + 1)³, mean and std over random subsets."""
    rng = np.random.RandomState(seed)
    d = f1.shape[1]
    m = min(subset_size, len(f1), len(f2))
    vals = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))
