"""IMM training-step cost as a ratio to a plain cross-entropy step (Muneeb & Ohannessian 2024, Algorithm 1/2).

Times forward + backward + SGD update on real training windows of a data dir, for: plain CE, the
sampled IMM step (k contexts for each of batch x j restricted contexts), the official code's smoothed
single-sample step, and the amortised cost with sampled IMM on one batch in `every`.

    python bench/imm_overhead.py --preset demo,cpu,demo-imm --set imm.j=5 [--algorithm serialized]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lmlab.core.config import parse_overrides, resolve
from lmlab.core.data import DataDir
from lmlab.core.imm.objective import build_imm_objective
from lmlab.core.models.builders import build_language_model
from lmlab.core.train.config import TrainConfig
from lmlab.core.train.objectives import CrossEntropy


def position(imm, calls_mod: int) -> None:
    """Make the objective's next call IMM-on batch calls_mod + 1 and window calls_mod + 1 of epoch 0: a sampled batch
    under either imm.sample_phase exactly when (calls_mod + 1) mod imm.every = 0."""
    imm.calls = calls_mod
    imm.at_window(0, calls_mod + 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo,cpu,demo-imm")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--steps", type=int, default=15, help="timed rounds (one step of each kind per round, after one warm-up)")
    args = ap.parse_args()
    cfg = resolve(TrainConfig, "train-lm", [args.preset], parse_overrides(args.set))
    cfg.imm.start_below_ppl = 0.0
    if cfg.hardware.threads:  # e.g. 1, as the CPU tier's arms run side by side
        torch.set_num_threads(cfg.hardware.threads)
    device = torch.device("cuda" if cfg.hardware.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    data = DataDir(cfg.data.dir)
    train = np.asarray(data.split("train"))
    model = build_language_model(cfg.model, data.vocab_size).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    B, T = cfg.data.batch_size, cfg.data.bptt
    rng = np.random.default_rng(0)

    def batch():
        starts = rng.integers(0, train.size - T - 1, size=B)
        w = torch.from_numpy(np.stack([train[s:s + T + 1] for s in starts]).astype(np.int64)).to(device)
        return w[:, :-1], w[:, 1:]

    imm = build_imm_objective(cfg, train, data.vocab_size, Path(cfg.data.dir), device)
    with torch.no_grad():  # a carried state, as mid-epoch (imm.sampled_start = carried runs from it)
        _, state = model(batch()[0])
        state = model.detach_state(state)
    j = min(cfg.imm.j or T, T)

    def step(objective, calls_mod) -> float:
        x, y = batch()
        if calls_mod is not None:
            position(imm, calls_mod)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _, _ = objective(model, x, y, state, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        if hasattr(objective, "after_clip"):  # imm.clip = main: the IMM gradient joins after clipping
            objective.after_clip(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    kinds = {"plain": (CrossEntropy(), None), "sampled": (imm, cfg.imm.every - 1)}
    if cfg.imm.every > 1:
        kinds["smoothed"] = (imm, 0)
    for objective, calls_mod in kinds.values():  # warm-up
        step(objective, calls_mod)
    times = {kind: [] for kind in kinds}
    for _ in range(args.steps):  # round by round, so that load drifting during the run hits every kind alike
        for kind, (objective, calls_mod) in kinds.items():
            times[kind].append(step(objective, calls_mod))
    median = {kind: float(np.median(t)) for kind, t in times.items()}
    plain, sampled = median["plain"], median["sampled"]
    smoothed = median.get("smoothed", plain)
    every = cfg.imm.every
    amortised = (sampled + (every - 1) * smoothed) / every
    print(json.dumps({
        "device": str(device), "model": f"{cfg.model.kind} d={cfg.model.d_model} L={cfg.model.n_layers}",
        "batch": B, "bptt": T, "k": cfg.imm.k, "j": j, "every": every, "algorithm": cfg.imm.algorithm, "clip": cfg.imm.clip,
        "sampled_start": cfg.imm.sampled_start, "smoothed_forward": cfg.imm.smoothed_forward,
        "threads": torch.get_num_threads(), "windows_per_sampled_step": B * j * cfg.imm.k, "plain_tokens_per_s": round(B * T / plain),
        "plain_step_s": round(plain, 4), "sampled_step_s": round(sampled, 4), "smoothed_step_s": round(smoothed, 4),
        "sampled_over_plain": round(sampled / plain, 2), "smoothed_over_plain": round(smoothed / plain, 2),
        "amortised_over_plain": round(amortised / plain, 2)}))


if __name__ == "__main__":
    main()
