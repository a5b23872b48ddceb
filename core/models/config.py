"""Model configuration: context model (body), input embedding and output layer are chosen separately."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import at_least, between, each, either, greater_than, option, section


@dataclass
class LSTMConfig:
    hidden_size: int = option(650, "LSTM hidden width per layer (Zaremba medium: 650, large: 1500)", check=at_least(1))
    dropout: float = option(0.5, "dropout between LSTM layers and before the output (Zaremba)", check=between(0, 1, hi_open=True))
    variational: bool = option(False, "AWD-LSTM locked dropout: one mask per sequence instead of per step")
    weight_drop: float = option(0.0, "AWD-LSTM DropConnect on the hidden-to-hidden weights", check=between(0, 1, hi_open=True))
    embed_drop: float = option(0.0, "AWD-LSTM embedding dropout: drop whole word types", check=between(0, 1, hi_open=True))
    input_drop: float = option(-1.0, "dropout on the embeddings (-1: same as dropout)", check=either(-1.0, between(0, 1, hi_open=True)))
    between_drop: float = option(-1.0, "dropout between LSTM layers (-1: same as dropout; AWD-LSTM's dropouth: 0.25)", check=either(-1.0, between(0, 1, hi_open=True)))
    weight_init: str = option("uniform", "LSTM weights: uniform in ±init_range (Zaremba, the IMM code) or torch's default U(±1/sqrt(hidden)) (AWD-LSTM, which sets only the embedding and output to ±init_range)",
                              choices=("uniform", "torch"))
    init_range: float = option(0.05, "uniform init range of all weights (Zaremba: 0.05 medium, 0.04 large)", check=greater_than(0))
    bias_init: str = option("uniform", "biases at init: uniform = like the weights (weight_init), each of torch's two LSTM bias vectors, the output bias 0; "
                            "tensorflow = the official IMM code's TF1 init: LSTM gate biases 0 (BasicLSTMCell's own zero initializer), the output bias "
                            "U(±init_range) (its variable scope's initializer)", choices=("uniform", "tensorflow"))
    forget_bias: float = option(0.0, "added to each layer's forget-gate bias after init (TensorFlow BasicLSTMCell and the official IMM code: 1.0)")
    last_hidden_size: int = option(0, "output width of the last LSTM layer (0: d_model); AWD-LSTM with tied weights makes it the tied table's width, e.g. DeFINE's map n")


@dataclass
class TransformerConfig:
    n_heads: int = option(4, "attention heads", check=at_least(1))
    ffn_dim: int = option(0, "feed-forward width (0: 4 x d_model)", check=at_least(0))
    dropout: float = option(0.1, "dropout on attention weights, residual branches and embeddings", check=between(0, 1, hi_open=True))
    context: int = option(256, "maximum context length (positions)", check=at_least(1))
    bias: bool = option(True, "biases in linear layers and LayerNorms")


@dataclass
class DefineConfig:
    map_dim: int = option(128, "n: width of the token lookup (Map)", check=at_least(1))
    expand_dim: int = option(1024, "k: width of the last HGT layer (Expand)", check=at_least(1))
    layers: int = option(7, "N: number of HGT layers", check=at_least(1))
    max_groups: int = option(4, "g_max: groups of the first HGT layer; layer l uses max(g_max / 2^(l-1), 1)", check=at_least(1))
    variant: str = option("hgt", "ablation of the expansion", choices=("hgt", "linear", "group-linear", "group-linear-shuffle", "hierarchical", "hgt-no-mixer", "hgt-residual"))
    map: str = option("lookup", "the Map step: plain lookup or adaptive input", choices=("lookup", "adaptive"))
    dropout: float = option(0.1, "dropout inside the DeFINE unit", check=between(0, 1, hi_open=True))
    schedule: str = option("halving", "groups per layer: halving = max(g_max / 2^(l-1), 1) (the paper's Eq. 1); cyclic = the same halving, restarted at g_max after 1 (the official code repeats its group cycle)", choices=("halving", "cyclic"))
    layout: str = option("paper", "paper = N layers n -> k, then a dense reduce k -> m; official = N layers including the reduce (the official define_config): layers 1..N-1 expand n -> k (widths rounded up to multiples of 8), layer N maps the mixed [e ; y_(N-1)] to m with g_N groups", choices=("paper", "official"))
    activation: str = option("gelu", "activation between HGT layers (the official code's default is swish)", choices=("gelu", "swish"))
    reduce: bool = option(True, "the Reduce step k -> m (paper layout); false: the '- Reduce' ablation, the k-wide expansion feeds the context model (needs model.d_model = expand_dim)")


@dataclass
class AdaptiveConfig:
    cutoffs: list[int] = option([], "vocabulary cutoffs of the frequency bands (ids are sorted by frequency), e.g. 20000,40000,200000", check=each(at_least(1)))
    factor: float = option(4.0, "width divided by this factor from one band to the next", check=greater_than(0))
    dim: int = option(0, "adaptive softmax: width of the first band (0: d_model; narrower adds a d_model -> dim projection); a tied output takes the adaptive input's", check=at_least(0))

    def problems(self):
        if any(b <= a for a, b in zip(self.cutoffs, self.cutoffs[1:])):
            yield "cutoffs", f"{self.cutoffs} must be strictly increasing"


@dataclass
class EmbeddingConfig:
    kind: str = option("standard", "input embedding: lookup table, adaptive input, or DeFINE", choices=("standard", "adaptive", "define"))
    dim: int = option(0, "embedding width before projection to d_model (0: d_model)", check=at_least(0))
    define: DefineConfig = section(DefineConfig, "DeFINE (Mehta et al., ICLR 2020)")
    adaptive: AdaptiveConfig = section(AdaptiveConfig, "adaptive input (Baevski & Auli 2019)")


@dataclass
class OutputConfig:
    kind: str = option("linear", "output layer: full softmax or adaptive softmax", choices=("linear", "adaptive"))
    tie: bool = option(False, "tie output weights to the input embedding (Press & Wolf 2017)")
    bias: bool = option(True, "linear output: a bias per word (false: none, as fairseq's transformer_lm with a tied "
                        "output has)")
    loss_chunk: int = option(0, "linear output: compute the loss this many tokens at a time with a fused output "
                             "layer + cross-entropy that never holds all the logits (less memory; equal to the plain "
                             "path to ~1e-6, not bitwise); 0: off", check=at_least(0))
    adaptive: AdaptiveConfig = section(AdaptiveConfig, "adaptive softmax (Grave et al. 2017)")


@dataclass
class ModelConfig:
    kind: str = option("lstm", "context model", choices=("lstm", "transformer"))
    d_model: int = option(650, "width of the embeddings fed to the context model and of its output", check=at_least(1))
    n_layers: int = option(2, "number of LSTM or Transformer layers", check=at_least(1))
    lstm: LSTMConfig = section(LSTMConfig, "LSTM context model")
    transformer: TransformerConfig = section(TransformerConfig, "Transformer context model")
    embedding: EmbeddingConfig = section(EmbeddingConfig, "input embedding")
    output: OutputConfig = section(OutputConfig, "output layer")
    ralm_base: str = option("", "RALM, the residual EBM paper's locally normalised baseline (Deng et al. 2020, Table 1): "
                            "a train-lm checkpoint whose LM stays frozen; this model's logits are added to its logits, "
                            "log P = log softmax(base + residual). Where model.* equals the base's, the residual starts "
                            "as a copy of it with a zero output layer (training starts at the base LM). Empty: a plain LM")

    def problems(self):
        if self.ralm_base and (self.output.kind != "linear" or self.output.tie):
            yield "ralm_base", ("the residual's own output layer starts at zero and its logits are added to the base "
                                "LM's: use model.output.kind = linear and model.output.tie = false")
        if self.kind == "transformer" and self.d_model % self.transformer.n_heads:
            yield "transformer.n_heads", f"{self.transformer.n_heads} does not divide d_model = {self.d_model}"
