"""A GEBM on a 2-D ring of Gaussians, minutes on CPU: where sampling the energy should help a generator.

The data are 8 Gaussians (σ = 0.05) on a circle of radius 2. The base B = G#N(0, I_d) is a small MLP from a
d-dimensional latent: a continuous image of a connected latent space is connected, so B must put mass
between the modes, which the energy can then remove (Arbel, Zhou & Gretton, ICLR 2021, Section 3 and the
2-D illustrations of Appendix). Training is Algorithm 1 (KALE, core/gebm/kale.py) with the official
schedule shape; sampling is ULA/KLA in the latent (core/gebm/langevin.py) at the shipped SamplerConfig
unless an arm overrides it. Metrics against held-out draws of the true mixture (core/gebm/metrics2d.py):
MMD² (Gaussian kernel), sliced W1, high-quality fraction, modes covered, TV of the mode histogram.

    python -m lmlab.core.gebm.toy --seeds 0,1,2 --figure docs/figures/gebm-toy.png   # writes results/gebm-toy.json
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from lmlab.core.config import option
from lmlab.core.gebm.config import SamplerConfig
from lmlab.core.gebm.kale import base_loss, energy_loss, gradient_penalty, init_log_partition, kale_estimate
from lmlab.core.gebm.metrics2d import mmd2, mode_stats, sliced_wasserstein
from lmlab.core.gebm.sample import sample_latents, sampler_config


@dataclass
class ToyConfig:
    modes: int = option(8, "Gaussians on the ring")
    radius: float = option(2.0, "ring radius")
    std: float = option(0.05, "standard deviation of each Gaussian")
    train_size: int = option(20000, "training points (a fixed sample, as a dataset)")
    latent_dim: int = option(4, "latent dimension of the generator")
    hidden: int = option(64, "hidden units of the generator and energy MLPs (2 hidden layers each)")
    base_steps: int = option(600, "base updates of Algorithm 1")
    energy_steps: int = option(5, "energy updates per base update")
    energy_steps_init: int = option(100, "energy updates before base updates 0, 1 and every init_every-th")
    init_every: int = option(500, "base updates between long energy phases")
    batch_size: int = option(256, "data batch = latent batch")
    lr: float = option(1e-3, "Adam learning rate of base, energy and A")
    penalty: float = option(0.1, "gradient-penalty weight (official CIFAR: 1, UCI: 0.1; at 1 this toy's energy stays "
                            "nearly flat: see the record's penalty-1 ablation)")
    eval_samples: int = option(1500, "samples per arm and held-out data points for the metrics")
    mmd_sigma: float = option(0.1, "Gaussian-kernel bandwidth of the MMD (about 2σ of a mode)")


# ------------------------------------------------------------------------------------------ data and nets


def ring_centres(cfg: ToyConfig) -> torch.Tensor:
    angle = torch.arange(cfg.modes, dtype=torch.float32) * 2 * math.pi / cfg.modes
    return cfg.radius * torch.stack([angle.cos(), angle.sin()], 1)  # (K, 2)


def ring_sample(cfg: ToyConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(cfg.modes, (n,), generator=gen)
    return ring_centres(cfg)[idx] + cfg.std * torch.randn(n, 2, generator=gen)  # (n, 2)


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, d_out))


class MLPBase(nn.Module):
    """G: R^d -> R^2 with a standard-normal latent; `sample` draws z (the interface core/gebm/sample.py uses)."""

    def __init__(self, latent_dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(latent_dim, hidden, 2)

    def sample(self, n: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=gen).to(device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPEnergy(nn.Module):
    """E: R^2 -> R (smooth SiLU MLP, so Langevin gradients are continuous)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = mlp(2, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


# ------------------------------------------------------------------------------------------ Algorithm 1


def train_kale(cfg: ToyConfig, seed: int) -> tuple[MLPBase, MLPEnergy, dict]:
    """KALE training (Algorithm 1) on a fixed training sample; returns base, energy and a short log."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = ring_sample(cfg, cfg.train_size, gen)
    base, energy = MLPBase(cfg.latent_dim, cfg.hidden), MLPEnergy(cfg.hidden)
    log_partition = nn.Parameter(torch.zeros(()))
    opt_e = torch.optim.Adam(list(energy.parameters()) + [log_partition], lr=cfg.lr, betas=(0.5, 0.9))
    opt_b = torch.optim.Adam(base.parameters(), lr=cfg.lr, betas=(0.5, 0.9))

    def real() -> torch.Tensor:
        return data[torch.randint(len(data), (cfg.batch_size,), generator=gen)]

    def fake(grad: bool = False) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return base(base.sample(cfg.batch_size, gen))

    with torch.no_grad():
        log_partition.fill_(init_log_partition(energy, fake, 10))
    kale = []
    for step in range(cfg.base_steps):
        n_e = cfg.energy_steps_init if step < 2 or step % cfg.init_every == 0 else cfg.energy_steps
        for _ in range(n_e):
            x, y = real(), fake()
            e_real, e_fake = energy(x), energy(y)
            loss = energy_loss(e_real, e_fake, log_partition) + cfg.penalty * gradient_penalty(energy, x, y, gen)
            opt_e.zero_grad(set_to_none=True)
            loss.backward()
            opt_e.step()
        kale.append(float(kale_estimate(e_real, e_fake, log_partition).detach()))
        for p in energy.parameters():
            p.requires_grad_(False)
        loss = base_loss(energy(fake(grad=True)))
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()
        for p in energy.parameters():
            p.requires_grad_(True)
    tail = kale[-max(1, len(kale) // 10):]
    return base.eval(), energy.eval(), {"kale_last10pct_mean": sum(tail) / len(tail),
                                         "log_partition_A": float(log_partition.detach())}


# ------------------------------------------------------------------------------------------ one seed, every arm


def default_arms() -> dict[str, SamplerConfig]:
    """The generator alone; ULA and KLA at the shipped sampler defaults (the official CIFAR-10 sampling run,
    β = 100: the tempered posterior ∝ N(z) exp(-100 E(G z))); KLA at β = 1, the GEBM Q itself."""
    d = sampler_config()
    return {"generator": dataclasses.replace(d, sampler="none"), "ula": dataclasses.replace(d, sampler="ula"),
            "kla": dataclasses.replace(d, sampler="kla"), "kla_beta1": dataclasses.replace(d, sampler="kla", beta=1.0)}


def evaluate_arms(cfg: ToyConfig, base: nn.Module, energy: nn.Module, arms: dict[str, SamplerConfig],
                  seed: int) -> tuple[dict, dict]:
    """Metrics of every arm on the same z0 (paired) against the same held-out points; also returns samples."""
    held_out = ring_sample(cfg, cfg.eval_samples, torch.Generator().manual_seed(10_000 + seed))
    z0 = base.sample(cfg.eval_samples, torch.Generator().manual_seed(20_000 + seed))
    centres = ring_centres(cfg)
    metrics, samples = {}, {"data": held_out}
    for name, scfg in arms.items():
        t0 = time.monotonic()
        z = sample_latents(base, energy, z0, scfg, generator=torch.Generator().manual_seed(30_000 + seed))
        with torch.no_grad():
            x = base(z)
        samples[name] = x
        metrics[name] = {"mmd2": mmd2(x, held_out, cfg.mmd_sigma), "sw1": sliced_wasserstein(x, held_out),
                         **mode_stats(x, centres, cfg.std), "latent_move": float((z - z0).norm(dim=1).mean()),
                         "sample_s": time.monotonic() - t0}
    return metrics, samples


# ------------------------------------------------------------------------------------------ sampler check (#19)


def quadratic_check(cfg: SamplerConfig, seed: int = 0, chains: int = 2000, dim: int = 100) -> dict:
    """Issue #19's toy: G = identity on R^100, E(x) = ½‖x − 1‖²; the latent posterior N(0, I)·exp(−βE) has
    mean β/(1+β) and std 1/√(1+β) per coordinate. Returns the chain's pooled mean and std after cfg.steps."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(chains, dim, generator=g)
    z = sample_latents(nn.Identity(), lambda x: 0.5 * (x - 1).pow(2).sum(1), z0, cfg, generator=g)
    return {"mean": float(z.mean()), "std": float(z.std()), "target_mean": cfg.beta / (1 + cfg.beta),
            "target_std": 1 / math.sqrt(1 + cfg.beta)}


def sampler_checks() -> dict:
    d = sampler_config()
    old = dataclasses.replace(d, step_size=(1e-4 / 2) ** 2, decay=0.01, friction=1.0)  # h = 1e-4 used directly, h x0.1
    return {"kla_default": quadratic_check(d), "kla_pre19": quadratic_check(old),
            "ula_default": quadratic_check(dataclasses.replace(d, sampler="ula"))}


# ------------------------------------------------------------------------------------------ experiment


def summarise(per_seed: list[dict], reference: str = "generator") -> dict:
    """mean ± sd over seeds of every metric of every arm, and the paired difference to `reference` (mean, s.e.)."""
    out = {}
    for arm in per_seed[0]:
        out[arm] = {}
        for key, v0 in per_seed[0][arm].items():
            if not isinstance(v0, (int, float)):
                continue
            vals = torch.tensor([float(s[arm][key]) for s in per_seed], dtype=torch.float64)
            diff = vals - torch.tensor([float(s[reference][key]) for s in per_seed], dtype=torch.float64)
            n = len(vals)
            out[arm][key] = {"mean": float(vals.mean()), "sd": float(vals.std()) if n > 1 else 0.0,
                             "diff_vs_" + reference: float(diff.mean()),
                             "diff_se": float(diff.std() / math.sqrt(n)) if n > 1 else 0.0}
    return out


def draw_figure(samples: dict, energy: nn.Module, cfg: ToyConfig, metrics: dict, path: str) -> None:
    """One row of scatter plots (held-out data with the energy's contours, then every arm), Agg canvas."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    names = list(samples)
    labels = {"generator": "generator alone G(z0)", "ula": "ULA, shipped defaults (β 100)",
              "kla": "KLA, shipped defaults (β 100)", "kla_beta1": "KLA at β 1 (the GEBM Q)"}
    fig = Figure(figsize=(3.2 * len(names), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    lim = cfg.radius * 1.6
    grid = torch.linspace(-lim, lim, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        e = energy(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).reshape(200, 200)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        if name == "data":
            ax.contourf(xx.numpy(), yy.numpy(), (e - e.min()).numpy(), levels=20, cmap="viridis_r", alpha=0.6)
            title = "held-out data, energy E"
        else:
            m = metrics[name]
            title = f"{labels.get(name, name)}\nMMD² {m['mmd2']:.3f}  SW1 {m['sw1']:.3f}  HQ {m['hq_frac']:.2f}"
        x = samples[name].numpy()
        ax.scatter(x[:, 0], x[:, 1], s=2, c="k" if name == "data" else "C3", alpha=0.5, linewidths=0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> dict:
    """`python -m lmlab.core.gebm.toy`: train one GEBM per seed on the 2-D ring, sample every arm, write a record."""
    import argparse
    import json
    import shlex
    import sys

    from lmlab.core.machine import machine_info
    from lmlab.core.records import make_record, write_record

    ap = argparse.ArgumentParser(prog="python -m lmlab.core.gebm.toy", description=main.__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma list; each trains its own GEBM (arms paired within a seed)")
    ap.add_argument("--base-steps", type=int, default=ToyConfig.base_steps)
    ap.add_argument("--ablation-seeds", default="0", help="seeds also trained with the paper's penalty 1 ('' = none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results-dir", default=None, help="record directory (default results/ or $LMLAB_RESULTS)")
    ap.add_argument("--figure", default="docs/figures/gebm-toy.png", help="PNG of seed 0's samples ('' = none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cfg = ToyConfig(base_steps=args.base_steps)
    machine_start, t0 = machine_info(), time.monotonic()
    checks = sampler_checks()
    print(json.dumps({"sampler_checks": checks}), file=sys.stderr, flush=True)
    per_seed, train_logs = [], {}
    for seed in seeds:
        base, energy, log = train_kale(cfg, seed)
        metrics, samples = evaluate_arms(cfg, base, energy, default_arms(), seed)
        per_seed.append(metrics)
        train_logs[str(seed)] = log
        print(json.dumps({"seed": seed, "train": log, "metrics": metrics}), file=sys.stderr, flush=True)
        if args.figure and seed == seeds[0]:
            draw_figure(samples, energy, cfg, metrics, args.figure)
    ablation = {}
    for seed in [int(s) for s in args.ablation_seeds.split(",") if s.strip()]:
        acfg = dataclasses.replace(cfg, penalty=1.0)
        base, energy, log = train_kale(acfg, seed)
        ablation[str(seed)] = {"train": log, "metrics": evaluate_arms(acfg, base, energy, default_arms(), seed)[0]}
    record = make_record(
        "gebm-toy", "python -m lmlab.core.gebm.toy " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        {"summary": summarise(per_seed), "per_seed": dict(zip(map(str, seeds), per_seed)), "train": train_logs,
         "penalty1_ablation": ablation, "sampler_checks": checks},
        wall_s=time.monotonic() - t0, machine={**machine_start, "load_avg_end": machine_info()["load_avg_1_5_15"]},
        seeds=seeds, config=dataclasses.asdict(cfg), arms={k: dataclasses.asdict(v) for k, v in default_arms().items()},
        notes="2-D ring of 8 Gaussians; GEBM trained by KALE (Algorithm 1); metrics vs held-out draws of the mixture; "
              "arms share z0 within a seed; figure = first seed")
    path = write_record(record, args.results_dir)
    print(json.dumps({"record": str(path), "wall_s": record["wall_s"]}))
    return record


if __name__ == "__main__":
    main()
