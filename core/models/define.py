"""DeFINE: deep factorized input token embeddings (Mehta et al., ICLR 2020).

Map -> Expand -> Reduce (Sec. 3):
  Map     token id -> e in R^n (a lookup, or an adaptive input of width n; Sec. 4.1).
  Expand  a hierarchical group transformation (HGT, Sec. 3.1, Eq. 1) of N layers whose widths k_l are
          spaced linearly from n to k; layer l uses g_l = max(floor(g_max / 2^(l-1)), 1) groups, each
          with its own (in_l/g_l x k_l/g_l) matrix, so the expansion has sum_l in_l k_l / g_l weights.
  Skip    the DeFINE unit's "split and mix" (Sec. 3.2, Fig. 3): for l > 1, e and y_(l-1) are each
          split into g_l chunks and chunk j of both is the input of group j: in_l = n + k_(l-1).
  Reduce  a linear map k -> m, the width the context model expects (m = d_model).

Two layer rules (`define.layout`, `define.schedule`; docs/define.md has the parameter counts):
  paper/halving     (the defaults, as above) Eq. 1 read literally: N layers n -> k, groups
                    max(g_max / 2^(l-1), 1), so layers past log2(g_max) + 1 are dense; then a dense
                    reduce k -> m on y_N. Widths k_l = n + (k - n) l / N rounded to the nearest multiple
                    of max(g_l, g_(l+1)), k_N = k.
  official/cyclic   what reproduces the paper's own parameter counts (Tables 1a, 2, 4), following the
                    official code (sacmehta/delight, `--define-iclr`, fairseq/delight_modules/
                    dextra_unit.py, define_config) where the paper is silent: N layers including the
                    reduce; layers 1..N-1 widen n -> k (int(linspace(n, k, N))[1:] rounded up to
                    multiples of max(g_l, g_(l+1), 8)); layer N maps the mixed [e ; y_(N-1)] to m with
                    g_N groups (no norm or activation: the paper's reduce is linear). Groups halve from
                    g_max as Eq. 1 and restart at g_max after 1 (the code's cycle also restarts, in the
                    opposite phase: 1, 2, ..., g_max reversed, so its reduce is always dense).
Other choices, and where the paper and the official code disagree:
  - No input projection: the first layer reads e (width n) as in Fig. 3; the code first maps e
    through an extra linear layer to m/2, and adds an output layer on [y_N ; that projection].
  - Between layers (unstated in the paper): as in the code, LayerNorm over each group's outputs
    (affine parameters shared by the groups, so groups stay independent), an activation
    (`define.activation`: GELU by default; the code's default is swish, which the paper presets use),
    then dropout (`define.dropout`).
  - Map scale: a lookup map is scaled by sqrt(n) (the code's fairseq embedding scale, rows ~ N(0, 1));
    an adaptive-input map is not (as in the code). Unscaled N(0, 1) rows were tried on the demo and
    trained worse under SGD lr 20 (docs/define.md).
  - g_max: the paper does not give it per experiment; `define.max_groups` (default 4) sets it; the
    paper presets take the code's default 2^ceil(log2(m / 32)).

Ablations (`define.variant`, the paper's transformation and skip-connection ablations):
  hgt            the full DeFINE unit above
  linear         N dense layers (g_l = 1), no skip (the paper's LT)
  group-linear   N layers of g_max groups each, no skip (GLT)
  group-linear-shuffle  GLT with a channel shuffle before every layer after the first (ShuffleNet, Zhang et al.
                 2018): chunk j of the next layer takes features from every group of the last (GLT + Shuffle)
  hierarchical   HGT without any skip connection
  hgt-no-mixer   HGT with a skip by plain concatenation [e ; y_(l-1)] (no split and mix)
  hgt-residual   HGT with residual connections y_l = f_l(y_(l-1)) + pad(y_(l-1)) instead of the mixer;
                 the shortcut zero-pads to the wider k_l (parameter-free, He et al. 2016 option A)
  define.reduce = false: the "- Reduce" ablation, no k -> m layer (the context model reads the k-wide expansion)

After training, the unit is a fixed function of the token id: `export_table()` caches it as a
V x m lookup table (eval mode); `cache_define_state_dict` / `cache_define_checkpoint` convert an
LM's state dict / checkpoint. Section and equation numbers: our reading of the paper (docs/define.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.core.errors import LmlabError
from lmlab.core.models.adaptive import AdaptiveInput
from lmlab.core.models.config import EmbeddingConfig, ModelConfig
from lmlab.core.models.embeddings import TokenEmbedding

MIXED = ("hgt",)  # split-and-mix skip
CONCAT = ("hgt-no-mixer",)  # plain-concatenation skip
RESIDUAL = ("hgt-residual",)
SHUFFLED = ("group-linear-shuffle",)  # GLT with a channel shuffle between layers


def channel_shuffle(y: torch.Tensor, groups: int) -> torch.Tensor:
    """(..., g * c) -> (..., c * g): feature i of group j moves to position i * g + j, so each of the next
    layer's g chunks holds features of every group (ShuffleNet's shuffle)."""
    return y.reshape(*y.shape[:-1], groups, -1).transpose(-1, -2).flatten(-2)


@dataclass(frozen=True)
class LayerSpec:
    in_dim: int
    out_dim: int
    groups: int


def group_schedule(layers: int, max_groups: int, variant: str, schedule: str = "halving") -> list[int]:
    if variant == "linear":
        return [1] * layers
    if variant in SHUFFLED or variant == "group-linear":
        return [max_groups] * layers
    if schedule == "cyclic":  # g_max, g_max/2, ..., 1, g_max, g_max/2, ...
        period = max_groups.bit_length()  # floor(log2 g_max) + 1 values per cycle
        return [max(max_groups >> (l % period), 1) for l in range(layers)]
    return [max(max_groups // 2 ** l, 1) for l in range(layers)]  # Eq. 1: g_l = max(g_max / 2^(l-1), 1)


def _official_widths(n: int, k: int, layers: int, groups: list[int]) -> list[int]:
    """Outputs of layers 1..N-1 in the official layout: n..k spaced linearly (truncated, as numpy's
    linspace().astype(int)), rounded up to a multiple of max(g_l, g_(l+1), 8)."""
    outs = []
    for l in range(1, layers):
        q = max(groups[l - 1], groups[l], 8)
        outs.append(q * math.ceil(int(n + (k - n) * l / (layers - 1)) / q))
    return outs


def define_layout(n: int, k: int, layers: int, max_groups: int, variant: str = "hgt", schedule: str = "halving",
                  layout: str = "paper", out_dim: int = 0) -> list[LayerSpec]:
    """In/out width and groups of each layer; raises LmlabError on widths the groups cannot split.

    layout "paper": N expansion layers n -> k (the reduce is separate). layout "official": N layers in
    all, the last being the reduce to `out_dim` (m), which reads the skip like the layers before it.
    """
    if layers < 1 or n < 1 or k < 1 or max_groups < 1:
        raise LmlabError("model.embedding.define: map_dim, expand_dim, layers and max_groups must be >= 1")
    if layout == "official" and (layers < 2 or out_dim < 1):
        raise LmlabError("model.embedding.define.layout=official needs layers >= 2 (layer N is the reduce)")
    groups = group_schedule(layers, max_groups, variant, schedule)
    if layout == "official":
        outs = _official_widths(n, k, layers, groups) + [out_dim]
    else:
        outs = []
        for l in range(1, layers + 1):
            if l == layers:
                outs.append(k)
                continue
            q = max(groups[l - 1], groups[l])
            outs.append(max(q, q * round((n + (k - n) * l / layers) / q)))
    specs = []
    for l, (g, out) in enumerate(zip(groups, outs)):
        if l == 0:
            width = n
        elif variant in MIXED or variant in CONCAT:
            width = n + outs[l - 1]
        else:
            width = outs[l - 1]
        if width % g or out % g or (variant in MIXED and n % g):
            raise LmlabError(f"model.embedding.define: layer {l + 1} has {g} groups but widths {width} -> {out} "
                             f"(map_dim={n}) are not divisible by it; make map_dim and expand_dim multiples of "
                             f"max_groups={max_groups}")
        specs.append(LayerSpec(width, out, g))
    return specs


class GroupLinear(nn.Module):
    """Group linear transform F_G (Sec. 3.1): split the input into g chunks, one (in/g x out/g) matrix each."""

    def __init__(self, in_dim: int, out_dim: int, groups: int, bias: bool = True):
        super().__init__()
        self.groups = groups
        gi, go = in_dim // groups, out_dim // groups
        bound = math.sqrt(6.0 / (gi + go))  # Xavier-uniform per group matrix
        self.weight = nn.Parameter(torch.empty(groups, gi, go).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(groups, go)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(*x.shape[:-1], self.groups, -1)  # (..., g, in/g)
        y = torch.einsum("...gi,gio->...go", x, self.weight)  # (..., g, out/g)
        return y + self.bias if self.bias is not None else y

    def dense_weight(self) -> torch.Tensor:
        """The equivalent (out, in) block-diagonal matrix of nn.Linear."""
        return torch.block_diag(*[w.t() for w in self.weight])


ACTIVATIONS = {"gelu": F.gelu, "swish": F.silu}  # swish(x) = x sigmoid(x), the official code's default


class HGTLayer(nn.Module):
    """One expansion layer: group linear -> per-group LayerNorm -> activation -> dropout; returns (..., out)."""

    def __init__(self, spec: LayerSpec, dropout: float, activation: str = "gelu"):
        super().__init__()
        self.spec = spec
        self.glt = GroupLinear(spec.in_dim, spec.out_dim, spec.groups)
        self.norm = nn.LayerNorm(spec.out_dim // spec.groups)
        self.drop = nn.Dropout(dropout)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(self.glt(x)))  # (..., g, out/g)
        return self.drop(y.flatten(-2))  # (..., out)


def split_mix(e: torch.Tensor, y: torch.Tensor, groups: int) -> torch.Tensor:
    """DeFINE's mixer (Sec. 3.2): chunk j of e and chunk j of y, side by side, feed group j."""
    e = e.reshape(*e.shape[:-1], groups, -1)  # (..., g, n/g)
    y = y.reshape(*y.shape[:-1], groups, -1)  # (..., g, k/g)
    return torch.cat([e, y], dim=-1).flatten(-2)  # (..., n + k)


