"""Generation from the residual joint model: the paper's Algorithm 1, top-k joint sampling (Deng et al., ICLR 2020).

Target (Eq. 3 with the top-k base of Algorithm 1): pi(x | p) = P_k(x | p) exp(-E(p, x)) / Z_k(p), where P_k is the
base LM restricted to its top-k tokens at every step (k = 0: the untruncated LM) at temperature 1.

For each prefix: draw n continuations from a proposal q (one batched pass over prefixes x candidates, reusing
the LM's KV cache / LSTM state), score each with the energy, and return candidate i with probability
w_i / sum_j w_j, the self-normalised importance weights of pi against q:

    log w_i = log P_k(x_i | p) - log q(x_i | p) - E(p, x_i).

The paper's Algorithm 1 is the case q = P_k (temperature 1, no top-p): the LM terms cancel and w_i = exp(-E_i).
`--temperature` / `--top-p` reshape only the proposal q (q's token distribution at step t is
softmax(filter(logits / T, top-k, top-p)), its log-probability summed over the sampled tokens); the weights
correct for it, so the target stays pi -- a tempered proposal changes which candidates are drawn (and the
efficiency: see `effective_candidates`), not the distribution sampled in the limit of many candidates,
except that top-p < 1 removes from pi's support whatever the nucleus never proposes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from lmlab.core.errors import LmlabError
from lmlab.core.generate import draw_categorical, encode_prefixes, filter_logits, sample_continuations
from lmlab.core.residual.joint import ResidualModel, load_residual, score


@torch.no_grad()
def propose(lm, prefixes: torch.Tensor, *, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
            top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates from the proposal q for prefixes (B, P) -> (tokens (B*num_samples, C) prefix-major,
    log_ratio (B*num_samples,) = log P_k(x) - log q(x) in nats, float64).

    With temperature 1 and no top-p, q = P_k: the LM's own top-k sampler, log_ratio = 0 exactly."""
    if temperature == 1.0 and top_p >= 1.0:
        tokens = sample_continuations(lm, prefixes, num_samples=num_samples, max_new_tokens=max_new_tokens,
                                      top_k=top_k, generator=generator)
        return tokens, torch.zeros(tokens.size(0), dtype=torch.float64, device=tokens.device)
    if lm.context is not None and prefixes.size(1) + max_new_tokens > lm.context:
        raise LmlabError(f"prefix of {prefixes.size(1)} + {max_new_tokens} new tokens exceeds the base LM's context of "
                         f"{lm.context}; lower --max-new-tokens")
    lm.eval()
    last, state, rows = encode_prefixes(lm, prefixes, num_samples)  # (N, V)
    out = torch.empty(rows.numel(), max_new_tokens, dtype=torch.long, device=prefixes.device)
    log_ratio = torch.zeros(rows.numel(), dtype=torch.float64, device=prefixes.device)
    for t in range(max_new_tokens):
        log_q = filter_logits(last, temperature, top_k, top_p).log_softmax(-1)
        nxt = draw_categorical(log_q.exp(), generator).unsqueeze(1)  # (N, 1)
        log_p = filter_logits(last, 1.0, top_k, 1.0).log_softmax(-1)
        log_ratio += (log_p.gather(1, nxt) - log_q.gather(1, nxt)).squeeze(1).double()
        out[:, t] = nxt.squeeze(1)
        if t < max_new_tokens - 1:
            logits, state = lm(nxt, state=state)
            last = logits[:, -1]
    return out, log_ratio


