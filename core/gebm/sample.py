"""Sampling a trained GEBM: latent Langevin (ULA / KLA, Algorithms 2-3) pushed through the base G.

`sampler_config(presets, **flags)` resolves the one set of sampler settings (SamplerConfig defaults, the
presets' `[sample]` tables, flags); `sample(state, cfg, ...)` returns images (N, 3, 32, 32) in [-1, 1] or rows (N, D);
`write_samples(samples, path)` writes a PNG grid (.png), a numpy array (.npy) or CSV (.csv).
The PNG writer uses only numpy + zlib, so Pillow is not needed for output.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmlab.core.checkpoint import atomic_write_bytes, atomic_write_text
from lmlab.core.config import expand_env, from_dict, merge, read_preset
from lmlab.core.distributed import pick_device
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.config import SAMPLERS, SamplerConfig
from lmlab.core.gebm.langevin import kla, latent_potential, ula
from lmlab.core.gebm.models import from_state


def sampler_config(presets: list[str] | None = None, cfg: SamplerConfig | None = None, **overrides) -> SamplerConfig:
    """SamplerConfig defaults (or `cfg`) <- each preset's `[sample]` table <- keyword overrides, validated.

    A `[sample]` key this config does not know is an error (never ignored); presets without a table add nothing.
    """
    cfg = cfg if cfg is not None else SamplerConfig()
    for name in presets or []:
        for part in [p.strip() for p in name.split(",") if p.strip()]:
            table = read_preset(part).get("sample", {})
            cfg = merge(cfg, expand_env(table), f"preset '{part}' [sample]")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(SamplerConfig)})
    if unknown:
        raise LmlabError(f"unknown sampler option '{unknown[0]}'")
    cfg = dataclasses.replace(cfg, **overrides)
    if cfg.sampler not in SAMPLERS:
        raise LmlabError(f"--sampler {cfg.sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if cfg.sampler != "none" and cfg.steps > 0:
        if not (cfg.step_size > 0 and math.isfinite(cfg.step_size)):
            raise LmlabError(f"--step-size must be positive, got {cfg.step_size}")
        if cfg.sampler == "kla" and not (cfg.friction > 0 and cfg.mass > 0):
            raise LmlabError(f"--friction and --mass must be positive for KLA, got {cfg.friction}, {cfg.mass}")
    if cfg.decay_every < 0 or cfg.decay < 0:
        raise LmlabError(f"--decay-every and --decay must be >= 0, got {cfg.decay_every}, {cfg.decay}")
    return from_dict(SamplerConfig, dataclasses.asdict(cfg), "sampler settings")  # types and the other ranges


def sample_latents(base, energy, z0: torch.Tensor, cfg: SamplerConfig,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the latent chain from z0 targeting exp(-½‖z‖² - β E(G(z)))."""
    if cfg.sampler == "none" or cfg.steps <= 0:
        return z0
    potential = latent_potential(lambda z: energy(base(z)), cfg.beta)
    if cfg.sampler == "ula":
        return ula(potential, z0, cfg.steps, cfg.step_size, decay_every=cfg.decay_every, decay=cfg.decay,
                   generator=generator)
    return kla(potential, z0, cfg.steps, cfg.step_size, friction=cfg.friction, mass=cfg.mass,
               decay_every=cfg.decay_every, decay=cfg.decay, generator=generator)


def sample(state: dict, cfg: SamplerConfig | None = None, *, num_samples: int | None = None, seed: int = 0,
           device: str = "auto", batch_size: int = 500, progress: Callable[[int, int], None] | None = None,
           **overrides) -> torch.Tensor:
    """GEBM samples G(z_T), z_T from the latent chain ("none" = the generator alone on the same z_0).

    `cfg` (default SamplerConfig()) with keyword overrides of its fields (sampler=, steps=, ...);
    num_samples defaults to cfg.num_samples. `progress(done, total)` is called after each batch of chains.
    """
    cfg = sampler_config(None, cfg, **overrides)
    num_samples = cfg.num_samples if num_samples is None else num_samples
    if num_samples <= 0:
        raise LmlabError(f"--num-samples must be positive, got {num_samples}")
    dev = pick_device(device)
    model_cfg, base, energy, _ = from_state(state, dev)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z0 = base.sample(n, gen, dev)
        z = sample_latents(base, energy, z0, cfg, generator=gen)
        with torch.no_grad():
            x = base(z)
        if not torch.isfinite(x).all():
            raise LmlabError("sampling diverged (non-finite samples); lower --step-size or --beta")
        out.append(x.cpu())
        if progress is not None:
            progress(start + n, num_samples)
    x = torch.cat(out)
    return x.clamp(-1, 1) if model_cfg.data.kind == "image" else x


# ------------------------------------------------------------------------------------------ writing


def image_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 (rows, cols, 3) grid."""
    x = torch.as_tensor(images).float()
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol_rows = int(math.ceil(n / nrow))
    grid = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    pix = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    if c == 1:
        pix = np.repeat(pix, 3, axis=3)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = pix[i]
    return grid


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode uint8 (H, W, 3) as PNG with zlib (no Pillow)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_samples(samples: torch.Tensor | np.ndarray, out_path: str) -> None:
    """.png: image grid; .npy: the array; .csv: one row per sample (density runs)."""
    path = Path(out_path)
    x = torch.as_tensor(samples).detach().cpu()
    ext = path.suffix.lower()
    if ext == ".png":
        if x.dim() != 4:
            raise LmlabError(f"{path}: PNG grids need image samples (N, C, H, W); use .csv or .npy for tables")
        atomic_write_bytes(path, png_bytes(image_grid(x)))
    elif ext == ".npy":
        import io
        buf = io.BytesIO()
        np.save(buf, x.numpy())
        atomic_write_bytes(path, buf.getvalue())
    elif ext == ".csv":
        if x.dim() != 2:
            raise LmlabError(f"{path}: CSV needs table samples (N, D); use .png or .npy for images")
        atomic_write_text(path, "\n".join(",".join(f"{v:.6g}" for v in row) for row in x.tolist()) + "\n")
    else:
        raise LmlabError(f"--out {path}: unknown extension {ext!r} (use .png, .npy or .csv)")
