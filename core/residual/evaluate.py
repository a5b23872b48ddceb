"""Perplexity of the residual joint model with lower/upper estimates (Deng et al., ICLR 2020, Sec. 5, Theorem 2).

log P_joint(x_p+1..T | x_1..p) = log P_LM - E(x_1..T) - log Z(x_1..p). log Z is estimated per prefix from N
untruncated LM samples; for each n in `samples` the first n of them give T_n (-> lower perplexity) and the
bias-corrected (2n-1) T_n - 2(n-1) T_{n-1} (-> upper perplexity), so the bracket's tightening with n is the
paper's Figure 2 (left). Perplexity is per continuation token: exp(sum of -log P_joint / tokens).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError
from lmlab.core.generate import sample_continuations, sequence_logprob
from lmlab.core.residual.estimators import log_z_bounds
from lmlab.core.residual.joint import ResidualModel, load_residual
from lmlab.core.residual.windows import Windows


@torch.no_grad()
def joint_ppl_from_windows(model: ResidualModel, windows: Windows, *, samples: list[int], max_examples: int,
                           batch_size: int, seed: int, device: str | torch.device = "cpu") -> dict[str, Any]:
    samples = sorted(set(int(n) for n in samples))
    if not samples or samples[0] < 1:
        raise LmlabError("--is-samples: give positive sample counts, e.g. 1,2,4,8")
    n_max = samples[-1]
    count = len(windows) if max_examples <= 0 else min(max_examples, len(windows))
    gen = torch.Generator(device=device).manual_seed(seed)
    C = windows.continuation_len
    lm_nll = pos_e = 0.0
    lower = {n: 0.0 for n in samples}
    upper = {n: 0.0 for n in samples if n >= 2}
    for start in range(0, count, batch_size):
        prefixes, conts = windows.get(np.arange(start, min(start + batch_size, count)), device)
        B = prefixes.size(0)
        lm_nll += -sequence_logprob(model.lm, prefixes, conts).double().sum().item()
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
            if up is not None:
                upper[n] += up.sum().item()
    tokens = count * C
    base = lm_nll / tokens
    joint_base = (lm_nll + pos_e) / tokens  # -log P_LM + E, before log Z
    curve = []
    for n in samples:
        row = {"n": n, "log_z_lower_mean": lower[n] / count,
               "nll_lower_nats_per_token": joint_base + lower[n] / tokens,
               "lower_ppl": math.exp(joint_base + lower[n] / tokens),
               "log_z_upper_mean": None, "nll_upper_nats_per_token": None, "upper_ppl": None}
        if n in upper:
            row.update(log_z_upper_mean=upper[n] / count, nll_upper_nats_per_token=joint_base + upper[n] / tokens,
                       upper_ppl=math.exp(joint_base + upper[n] / tokens))
        curve.append(row)
    return {"examples": count, "tokens": tokens, "prefix_len": windows.prefix_len, "continuation_len": C,
            "base_lm": {"nll_nats_per_token": base, "bits_per_token": base / math.log(2), "ppl": math.exp(base)},
            "energy_real_mean": pos_e / count, "joint": curve}


def _refuse_nonfinite(e: torch.Tensor, what: str, first_window: int) -> None:
    bad = ~torch.isfinite(e)
    if bool(bad.any()):
        raise LmlabError(f"the energy is non-finite (nan/inf) on {int(bad.sum())} of {e.numel()} {what} in windows "
                         f"{first_window}..{first_window + e.size(0) - 1}: log Z and the perplexity would be wrong; "
                         "the checkpoint is broken (use an earlier one or retrain)")


def eval_joint_ppl(state: dict, data_dir: str, split: str, *, samples: list[int], max_examples: int, batch_size: int,
                   seed: int, device: str) -> dict[str, Any]:
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
                                 seed=seed, device=device)
    return {"split": split, "data": str(data_dir), **out}