@torch.no_grad()
def joint_sample(model: ResidualModel, prefixes: torch.Tensor, *, candidates: int, top_k: int, max_new_tokens: int,
                 num_samples: int = 1, prefix_mask: torch.Tensor | None = None, temperature: float = 1.0,
                 top_p: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Algorithm 1 for prefixes (B, P) -> `tokens` (B, S, C), the chosen `index` (B, S) into the candidates, their
    `energy` (B, S), all candidates' energies `candidate_energy` and log importance weights `log_weight` (B, S, n),
    and `effective_candidates` (B, S) = (sum w)^2 / sum w^2; S = num_samples draws, each from its own n candidates."""
    B, n, C = prefixes.size(0), candidates, max_new_tokens
    cand, log_ratio = propose(model.lm, prefixes, num_samples=num_samples * n, max_new_tokens=C, temperature=temperature,
                              top_k=top_k, top_p=top_p, generator=generator)  # (B*S*n, C), (B*S*n,)
    cand = cand.view(B, num_samples * n, C)
    e = score(model.energy, prefixes, cand, prefix_mask, chunk=512).view(B, num_samples, n)  # (B, S, n)
    bad = int((~torch.isfinite(e)).sum())
    if bad:
        raise LmlabError(f"the energy is non-finite (nan/inf) on {bad} of {e.numel()} candidates: the checkpoint is "
                         "broken (retrain it or use an earlier checkpoint)")
    log_w = log_ratio.view(B, num_samples, n) - e.double()  # (B, S, n)
    if not bool(torch.isfinite(log_w).any(-1).all()):
        raise LmlabError("no candidate has a finite importance weight; raise --candidates or --top-p")
    probs = torch.softmax(log_w, dim=-1)  # Algorithm 1: resample i with probability w_i / sum_j w_j
    index = torch.multinomial(probs.view(-1, n).float(), 1, generator=generator).view(B, num_samples)  # (B, S)
    cand = cand.view(B, num_samples, n, C)
    tokens = cand.gather(2, index[..., None, None].expand(B, num_samples, 1, C)).squeeze(2)
    return {"tokens": tokens, "index": index, "energy": e.gather(2, index[..., None]).squeeze(2),
            "candidate_energy": e, "log_weight": log_w, "effective_candidates": 1.0 / probs.pow(2).sum(-1)}


def encode_prompt(ids: list[int], model: ResidualModel, max_new_tokens: int, eos_id: int) -> list[int]:
    """<eos> + prompt tokens (a sentence boundary, as the LM sampler and training see it), keeping the last tokens
    that fit the energy's window of prefix_len + continuation_len beside `max_new_tokens` new ones."""
    room = model.prefix_len + model.continuation_len - max_new_tokens
    if max_new_tokens < 1 or room < 1:
        raise LmlabError(f"--max-new-tokens {max_new_tokens}: the energy's window is {model.prefix_len}+"
                         f"{model.continuation_len} tokens, so use 1..{model.prefix_len + model.continuation_len - 1} "
                         f"(default: its continuation length, {model.continuation_len})")
    return ([eos_id] + ids)[-room:]


def batches(encoded: list[list[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped by token length (shortest first, input order inside), cut into <= batch_size."""
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    return [rows[j:j + batch_size] for length in sorted(by_len) for rows in [by_len[length]]
            for j in range(0, len(rows), batch_size)]


def sample_lines(state: dict[str, Any], prompts: list[str], *, num_samples: int, candidates: int, top_k: int,
                 max_new_tokens: int | None = None, seed: int, device: str, temperature: float = 1.0, top_p: float = 1.0,
                 batch_size: int = 32, with_scores: bool = False,
                 log: Callable[[str], None] | None = None) -> list[list[Any]]:
    """Text continuations of `prompts` from the joint model, prompt-major and in input order.

    Returns one list per prompt (input order) of `num_samples` items: the continuation's text cut at the first
    <eos> (the energy scored all `max_new_tokens` tokens; default: the energy's continuation length), or with
    `with_scores` a dict {prompt, text, energy, candidate, candidates, candidates_energy_min/max,
    effective_candidates}. Prompts of equal token length go through Algorithm 1 together, `batch_size` prompts
    per call, so one call holds batch_size x num_samples x candidates continuations whatever the number of prompts.
    The same seed and batch size give the same samples.
    """
    if candidates < 1 or num_samples < 1 or batch_size < 1:
        raise LmlabError("--candidates, --num-samples and --batch-size must be >= 1")
    if not 0.0 < top_p <= 1.0:
        raise LmlabError(f"--top-p {top_p}: expected 0 < p <= 1")
    model, tokenizer, info = load_residual(state, device)
    max_new_tokens = model.continuation_len if max_new_tokens is None else max_new_tokens
    eos_id = int(info["specials"]["eos"])
    gen = torch.Generator(device=device).manual_seed(seed)
    encoded = [encode_prompt(tokenizer.encode(p, add_special_tokens=False).ids, model, max_new_tokens, eos_id)
               for p in prompts]
    out: list[list[Any]] = [[None] * num_samples for _ in prompts]
    groups = batches(encoded, batch_size)
    for g, rows in enumerate(groups):
        prefixes = torch.tensor([encoded[i] for i in rows], dtype=torch.long, device=device)
        res = joint_sample(model, prefixes, candidates=candidates, top_k=top_k, max_new_tokens=max_new_tokens,
                           num_samples=num_samples, temperature=temperature, top_p=top_p, generator=gen)
        for r, i in enumerate(rows):
            for s in range(num_samples):
                ids = res["tokens"][r, s].tolist()
                text = tokenizer.decode(ids[: ids.index(eos_id)] if eos_id in ids else ids)
                if not with_scores:
                    out[i][s] = text
                    continue
                ce = res["candidate_energy"][r, s]
                out[i][s] = {"prompt": prompts[i], "text": text, "energy": float(res["energy"][r, s]),
                             "candidate": int(res["index"][r, s]), "candidates": candidates,
                             "candidates_energy_min": float(ce.min()), "candidates_energy_max": float(ce.max()),
                             "effective_candidates": round(float(res["effective_candidates"][r, s]), 4)}
        if log is not None and len(groups) > 1:
            log(f"residual sample: batch {g + 1}/{len(groups)}")
    return out
