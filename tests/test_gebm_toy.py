"""2-D GEBM toy (make gebm-toy): the exact sample metrics on cases known by hand, and the pipeline in miniature."""

import dataclasses
import math

import pytest
import torch

from lmlab.core.gebm.metrics2d import mmd2, mode_stats, sliced_wasserstein
from lmlab.core.gebm.toy import (ToyConfig, default_arms, draw_figure, evaluate_arms, ring_centres, ring_sample,
                                 summarise, train_kale)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mmd2_known_values():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 3.0], [1.0, 3.0]])
    s = 1.0
    # unbiased: k(x1,x2) + k(y1,y2) - 2 mean k(x,y); k(a,b) = exp(-|a-b|^2/2)
    want = math.exp(-0.5) + math.exp(-0.5) - 2 * (2 * math.exp(-4.5) + 2 * math.exp(-5.0)) / 4
    assert mmd2(x, y, s) == pytest.approx(want, rel=1e-12)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    assert abs(mmd2(a, b, 0.5)) < 2e-3
    # N(0, I) vs N(mu, I) in 2-D, bandwidth s: MMD^2 = 2 s^2/(s^2+2) (1 - exp(-|mu|^2 / (2 (s^2+2))))
    s2, mu2 = 0.25, 2.0
    assert mmd2(a, b + 1.0, 0.5) == pytest.approx(2 * s2 / (s2 + 2) * (1 - math.exp(-mu2 / (2 * (s2 + 2)))), abs=0.01)


def test_sliced_wasserstein_of_a_shift():
    # shifting every point by c along x: each direction θ moves by c|cos θ|; evenly spaced angles on [0, π)
    # average |cos θ| to 2/π (to O(1/n_dirs^2))
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    c = 0.3
    assert sliced_wasserstein(x + torch.tensor([c, 0.0]), x, n_dirs=512) == pytest.approx(2 * c / math.pi, rel=1e-3)
    assert sliced_wasserstein(x, x) == 0.0


def test_mode_stats_on_the_centres():
    cfg = ToyConfig()
    centres = ring_centres(cfg)
    on = centres.repeat(10, 1)                                     # every mode, equally
    assert mode_stats(on, centres, cfg.std) == {"hq_frac": 1.0, "modes_covered": 8, "modes": 8, "mode_tv": 0.0}
    half = torch.cat([centres[:4].repeat(10, 1), torch.zeros(40, 2)])  # 4 modes, half the points at the origin
    st = mode_stats(half, centres, cfg.std)
    assert st["hq_frac"] == 0.5 and st["modes_covered"] == 4 and st["mode_tv"] == pytest.approx(0.5)
    x = ring_sample(cfg, 4000, torch.Generator().manual_seed(0))
    assert mode_stats(x, centres, cfg.std)["hq_frac"] > 0.98       # 3 sigma in 2-D holds 98.9%


def test_toy_pipeline_in_miniature(tmp_path):
    cfg = ToyConfig(train_size=256, hidden=8, base_steps=3, energy_steps=1, energy_steps_init=2, batch_size=32,
                    eval_samples=64)
    base, energy, log = train_kale(cfg, 0)
    assert math.isfinite(log["kale_last10pct_mean"])
    arms = {k: dataclasses.replace(v, steps=4) for k, v in default_arms().items()}
    per_seed = []
    for seed in (0, 1):
        metrics, samples = evaluate_arms(cfg, base, energy, arms, seed)
        per_seed.append(metrics)
    assert set(metrics) == {"generator", "ula", "kla", "kla_beta1"} and metrics["generator"]["latent_move"] == 0.0
    assert metrics["kla"]["latent_move"] > 0
    summary = summarise(per_seed)
    assert summary["generator"]["mmd2"]["diff_vs_generator"] == 0.0
    draw_figure(samples, energy, cfg, metrics, str(tmp_path / "toy.png"))
    assert (tmp_path / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
