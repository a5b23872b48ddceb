"""Translation: batched beam search with a length penalty, greedy decoding and sampling.

Beam search follows fairseq's `SequenceGenerator` (Ott et al. 2019): at each step the 2K best
(beam, token) extensions are taken; an extension ending in </s> among the top K is finalized with
score log p(y|x) / |y|^lenpen (Wu et al. 2016's simpler form), the rest fill the K live beams, and a
sentence stops when K hypotheses are final. Output length is capped at a·|x| + b.
The encoder runs once per batch; the decoder feeds one token per step through its KV cache
(`use_cache=False` recomputes the whole prefix, the reference the cache is tested against).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmlab.core.generate import draw_categorical
from lmlab.core.seq2seq.model import Seq2SeqTransformer
from lmlab.core.seq2seq.prep import BOS, EOS, PAD, UNK


class _Decoder:
    """Step-wise log-probs for a batch of prefixes, with or without the KV cache."""

    def __init__(self, model: Seq2SeqTransformer, memory, src_mask, use_cache: bool):
        self.model, self.memory, self.src_mask, self.use_cache = model, memory, src_mask, use_cache
        self.cache = model.new_cache() if use_cache else None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) all output so far -> log p(next | prefix) (N, V)."""
        if self.use_cache:
            h = self.model.decode(tokens[:, -1:], self.memory, self.src_mask, self.cache, start=tokens.size(1) - 1)
        else:
            h = self.model.decode(tokens, self.memory, self.src_mask)
        logits = self.model.output.logits(h[:, -1])
        lp = F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)  # (N, V)
        lp[:, [PAD, BOS, UNK]] = -float("inf")
        return lp

    def reorder(self, index: torch.Tensor, same_sentences: bool = False) -> None:
        """Keep rows `index`. `same_sentences`: every kept row comes from its own sentence's rows, which share the
        encoder output, so the memory and the cross-attention keys/values are already right and are not copied."""
        if not same_sentences:
            self.memory, self.src_mask = self.memory.index_select(0, index), self.src_mask.index_select(0, index)
        if self.use_cache:
            self.cache = self.model.reorder_cache(self.cache, index, self_only=same_sentences)


def _only_eos(lp: torch.Tensor) -> torch.Tensor:
    """At the length cap only </s> may follow; it keeps its own log-prob (as fairseq does)."""
    out = torch.full_like(lp, -float("inf"))
    out[:, EOS] = lp[:, EOS]
    return out


def _max_lens(src: torch.Tensor, a: float, b: int, limit: int) -> torch.Tensor:
    src_len = (src != PAD).sum(1)  # includes </s>, as in fairseq
    return (a * src_len.float() + b).long().clamp(1, limit - 1)


@torch.no_grad()
def greedy_or_sample(model: Seq2SeqTransformer, src: torch.Tensor, *, max_len_a: float = 1.2, max_len_b: int = 10,
                     sampling: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                     generator: torch.Generator | None = None, use_cache: bool = True) -> list[tuple[list[int], float]]:
    """One output per source row: argmax (or a draw) at every step until </s> or the length cap."""
    model.eval()
    memory, src_mask = model.encode(src)
    dec = _Decoder(model, memory, src_mask, use_cache)
    B = src.size(0)
    max_len = _max_lens(src, max_len_a, max_len_b, model.pe.size(0))
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=src.device)
    score = torch.zeros(B, device=src.device, dtype=torch.promote_types(memory.dtype, torch.float32))
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for t in range(int(max_len.max())):
        lp = dec.step(tokens)
        force_eos = (t + 1) >= max_len  # the cap counts tokens including </s>
        lp[force_eos] = _only_eos(lp[force_eos])
        if sampling:
            nxt = _sample(lp, temperature, top_k, top_p, generator)
        else:
            nxt = lp.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        score += torch.where(done, 0.0, lp.gather(1, nxt.clamp(min=0)[:, None]).squeeze(1))
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    out = []
    for b in range(B):
        row = tokens[b, 1:].tolist()
        row = row[:row.index(EOS)] if EOS in row else row
        out.append((row, float(score[b])))
    return out


def _sample(lp: torch.Tensor, temperature: float, top_k: int, top_p: float, generator) -> torch.Tensor:
    logits = lp / max(temperature, 1e-6)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if top_p < 1.0:  # nucleus (Holtzman et al. 2020): smallest set with mass >= p
        sorted_l, idx = logits.sort(-1, descending=True)
        cum = sorted_l.softmax(-1).cumsum(-1)
        drop = cum - sorted_l.softmax(-1) >= top_p
        logits = logits.scatter(-1, idx, sorted_l.masked_fill(drop, -float("inf")))
    return draw_categorical(logits.softmax(-1), generator)


