"""GEBM latent samplers with the official parameterisation (GeneralizedEBM samplers.py / trainer.sample):
one step parameter lambda (ULA step lambda; KLA time step h = 2 sqrt(lambda)), lambda x0.1 every 200 steps,
KLA friction 100, unit mass, velocity from 0. SamplerConfig holds these defaults for every caller."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmlab.core.config import resolve
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.config import SamplerConfig
from lmlab.core.gebm.langevin import grad_potential, kla, latent_potential, ula
from lmlab.core.gebm.sample import sample, sample_latents, sampler_config


pytestmark = pytest.mark.usefixtures("one_thread")


# The toy of issue #19: z in R^100, G = identity, E(x) = ½‖x − 1‖², β = 100. The latent posterior
# N(z; 0, I) exp(−β E(z)) is Gaussian with precision 1 + β and mean β/(1 + β) in every coordinate.
BETA, DIM, CHAINS = 100.0, 100, 2000
TARGET_MEAN, TARGET_STD = BETA / (1 + BETA), 1 / math.sqrt(1 + BETA)  # 0.990, 0.0995


class _Identity(torch.nn.Module):
    def forward(self, z):
        return z


def _toy_energy(x):
    return 0.5 * (x - 1).pow(2).sum(1)


def _toy_chain(cfg: SamplerConfig, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(CHAINS, DIM, generator=g)
    return sample_latents(_Identity(), _toy_energy, z0, cfg, generator=g)


def test_default_kla_reaches_the_toy_posterior():
    cfg = SamplerConfig()
    assert (cfg.sampler, cfg.steps, cfg.step_size, cfg.beta, cfg.friction, cfg.decay_every, cfg.decay) == \
        ("kla", 1000, 1e-4, 100.0, 100.0, 200, 0.1)  # the official CIFAR-10 sampling run
    z = _toy_chain(cfg)
    assert abs(z.mean().item() - TARGET_MEAN) < 0.02   # measured 0.9894
    assert abs(z.std().item() - TARGET_STD) < 0.01     # measured 0.0995


def test_old_parameterisation_does_not_move():
    """lmlab before #19: h = 1e-4 used directly as the time step, decayed x0.1, friction 1. In the official
    parameterisation that is lambda = (h/2)^2 with lambda decayed x0.01; the chain stays near its start N(0, I)."""
    cfg = SamplerConfig(step_size=(1e-4 / 2) ** 2, decay=0.01, friction=1.0)
    z = _toy_chain(cfg)
    assert abs(z.mean().item() - TARGET_MEAN) > 0.5    # measured mean 0.02
    assert abs(z.std().item() - TARGET_STD) > 0.5      # measured std 0.98


def _official_kla_reference(potential, z, steps, lam, kappa, decay_every, generator):
    """The official LMC sampler's step, written out: h = 2 sqrt(lambda); x½ = x + h/2 v; g = ∇U(x½);
    v½ = v − h/2 g; ṽ = C v½ + D ξ (C = e^(−κh), D = sqrt(1 − e^(−2κh))); v = ṽ − h/2 g; x = x½ + h/2 v.
    Velocity starts at 0; lambda is multiplied by 0.1 after every `decay_every` steps."""
    v = torch.zeros_like(z)
    for t in range(steps):
        if t > 0 and t % decay_every == 0:
            lam *= 0.1
        h = 2.0 * np.sqrt(lam)
        c, d = np.exp(-kappa * h), np.sqrt(1 - np.exp(-2 * kappa * h))
        x_half = z + h / 2 * v
        g = grad_potential(potential, x_half)
        v_half = v - h / 2 * g
        v_tilde = c * v_half + d * torch.randn(z.shape, generator=generator)
        v = v_tilde - h / 2 * g
        z = x_half + h / 2 * v
    return z


def test_kla_follows_the_official_update_order():
    pot = latent_potential(lambda x: torch.sin(3 * x).sum(1) + 0.1 * x.pow(4).sum(1), beta=2.0)
    z0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(5))
    for lam, kappa in ((1e-4, 100.0), (1e-2, 1.0)):
        ours = kla(pot, z0, 9, lam, friction=kappa, decay_every=4, decay=0.1, generator=torch.Generator().manual_seed(7))
        ref = _official_kla_reference(pot, z0.clone(), 9, lam, kappa, 4, torch.Generator().manual_seed(7))
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(ours, z0)


def test_ula_numbers_unchanged():
    """ULA (official LangevinSampler.euler: z − λ/2 ∇U + √λ ξ, λ x0.1 every 200) gives the same numbers as
    before the KLA reparameterisation (values recorded from the previous implementation)."""
    pot = latent_potential(_toy_energy, BETA)
    g = torch.Generator().manual_seed(123)
    z0 = torch.randn(7, 5, generator=g)
    z = ula(pot, z0, 450, 1e-3, decay_every=200, decay=0.1, generator=g)
    torch.testing.assert_close(z[0], torch.tensor([1.0009065866470337, 0.9068714380264282, 1.022946834564209,
                                                   0.9567224979400635, 0.9590932726860046]), rtol=0, atol=1e-6)
    assert z.double().sum().item() == pytest.approx(34.248871982097626, abs=1e-5)


# ------------------------------------------------------------------------ one config for every caller


def test_paper_preset_sample_table_is_the_default():
    assert sampler_config(["gebm-cifar10"]) == SamplerConfig()
    cpu = sampler_config(["gebm-cifar10-cpu"])
    assert dataclasses.replace(cpu, steps=1000, decay_every=200) == SamplerConfig()  # only the length differs
    assert sampler_config(["gebm-uci-redwine"]).sampler == "none"
    assert sampler_config(["gebm-cifar10-cpu"], steps=7, friction=3.0).steps == 7  # flags override the preset


def test_sample_table_is_strict(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[sample]\nstepsize = 1e-3\n')
    with pytest.raises(LmlabError, match="stepsize"):
        sampler_config([str(bad)])
    with pytest.raises(LmlabError, match="step-size"):
        sampler_config(None, step_size=-1.0)
    with pytest.raises(LmlabError, match="sampler"):
        sampler_config(None, sampler="hmc")


def test_cli_sample_reads_preset_and_flags_override(tmp_path):
    from test_gebm_train import tiny_image_cfg

    from lmlab.cli.main import app
    from lmlab.core.checkpoint import load_checkpoint
    from lmlab.core.gebm.train import train
    from lmlab.core.reporting import NullReporter
    train(tiny_image_cfg(tmp_path / "run"), NullReporter())
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    preset = tmp_path / "p.toml"
    preset.write_text('[sample]\nsampler = "ula"\nsteps = 3\nstep_size = 1e-3\nnum_samples = 5\n')
    runner = CliRunner()
    out = tmp_path / "x.npy"
    res = runner.invoke(app, ["sample", "-c", str(best), "--preset", str(preset), "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    state = load_checkpoint(best, "gebm")
    want = sample(state, sampler_config([str(preset)]), device="cpu")
    got = np.load(out)
    assert got.shape == (5, 3, 32, 32) and np.allclose(got, want.numpy())  # the preset's ULA, its 5 samples
    assert "sampling ula 5/5" in res.stderr  # the progress line of a batch job (not a terminal)
    res = runner.invoke(app, ["sample", "-c", str(best), "--preset", str(preset), "--device", "cpu", "-n", "2",
                              "--sampler", "kla", "--force", "-o", str(out)])
    assert res.exit_code == 0, res.output
    want = sample(state, sampler_config([str(preset)], sampler="kla"), num_samples=2, device="cpu")
    assert np.allclose(np.load(out), want.numpy())
    calls = []
    again = sample(state, sampler_config([str(preset)]), num_samples=5, batch_size=2, device="cpu",
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]  # after each batch of chains (the evaluator logs these)
    assert again.shape == (5, 3, 32, 32)
