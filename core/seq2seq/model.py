"""Transformer encoder-decoder (Vaswani et al., "Attention Is All You Need", NeurIPS 2017).

Input embeddings come from the shared registry (`lmlab.core.models.builders`), so DeFINE
(Mehta et al., ICLR 2020) replaces the lookup table of encoder and decoder without a branch here.
Decoding state is a per-layer cache: decoder self-attention keys/values grow by one step at a
time; encoder-decoder keys/values are computed once from the encoder output.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.core.errors import LmlabError
from lmlab.core.models.builders import build_input_embedding
from lmlab.core.models.config import ModelConfig
from lmlab.core.models.embeddings import LinearOutput, TokenEmbedding
from lmlab.core.seq2seq.config import Seq2SeqModelConfig
from lmlab.core.seq2seq.prep import PAD


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (paper §3.5)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe  # (n, d)


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = softmax(Q W^Q_i (K W^K_i)^T / sqrt(d_k)) V W^V_i (eq. 1)."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise LmlabError(f"model.d_model={d} must be divisible by model.n_heads={n_heads}")
        self.h, self.dropout = n_heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.h, C // self.h).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                causal: bool = False, cache: dict | None = None, prefix: str = "self") -> torch.Tensor:
        """Self-attention when `memory` is None, else attention over `memory` (encoder output).

        mask: bool (B, 1, 1|T, S), True = may attend. With a cache, self-attention appends this
        step's keys/values; cross-attention computes them on the first call only.
        """
        q = self._split(self.q(x))
        if memory is not None and cache is not None and f"{prefix}_k" in cache:
            k, v = cache[f"{prefix}_k"], cache[f"{prefix}_v"]
        else:
            src = x if memory is None else memory
            k, v = self._split(self.k(src)), self._split(self.v(src))
            if cache is not None and memory is None and f"{prefix}_k" in cache:
                k = torch.cat([cache[f"{prefix}_k"], k], dim=2)
                v = torch.cat([cache[f"{prefix}_v"], v], dim=2)
            if cache is not None:
                cache[f"{prefix}_k"], cache[f"{prefix}_v"] = k, v
        # With a cache the single new query sees every cached key: no causal mask needed.
        is_causal = causal and (cache is None or q.size(2) == k.size(2)) and q.size(2) > 1
        if causal and not is_causal and q.size(2) > 1:
            raise ValueError("cached decoding feeds one target token at a time")
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        B, H, T, Dh = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * Dh))


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2 (eq. 2)."""

    def __init__(self, d: int, ffn: int, relu_dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.Dropout(relu_dropout)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class Residual(nn.Module):
    """LayerNorm(x + Dropout(Sublayer(x))) (paper §5.4), or x + Dropout(Sublayer(LayerNorm(x))) when pre-LN."""

    def __init__(self, d: int, dropout: float, pre: bool):
        super().__init__()
        self.ln, self.drop, self.pre = nn.LayerNorm(d), nn.Dropout(dropout), pre

    def forward(self, x, fn):
        if self.pre:
            return x + self.drop(fn(self.ln(x)))
        return self.ln(x + self.drop(fn(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqModelConfig):
        super().__init__()
        d = cfg.d_model
        self.attn = MultiHeadAttention(d, cfg.n_heads, cfg.attention_dropout)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.relu_dropout)
        self.r1, self.r2 = (Residual(d, cfg.dropout, cfg.normalize_before) for _ in range(2))

    def forward(self, x, src_mask):
        x = self.r1(x, lambda h: self.attn(h, mask=src_mask))
        return self.r2(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqModelConfig):
        super().__init__()
        d = cfg.d_model
        self.self_attn = MultiHeadAttention(d, cfg.n_heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(d, cfg.n_heads, cfg.attention_dropout)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.relu_dropout)
        self.r1, self.r2, self.r3 = (Residual(d, cfg.dropout, cfg.normalize_before) for _ in range(3))

    def forward(self, x, memory, src_mask, cache=None):
        x = self.r1(x, lambda h: self.self_attn(h, causal=True, cache=cache, prefix="self"))
        x = self.r2(x, lambda h: self.cross_attn(h, memory=memory, mask=src_mask, cache=cache, prefix="cross"))
        return self.r3(x, self.ffn)


class Seq2SeqTransformer(nn.Module):
    def __init__(self, cfg: Seq2SeqModelConfig, src_embed: nn.Module, tgt_embed: nn.Module, output: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.src_embed, self.tgt_embed, self.output = src_embed, tgt_embed, output
        self.scale = math.sqrt(cfg.d_model) if cfg.embed_scale else 1.0
        self.register_buffer("pe", sinusoidal_positions(cfg.max_positions, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        # pre-LN stacks end with a LayerNorm; post-LN outputs are already normalized
        self.enc_ln = nn.LayerNorm(cfg.d_model) if cfg.normalize_before else nn.Identity()
        self.dec_ln = nn.LayerNorm(cfg.d_model) if cfg.normalize_before else nn.Identity()
        for layer in [*self.encoder, *self.decoder]:
            for m in layer.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def _embed(self, embed: nn.Module, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = tokens.size(1)
        if start + T > self.pe.size(0):
            raise LmlabError(f"sequence of {start + T} tokens exceeds model.max_positions={self.pe.size(0)}")
        return self.drop(embed(tokens) * self.scale + self.pe[start:start + T])  # (B, T, d)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, d), src_mask (B, 1, 1, S) True on real tokens."""
        src_mask = (src != PAD)[:, None, None, :]
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return self.enc_ln(x), src_mask

    def decode(self, prev: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: list[dict] | None = None, start: int = 0) -> torch.Tensor:
        """prev (B, T) target prefix -> decoder states (B, T, d); `cache` (one dict per layer) is updated in place."""
        x = self._embed(self.tgt_embed, prev, start)
        for i, layer in enumerate(self.decoder):
            x = layer(x, memory, src_mask, None if cache is None else cache[i])
        return self.dec_ln(x)

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V)."""
        memory, src_mask = self.encode(src)
        return self.output.logits(self.decode(prev, memory, src_mask))

    def new_cache(self) -> list[dict]:
        return [{} for _ in self.decoder]

    @staticmethod
    def reorder_cache(cache: list[dict], index: torch.Tensor, self_only: bool = False) -> list[dict]:
        """Keep rows `index` of every cached tensor (beam search reordering); `self_only` leaves the
        cross-attention keys/values as they are (the caller knows the rows' encoder outputs are unchanged)."""
        return [{k: v if self_only and k.startswith("cross_") else v.index_select(0, index) for k, v in layer.items()}
                for layer in cache]


class ProjectedTiedOutput(nn.Module):
    """logits = (h P) E^T with E the (V, n) input table shared with the embedding, P: d_model -> n."""

    def __init__(self, d_model: int, table: nn.Parameter):
        super().__init__()
        self.proj = nn.Linear(d_model, table.size(1), bias=False)
        self.weight = table

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.proj(h), self.weight)  # (..., V)


def _embedding(cfg: Seq2SeqModelConfig, vocab_size: int) -> nn.Module:
    lm_cfg = ModelConfig(kind="transformer", d_model=cfg.d_model, n_layers=1, embedding=cfg.embedding)
    lm_cfg.transformer.dropout = cfg.dropout
    embed = build_input_embedding(lm_cfg, vocab_size)
    if isinstance(embed, TokenEmbedding) and embed.proj is None:
        nn.init.normal_(embed.table.weight, std=cfg.d_model ** -0.5)  # unit scale after the sqrt(d) multiplier
        with torch.no_grad():
            embed.table.weight[PAD].zero_()
    return embed


def build_seq2seq(cfg: Seq2SeqModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2SeqTransformer:
    src_embed = _embedding(cfg, src_vocab)
    if cfg.share_all_embeddings:
        if src_vocab != tgt_vocab:
            raise LmlabError("model.share_all_embeddings=true needs a joint vocabulary (prep with joint BPE) "
                             "or --set model.share_all_embeddings=false")
        tgt_embed = src_embed
        if cfg.share_map_only:  # a second DeFINE unit around the same Map (delight shares only map_layer)
            if cfg.embedding.kind != "define":
                raise LmlabError("model.share_map_only=true needs model.embedding.kind=define")
            tgt_embed = _embedding(cfg, tgt_vocab)
            for name, p in src_embed.adaptive_input.named_parameters():
                getattr(tgt_embed.adaptive_input, name.split(".")[0])[int(name.split(".")[1])] = p
    else:
        tgt_embed = _embedding(cfg, tgt_vocab)
    if cfg.output_proj_dim and cfg.share_decoder_input_output:
        raise LmlabError("model.output_proj_dim is an untied output: set model.share_decoder_input_output=false")
    if cfg.output_proj_dim:  # a cached DeFINE model: the Map it was tied to, kept as the output's own table
        output = ProjectedTiedOutput(cfg.d_model, nn.Parameter(torch.zeros(tgt_vocab, cfg.output_proj_dim)))
    elif not cfg.share_decoder_input_output:
        output = LinearOutput(cfg.d_model, tgt_vocab, bias=False)
        nn.init.normal_(output.weight, std=cfg.d_model ** -0.5)
    else:
        # DeFINE's table is n wide (its Map): tie through a d_model -> n projection instead
        tied = getattr(tgt_embed, "tie_weight", None)
        if tied is None:
            tied = getattr(getattr(tgt_embed, "adaptive_input", None), "tie_weight", None)
        if tied is None or tied.size(0) != tgt_vocab:
            raise LmlabError(f"model.share_decoder_input_output=true: the '{cfg.embedding.kind}' embedding has no "
                             "single V-row table to tie to; set it to false")
        output = (LinearOutput(cfg.d_model, tgt_vocab, tied_weight=tied, bias=False) if tied.size(1) == cfg.d_model
                  else ProjectedTiedOutput(cfg.d_model, tied))
    return Seq2SeqTransformer(cfg, src_embed, tgt_embed, output)


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over non-pad tokens of the smoothed loss -sum_k q'(k) log p(k), q' = (1-eps) onehot + eps/V
    (Szegedy et al. 2016 §7, used by Vaswani et al. §5.4), and of the plain NLL. Both in nats."""
    lp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    mask = target != PAD
    nll = -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lp.mean(-1)
    loss = (1.0 - eps) * nll + eps * smooth
    return loss[mask].sum(), nll[mask].sum()


def cache_define_seq2seq(ckpt: dict) -> dict:
    """A "seq2seq" checkpoint with DeFINE embeddings -> an inference checkpoint whose encoder and decoder inputs are
    the cached V x d_model tables (DeFINE Sec. 3.3: after training the unit is a fixed function of the token id).
    An output tied to the Map keeps that table as its own (output_proj_dim); units shared between encoder and
    decoder stay one table. Optimizer and scheduler state are dropped (for translation and scoring only)."""
    import copy

    from lmlab.core.config import from_dict, to_dict
    from lmlab.core.seq2seq.config import Config

    cfg = from_dict(Config, ckpt["config"])
    m = cfg.model
    if m.embedding.kind != "define":
        raise LmlabError(f"the checkpoint's embedding is '{m.embedding.kind}', not define: nothing to cache")
    vocab = ckpt["vocab_size"]
    model = build_seq2seq(m, vocab["src"], vocab["tgt"])
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    new = copy.deepcopy(m)
    new.embedding.kind, new.embedding.dim = "standard", 0
    new.share_all_embeddings = m.share_all_embeddings and not m.share_map_only  # one unit: one table
    new.share_map_only = False
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("src_embed.", "tgt_embed.", "output."))}
    state["src_embed.table.weight"] = model.src_embed.export_table().table.weight.detach().clone()
    state["tgt_embed.table.weight"] = (state["src_embed.table.weight"] if new.share_all_embeddings else
                                       model.tgt_embed.export_table().table.weight.detach().clone())
    if isinstance(model.output, ProjectedTiedOutput):  # tied to the Map (n wide): keep it as the output's table
        new.share_decoder_input_output, new.output_proj_dim = False, model.output.weight.size(1)
        state["output.proj.weight"] = model.output.proj.weight.detach().clone()
        state["output.weight"] = model.output.weight.detach().clone()
    else:
        new.share_decoder_input_output = False
        state["output.weight"] = model.output.weight.detach().clone()
    cfg.model = new
    out = {k: v for k, v in ckpt.items() if k not in ("format", "format_version", "kind", "lmlab_version", "optimizer", "scheduler")}
    out["model"], out["config"], out["cached_from"] = state, to_dict(cfg), "define"
    return out