@torch.no_grad()
def beam_search(model: Seq2SeqTransformer, src: torch.Tensor, *, beam: int = 5, lenpen: float = 1.0,
                max_len_a: float = 1.2, max_len_b: int = 10, use_cache: bool = True) -> list[tuple[list[int], float]]:
    """Best hypothesis per source row (tokens without </s>, length-normalized score)."""
    model.eval()
    B, K, dev = src.size(0), beam, src.device
    memory, src_mask = model.encode(src)
    expand = torch.arange(B, device=dev).repeat_interleave(K)  # row b*K+k is beam k of sentence b
    dec = _Decoder(model, memory.index_select(0, expand), src_mask.index_select(0, expand), use_cache)
    max_len = _max_lens(src, max_len_a, max_len_b, model.pe.size(0))  # (B,)
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    scores = torch.zeros(B, K, device=dev, dtype=torch.promote_types(memory.dtype, torch.float32))
    scores[:, 1:] = -float("inf")  # all beams start identical: expand only the first
    final: list[list[tuple[float, list[int], float]]] = [[] for _ in range(B)]
    ids = list(range(B))  # the source row of each live batch position; finished sentences leave the batch
    for t in range(int(max_len.max())):
        n = len(ids)
        lp = dec.step(tokens)  # (n*K, V)
        V = lp.size(1)
        force_eos = ((t + 1) >= max_len).repeat_interleave(K)
        lp[force_eos] = _only_eos(lp[force_eos])
        cand = (scores.view(n * K, 1) + lp).view(n, K * V)
        cand_scores, cand_idx = cand.topk(2 * K, dim=1)  # (n, 2K)
        cand_beam, cand_tok = cand_idx // V, cand_idx % V
        is_eos = (cand_tok == EOS) & torch.isfinite(cand_scores)
        eos_p, eos_j = torch.nonzero(is_eos[:, :K], as_tuple=True)
        for p, j in zip(eos_p.tolist(), eos_j.tolist()):
            b = ids[p]
            if len(final[b]) >= K:
                continue
            hyp = tokens[p * K + int(cand_beam[p, j]), 1:].tolist()
            raw = float(cand_scores[p, j])
            final[b].append((raw / (len(hyp) + 1) ** lenpen, hyp, raw))
        live = [p for p in range(n) if len(final[ids[p]]) < K and t + 1 < int(max_len[p])]
        if not live:
            break
        # the K best non-</s> extensions stay live: </s> candidates sort after every other one
        rank = is_eos.long() * (2 * K) + torch.arange(2 * K, device=dev)
        keep = rank.topk(K, dim=1, largest=False).indices  # (n, K)
        live_t = torch.tensor(live, device=dev)
        new_beam = cand_beam.gather(1, keep)[live_t]
        new_tok = cand_tok.gather(1, keep)[live_t]
        scores = cand_scores.gather(1, keep)[live_t]
        rows = (live_t[:, None] * K + new_beam).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), new_tok.view(-1, 1)], dim=1)
        dec.reorder(rows, same_sentences=len(live) == n)  # beams move within their sentence unless one finished
        max_len = max_len[live_t]
        ids = [ids[p] for p in live]
    out = []
    for b in range(B):
        best = max(final[b], key=lambda h: h[0]) if final[b] else (float("-inf"), [], float("-inf"))
        out.append((best[1], best[0]))
    return out


# ---------------------------------------------------------------------------------------------
# checkpoint -> text


def model_from_state(state: dict, device: str | torch.device = "cpu") -> tuple[Seq2SeqTransformer, dict]:
    """(model in eval mode, {"src": Tokenizer, "tgt": Tokenizer}) from a "seq2seq" checkpoint dict."""
    from lmlab.core.config import from_dict
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.data import tokenizer_from_json
    from lmlab.core.seq2seq.model import build_seq2seq

    cfg = from_dict(Config, state["config"])
    model = build_seq2seq(cfg.model, state["vocab_size"]["src"], state["vocab_size"]["tgt"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    toks = {side: tokenizer_from_json(js) for side, js in state["tokenizers"].items()}
    return model, toks


def translate_lines_scored(state: dict, lines: list[str], *, beam: int = 5, lenpen: float = 1.0,
                           max_len_a: float = 1.2, max_len_b: int = 10, sampling: bool = False,
                           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, batch_size: int = 64,
                           seed: int = 0, device: str = "cpu") -> list[dict]:
    """[{"translation": str, "score": float, "tokens": int}] in input order (score: beam = length-normalized
    log-prob, greedy/sampling = total log-prob, nats)."""
    from lmlab.core.distributed import pick_device
    from lmlab.core.seq2seq.prep import decode

    dev = pick_device(device)
    model, toks = model_from_state(state, dev)
    limit = model.pe.size(0) - 1
    src_ids = [e.ids[: limit - 1] + [EOS] for e in toks["src"].encode_batch(lines)]
    order = sorted(range(len(lines)), key=lambda i: len(src_ids[i]))  # similar lengths batch together
    generator = torch.Generator(device=dev).manual_seed(seed)
    results: list[dict | None] = [None] * len(lines)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        S = max(len(src_ids[i]) for i in chunk)
        src = torch.full((len(chunk), S), PAD, dtype=torch.long)
        for row, i in enumerate(chunk):
            src[row, :len(src_ids[i])] = torch.tensor(src_ids[i])
        src = src.to(dev)
        if sampling or beam <= 1:
            outs = greedy_or_sample(model, src, max_len_a=max_len_a, max_len_b=max_len_b, sampling=sampling,
                                    temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        else:
            outs = beam_search(model, src, beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b)
        for i, (ids, score) in zip(chunk, outs):
            results[i] = {"translation": decode(toks["tgt"], ids), "score": score, "tokens": len(ids)}
    return results  # type: ignore[return-value]


def translate_lines(state: dict, lines: list[str], *, beam: int = 5, lenpen: float = 1.0, max_len_a: float = 1.2,
                    max_len_b: int = 10, sampling: bool = False, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0, batch_size: int = 64, seed: int = 0, device: str = "cpu") -> list[str]:
    """Detokenized translations of `lines`, in input order."""
    return [r["translation"] for r in translate_lines_scored(
        state, lines, beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b, sampling=sampling,
        temperature=temperature, top_k=top_k, top_p=top_p, batch_size=batch_size, seed=seed, device=device)]
