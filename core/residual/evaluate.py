"""Perplexity of the residual joint model with lower/upper estimates (Deng et al., ICLR 2020, Sec. 5, Theorem 2).

log P_joint(x_p+1..T | x_1..p) = log P_LM - E(x_1..T) - log Z(x_1..p). log Z is estimated per prefix from N
untruncated LM samples; for each n in `samples` the first n of them give T_n (-> lower perplexity) and the
bias-corrected (2n-1) T_n - 2(n-1) T_{n-1} (-> upper perplexity), so the bracket's tightening with n is the
paper's Figure 2 (left). Perplexity is per continuation token: exp(sum of -log P_joint / tokens).

The per-window paired gain is log P_joint - log P_LM = -E - log Z of each window (nats), its mean and standard error
over windows: the joint model beats the base LM where the mean is above zero by more than twice its SE.

Per position (the paper's Figure 3, gain by position in the continuation): the joint model's marginal of the first
t continuation tokens is P_LM(x_1..t) M_t / Z with M_t = E_{future ~ P_LM(.|x_<=t)}[exp(-E(x_<=t, future))], so
    log P_joint(x_t | x_<t) = log P_LM(x_t | x_<t) + log M_t - log M_{t-1},
M_0 = Z and M_C = exp(-E(x)). Each M_t (t < C) is a T_n estimate from n fresh LM futures; the positions' gains sum
to the window's -E - T_n.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError
from lmlab.core.generate import sample_continuations, sequence_logprob, token_logprobs
from lmlab.core.residual.estimators import log_z_bounds, log_z_tn
from lmlab.core.residual.joint import ResidualModel, load_residual
from lmlab.core.residual.windows import Windows


@torch.no_grad()
def joint_ppl_from_windows(model: ResidualModel, windows: Windows, *, samples: list[int], max_examples: int,
                           batch_size: int, seed: int, device: str | torch.device = "cpu",
                           position_samples: int = 0) -> dict[str, Any]:
    """The bracket per n with each n's per-window paired gain; with `position_samples` n > 0 also the gain by
    position (n LM futures per position and window, from their own random stream: the bracket is the same with or
    without them)."""
    samples = sorted(set(int(n) for n in samples))
    if not samples or samples[0] < 1:
        raise LmlabError("--is-samples: give positive sample counts, e.g. 1,2,4,8")
    n_max = samples[-1]
    count = len(windows) if max_examples <= 0 else min(max_examples, len(windows))
    gen = torch.Generator(device=device).manual_seed(seed)
    position_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    C = windows.continuation_len
    lm_nll = pos_e = 0.0
    lower = {n: 0.0 for n in samples}
    upper = {n: 0.0 for n in samples if n >= 2}
    gain_lower: dict[int, list[np.ndarray]] = {n: [] for n in samples}  # per window: -E - log Z (nats)
    gain_upper: dict[int, list[np.ndarray]] = {n: [] for n in samples if n >= 2}
    by_position: list[tuple[np.ndarray, np.ndarray]] = []  # per batch: (LM log-probs, joint gains), each (B, C)
    for start in range(0, count, batch_size):
        prefixes, conts = windows.get(np.arange(start, min(start + batch_size, count)), device)
        B = prefixes.size(0)
        lm_tokens = token_logprobs(model.lm, prefixes, conts)  # (B, C); summed as sequence_logprob sums it
        lm_nll += -lm_tokens.sum(dim=1).double().sum().item()
        e_pos = model.energies(prefixes, conts.unsqueeze(1)).double()  # (B, 1)
        # untruncated samples: Theorem 2's estimators are for Z under P_LM itself
        neg = sample_continuations(model.lm, prefixes, num_samples=n_max, max_new_tokens=C, top_k=0, generator=gen)
        e_neg = model.energies(prefixes, neg.view(B, n_max, C)).double()  # (B, N)
        _refuse_nonfinite(e_pos, "real continuations", start)
        _refuse_nonfinite(e_neg, "LM samples (log Z)", start)  # logsumexp would silently drop E = +inf
        pos_e += e_pos.sum().item()
        for n in samples:
            lo, up = log_z_bounds(e_neg[:, :n])
            lower[n] += lo.sum().item()
            gain_lower[n].append((-e_pos[:, 0] - lo).cpu().numpy())
            if up is not None:
                upper[n] += up.sum().item()
                gain_upper[n].append((-e_pos[:, 0] - up).cpu().numpy())
        if position_samples > 0:
            gains = _position_gains(model, prefixes, conts, e_pos[:, 0], position_samples, position_gen, start)
            by_position.append((lm_tokens.double().cpu().numpy(), gains))
    tokens = count * C
    base = lm_nll / tokens
    joint_base = (lm_nll + pos_e) / tokens  # -log P_LM + E, before log Z
    curve = []
    for n in samples:
        row = {"n": n, "log_z_lower_mean": lower[n] / count,
               "nll_lower_nats_per_token": joint_base + lower[n] / tokens,
               "lower_ppl": math.exp(joint_base + lower[n] / tokens),
               "log_z_upper_mean": None, "nll_upper_nats_per_token": None, "upper_ppl": None}
        row["paired_gain_lower"] = mean_se(np.concatenate(gain_lower[n]))
        row["paired_gain_upper"] = None
        if n in upper:
            row.update(log_z_upper_mean=upper[n] / count, nll_upper_nats_per_token=joint_base + upper[n] / tokens,
                       upper_ppl=math.exp(joint_base + upper[n] / tokens),
                       paired_gain_upper=mean_se(np.concatenate(gain_upper[n])))
        curve.append(row)
    out = {"examples": count, "tokens": tokens, "prefix_len": windows.prefix_len, "continuation_len": C,
           "base_lm": {"nll_nats_per_token": base, "bits_per_token": base / math.log(2), "ppl": math.exp(base)},
           "energy_real_mean": pos_e / count, "joint": curve}
    if by_position:
        out["per_position"] = _position_rows(by_position, position_samples)
    return out


@torch.no_grad()
def lm_windows_nll(lm, windows: Windows, *, max_examples: int, batch_size: int,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """An autoregressive LM scored as the joint model is: each window's continuation given its prefix (the base LM's
    figure of `joint_ppl_from_windows`), so a baseline LM (BALM, RALM) sits beside the bracket on the same tokens."""
    count = len(windows) if max_examples <= 0 else min(max_examples, len(windows))
    nll = 0.0
    for start in range(0, count, batch_size):
        prefixes, conts = windows.get(np.arange(start, min(start + batch_size, count)), device)
        nll += -sequence_logprob(lm, prefixes, conts).double().sum().item()
    tokens = count * windows.continuation_len
    return {"examples": count, "tokens": tokens, "prefix_len": windows.prefix_len,
            "continuation_len": windows.continuation_len, "nats_per_token": nll / tokens,
            "bits_per_token": nll / tokens / math.log(2), "ppl": math.exp(nll / tokens)}


def mean_se(values: np.ndarray) -> dict[str, float]:
    """Mean and standard error of per-window values (nats per window); a gain's sign is read against 2 SE."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None
    return {"mean_nats_per_window": float(values.mean()), "se": se, "windows": int(values.size)}


