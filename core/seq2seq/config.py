"""`train-lm --task translation` configuration. Defaults are Transformer base (Vaswani et al. 2017, Table 3)."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import at_least, between, option, section
from lmlab.core.models.config import EmbeddingConfig
from lmlab.core.train.config import HardwareConfig, OptimConfig, RunConfig


@dataclass
class Seq2SeqDataConfig:
    dir: str = option("data/multi30k-de-en", "parallel data dir written by `lmlab prep --src-lang .. --tgt-lang ..`")
    max_tokens: int = option(4096, "tokens per batch (padded, longer side), summed over all processes", check=at_least(1))
    valid_split: str = option("valid", "split used for validation loss and model selection")


@dataclass
class Seq2SeqModelConfig:
    d_model: int = option(512, "d_model: width of embeddings and every sub-layer output", check=at_least(1))
    encoder_layers: int = option(6, "N encoder layers", check=at_least(1))
    decoder_layers: int = option(6, "N decoder layers", check=at_least(1))
    n_heads: int = option(8, "h attention heads", check=at_least(1))
    ffn_dim: int = option(2048, "d_ff: inner width of the position-wise feed-forward network", check=at_least(1))
    dropout: float = option(0.1, "P_drop on sub-layer outputs and on embeddings + positions", check=between(0, 1, hi_open=True))
    attention_dropout: float = option(0.0, "dropout on attention weights", check=between(0, 1, hi_open=True))
    relu_dropout: float = option(0.0, "dropout after the feed-forward ReLU", check=between(0, 1, hi_open=True))
    normalize_before: bool = option(False, "pre-LN blocks (LayerNorm before each sub-layer); false = the paper's post-LN")
    embed_scale: bool = option(True, "multiply embeddings by sqrt(d_model) before adding positions (paper §3.4)")
    max_positions: int = option(1024, "longest source/target sequence (sinusoidal positions)", check=at_least(1))
    share_decoder_input_output: bool = option(True, "tie the output projection to the decoder's input table (DeFINE: its n-wide Map, through a d_model -> n projection)")
    share_all_embeddings: bool = option(True, "one input embedding for encoder and decoder (needs a joint vocabulary); with share_decoder_input_output, all three share it")
    share_map_only: bool = option(False, "with share_all_embeddings and a DeFINE embedding: share only the Map table(s); encoder and decoder keep their own expansion and reduce (the official delight code)")
    output_proj_dim: int = option(0, "untied output through a d_model -> N projection onto its own V x N table (0: none); "
                                  "what `lmlab cache-define` makes of a DeFINE model whose output was tied to its Map", check=at_least(0))
    embedding: EmbeddingConfig = section(EmbeddingConfig, "input embedding of encoder and decoder (standard or DeFINE)")

    def problems(self):
        if self.d_model % self.n_heads:
            yield "n_heads", f"{self.n_heads} does not divide d_model = {self.d_model}"


@dataclass
class Seq2SeqScheduleConfig:
    max_steps: int = option(100000, "optimizer updates to train (the paper's base model: 100k)", check=at_least(1))
    epochs: int = option(0, "stop after this many epochs (0: max_steps only)", check=at_least(0))
    warmup_steps: int = option(4000, "inverse-sqrt schedule: linear warmup updates, then lr ~ 1/sqrt(step)", check=at_least(0))
    warmup_init_lr: float = option(1e-7, "learning rate at update 0 of the warmup", check=at_least(0))


@dataclass
class Config:
    task: str = option("translation", "train-lm task (this config is the translation one)", choices=("translation",))
    data: Seq2SeqDataConfig = section(Seq2SeqDataConfig, "parallel data")
    model: Seq2SeqModelConfig = section(Seq2SeqModelConfig, "Transformer encoder-decoder")
    optim: OptimConfig = option(help="optimizer (paper: Adam, betas 0.9/0.98, eps 1e-9)",
                                factory=lambda: OptimConfig(name="adamw", lr=7e-4, betas=[0.9, 0.98], eps=1e-9, clip=0.0))
    schedule: Seq2SeqScheduleConfig = section(Seq2SeqScheduleConfig, "inverse-sqrt learning-rate schedule and length")
    label_smoothing: float = option(0.1, "epsilon_ls of label-smoothed cross-entropy (paper: 0.1)", check=between(0, 1, hi_open=True))
    run: RunConfig = section(RunConfig, "run dir and checkpointing")
    hardware: HardwareConfig = section(HardwareConfig, "device, precision, compile")
    seed: int = option(1234, "random seed (init, dropout, batch order)", check=between(0, 2**32 - 1))