class DefineEmbedding(nn.Module):
    """Token ids (B, T) -> (B, T, out_dim) by Map -> Expand (HGT + skip) -> Reduce."""

    def __init__(self, vocab_size: int, out_dim: int, n: int, k: int, layers: int, max_groups: int,
                 variant: str = "hgt", dropout: float = 0.1, cutoffs: list[int] | None = None,
                 factor: float = 4.0, schedule: str = "halving", layout: str = "paper", activation: str = "gelu",
                 reduce: bool = True):
        super().__init__()
        self.vocab_size, self.out_dim, self.variant, self.layout = vocab_size, out_dim, variant, layout
        if layout == "official" and not reduce:
            raise LmlabError("model.embedding.define.reduce=false is for layout=paper: in the official layout layer N "
                             "is the reduce")
        self.specs = define_layout(n, k, layers, max_groups, variant, schedule, layout, out_dim)
        # Map: a lookup is an adaptive input with one band; kept as one module so outputs can tie to it.
        self.adaptive_input = AdaptiveInput(vocab_size, n, list(cutoffs or []), factor, dim=n,
                                            what="model.embedding.adaptive")
        self.map_scale = math.sqrt(n) if not cutoffs else 1.0
        if layout == "official":  # layer N is the reduce: a group linear on the mixed [e ; y_(N-1)], no norm
            self.layers = nn.ModuleList(HGTLayer(s, dropout, activation) for s in self.specs[:-1])
            last = self.specs[-1]
            self.reduce = GroupLinear(last.in_dim, last.out_dim, last.groups)
        else:
            self.layers = nn.ModuleList(HGTLayer(s, dropout, activation) for s in self.specs)
            if reduce:
                self.reduce = nn.Linear(k, out_dim)
                nn.init.xavier_uniform_(self.reduce.weight)
                nn.init.zeros_(self.reduce.bias)
            elif k == out_dim:  # the "- Reduce" ablation: the expansion's k-wide output feeds the context model
                self.reduce = nn.Identity()
            else:
                raise LmlabError(f"model.embedding.define.reduce=false feeds the {k}-wide expansion to the context model: "
                                 f"set model.d_model={k} (= define.expand_dim), or keep the reduce")

    tie_weight = None  # the map table is n wide, not out_dim: tie through an adaptive softmax instead

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.adaptive_input(tokens) * self.map_scale  # (B, T, n)
        y = e
        for l, layer in enumerate(self.layers):
            if l == 0:
                y = layer(e) + (F.pad(e, (0, layer.spec.out_dim - e.size(-1))) if self.variant in RESIDUAL else 0)
            elif self.variant in MIXED:
                y = layer(split_mix(e, y, layer.spec.groups))  # (B, T, k_l)
            elif self.variant in CONCAT:
                y = layer(torch.cat([e, y], dim=-1))
            elif self.variant in RESIDUAL:
                y = layer(y) + F.pad(y, (0, layer.spec.out_dim - y.size(-1)))
            elif self.variant in SHUFFLED:
                y = layer(channel_shuffle(y, self.layers[l - 1].spec.groups))
            else:
                y = layer(y)
        if self.layout == "official":  # layer N reads the skip like the layers before it; no residual (k -> m shrinks)
            g = self.reduce.groups
            x = split_mix(e, y, g) if self.variant in MIXED else torch.cat([e, y], -1) if self.variant in CONCAT else y
            x = channel_shuffle(x, self.specs[-2].groups) if self.variant in SHUFFLED else x
            return self.reduce(x).flatten(-2)  # (B, T, m)
        return self.reduce(y)  # (B, T, m)

    @torch.no_grad()
    def export_table(self, chunk: int = 8192) -> TokenEmbedding:
        """The DeFINE output of every token id as a plain V x out_dim lookup (computed in eval mode)."""
        was_training = self.training
        self.eval()
        ids = torch.arange(self.vocab_size, device=self.adaptive_input.tables[0].device)
        rows = torch.cat([self(ids[i:i + chunk].unsqueeze(0)).squeeze(0) for i in range(0, self.vocab_size, chunk)])
        self.train(was_training)
        table = TokenEmbedding(self.vocab_size, self.out_dim).to(rows.device)
        table.table.weight.copy_(rows)
        return table