def _position_gains(model: ResidualModel, prefixes: torch.Tensor, conts: torch.Tensor, e_real: torch.Tensor, n: int,
                    gen: torch.Generator, first_window: int) -> np.ndarray:
    """log M_t - log M_{t-1} for t = 1..C, (B, C) in float64 (module docstring)."""
    B, C = conts.shape
    log_m = torch.empty(B, C + 1, dtype=torch.float64, device=conts.device)  # log M_0 .. log M_C
    log_m[:, C] = -e_real
    for t in range(C):  # M_t: the first t real tokens, then C - t sampled ones
        context = torch.cat([prefixes, conts[:, :t]], dim=1)
        future = sample_continuations(model.lm, context, num_samples=n, max_new_tokens=C - t, top_k=0, generator=gen)
        rows = torch.cat([conts[:, :t].repeat_interleave(n, 0), future], dim=1).view(B, n, C)
        e = model.energies(prefixes, rows).double()  # (B, n)
        _refuse_nonfinite(e, f"LM futures after position {t}", first_window)
        log_m[:, t] = log_z_tn(e)
    return (log_m[:, 1:] - log_m[:, :-1]).cpu().numpy()


def _position_rows(batches: list[tuple[np.ndarray, np.ndarray]], n: int) -> dict[str, Any]:
    lm = np.concatenate([b[0] for b in batches])  # (windows, C)
    gain = np.concatenate([b[1] for b in batches])
    rows = []
    for t in range(lm.shape[1]):
        g = mean_se(gain[:, t])
        base_nll = float(-lm[:, t].mean())
        rows.append({"position": t + 1, "base_ppl": math.exp(base_nll), "joint_ppl": math.exp(base_nll - g["mean_nats_per_window"]),
                     "gain_nats_per_token": g["mean_nats_per_window"], "gain_se": g["se"]})
    return {"samples_per_position": n, "windows": int(lm.shape[0]), "positions": rows}


def _refuse_nonfinite(e: torch.Tensor, what: str, first_window: int) -> None:
    bad = ~torch.isfinite(e)
    if bool(bad.any()):
        raise LmlabError(f"the energy is non-finite (nan/inf) on {int(bad.sum())} of {e.numel()} {what} in windows "
                         f"{first_window}..{first_window + e.size(0) - 1}: log Z and the perplexity would be wrong; "
                         "the checkpoint is broken (use an earlier one or retrain)")


def eval_joint_ppl(state: dict, data_dir: str, split: str, *, samples: list[int], max_examples: int, batch_size: int,
                   seed: int, device: str, position_samples: int = 0) -> dict[str, Any]:
    """Joint-model perplexity bracket per n and the base LM's perplexity on the same continuation tokens."""
    model, _, info = load_residual(state, device)
    data = DataDir(data_dir)
    if data.vocab_size != info["vocab_size"]:
        raise LmlabError(f"data dir {data_dir} has a vocabulary of {data.vocab_size}, the base LM {info['vocab_size']}")
    if any(h and h != data.tokenizer_sha256 for h in (state.get("tokenizer_sha256"), info.get("tokenizer_sha256"))):
        raise LmlabError(f"data dir {data_dir} has another tokenizer.json than the one this energy and its base LM were "
                         "trained with (sha256 differs); score a data dir prepped with --tokenizer <the training data dir>")
    windows = Windows(data.split(split), model.prefix_len, model.continuation_len, f"{data_dir}:{split}")
    out = joint_ppl_from_windows(model, windows, samples=samples, max_examples=max_examples, batch_size=batch_size,
                                 seed=seed, device=device, position_samples=position_samples)
    return {"split": split, "data": str(data_dir), **out}