def build_define_embedding(cfg: EmbeddingConfig, vocab_size: int, d_model: int, model: ModelConfig) -> nn.Module:
    d = cfg.define
    cutoffs = cfg.adaptive.cutoffs if d.map == "adaptive" else []
    if d.map == "adaptive" and not cutoffs:
        raise LmlabError("model.embedding.define.map=adaptive needs model.embedding.adaptive.cutoffs (e.g. 20000,40000,200000)")
    return DefineEmbedding(vocab_size, d_model, d.map_dim, d.expand_dim, d.layers, d.max_groups, d.variant,
                           d.dropout, cutoffs, cfg.adaptive.factor, d.schedule, d.layout, d.activation, d.reduce)


def cache_define_state_dict(state: dict[str, torch.Tensor], model: ModelConfig, vocab_size: int
                            ) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """An LM with a DeFINE embedding -> the same LM with the cached V x d_model table (standard embedding).

    Returns the new state dict and model config. An adaptive softmax tied to DeFINE's map keeps
    its (now untied) copies of the map tables, so outputs are unchanged.
    """
    from lmlab.core.models.builders import build_language_model  # builders imports this module lazily

    if model.embedding.kind != "define":
        raise LmlabError(f"the checkpoint's embedding is '{model.embedding.kind}', not define: nothing to cache")
    lm = build_language_model(model, vocab_size)
    lm.load_state_dict(state)
    table = lm.embed.export_table()
    new = copy.deepcopy(model)
    new.embedding.kind, new.embedding.dim = "standard", 0
    if new.output.kind == "adaptive" and new.output.tie:
        tied = lm.embed.adaptive_input
        new.output.tie = False
        new.output.adaptive.cutoffs = list(tied.edges[1:-1])
        new.output.adaptive.factor = model.embedding.adaptive.factor
        new.output.adaptive.dim = tied.out_dim
    out = {k: v for k, v in state.items() if not k.startswith("embed.")}
    out["embed.table.weight"] = table.table.weight.detach().clone()
    return out, new


def cache_define_checkpoint(ckpt: dict) -> dict:
    """An `lm` checkpoint (as loaded by load_checkpoint) with a DeFINE embedding -> an inference
    checkpoint whose embedding is the cached table. Optimizer and schedule state are dropped: they
    refer to the DeFINE parameters, so the result is for eval-ppl / sample, not for resuming."""
    from lmlab.core.config import from_dict, to_dict

    model_cfg = from_dict(ModelConfig, ckpt["config"]["model"], "model")
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    new_state, new_cfg = cache_define_state_dict(state, model_cfg, int(ckpt["vocab_size"]))
    out = {k: v for k, v in ckpt.items() if k not in ("format", "format_version", "kind", "lmlab_version",
                                                      "optimizer", "schedule", "objective")}
    out["model"] = new_state
    out["config"] = {**ckpt["config"], "model": to_dict(new_cfg)}
    out["cached_from"] = "define"
    return out
