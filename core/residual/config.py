"""`train-ebm --kind residual` configuration (Deng, Bakhtin, Ott, Szlam & Ranzato, ICLR 2020).

Defaults follow the paper where it gives a value: the energy sees a prefix and a continuation of
fixed lengths, is trained by conditional NCE against the frozen base LM's own samples, and is a
bidirectional Transformer (BiT) or a unidirectional one initialised from the base LM (UniT).
Presets (`residual-bit-base`, `residual-bit-large`, `residual-unit`) set the paper's sizes;
`residual-demo` shrinks sizes (never the algorithm) for a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import at_least, between, each, greater_than, option, section
from lmlab.core.train.config import HardwareConfig, RunConfig


@dataclass
class DataConfig:
    dir: str = option("data/demo", "data dir written by `lmlab prep` (the same tokenizer as the base LM)")
    train_split: str = option("train", "split whose windows give the positives")
    batch_size: int = option(32, "prefixes per NCE update, summed over all processes under torchrun (each with one positive and `negatives.per_prefix` negatives)",
                             check=at_least(1))


@dataclass
class WindowConfig:
    prefix_len: int = option(120, "tokens of real text the energy and the LM condition on (x_1..p)", check=at_least(1))
    continuation_len: int = option(40, "tokens of the continuation the energy scores (x_p+1..T)", check=at_least(1))


@dataclass
class EnergyConfig:
    kind: str = option("bit", "bit: bidirectional Transformer trained from scratch (or after MLM pre-training); "
                       "unit: copy of the base LM's embedding+body with a scalar head (UniT; UniLSTM for an LSTM base)",
                       choices=("bit", "unit"))
    d_model: int = option(768, "BiT width (RoBERTa-Base: 768, Large: 1024)", check=at_least(1))
    n_layers: int = option(12, "BiT layers (Base: 12, Large: 24)", check=at_least(1))
    n_heads: int = option(12, "BiT attention heads (Base: 12, Large: 16)", check=at_least(1))
    ffn_dim: int = option(0, "BiT feed-forward width (0: 4 x d_model)", check=at_least(0))
    norm: str = option("pre", "BiT LayerNorm placement: pre (pre-LN layers + final LayerNorm; stable from scratch) or "
                       "post (RoBERTa's layout: LayerNorm on the embeddings, post-LN layers)", choices=("pre", "post"))
    dropout: float = option(0.1, "dropout inside the energy network", check=between(0, 1, hi_open=True))

    def problems(self):
        if self.kind == "bit" and self.d_model % self.n_heads:
            yield "n_heads", f"{self.n_heads} does not divide d_model = {self.d_model}"


@dataclass
class NegativesConfig:
    per_prefix: int = option(4, "LM continuations sampled for each prefix (negatives of the NCE classifier)", check=at_least(1))
    top_k: int = option(0, "sample negatives from the top-k of the LM (0: untruncated; the perplexity bounds "
                        "assume the energy was trained against untruncated samples)", check=at_least(0))
    temperature: float = option(1.0, "LM sampling temperature for negatives", check=greater_than(0))
    file: str = option("", "read negatives written by `python -m lmlab.core.residual.negatives` (.npz) instead of "
                       "sampling them during training ('' : on the fly)")


@dataclass
class MLMConfig:
    steps: int = option(0, "masked-LM pre-training updates of the BiT on the training windows before NCE (0: none; "
                        "stands in for the paper's RoBERTa initialisation: no RoBERTa weights are loaded)", check=at_least(0))
    mask_prob: float = option(0.15, "fraction of tokens masked (BERT/RoBERTa: 0.15)", check=between(0, 1, lo_open=True, hi_open=True))
    lr: float = option(5e-4, "MLM peak learning rate (AdamW, betas 0.9/0.98, eps 1e-6 as RoBERTa)", check=greater_than(0))
    warmup_steps: int = option(0, "MLM linear warmup updates, then linear decay to 0 at mlm.steps", check=at_least(0))
    batch_size: int = option(0, "windows per MLM update (0: data.batch_size)", check=at_least(0))


@dataclass
class OptimConfig:
    lr: float = option(1e-4, "peak AdamW learning rate of the energy", check=greater_than(0))
    weight_decay: float = option(0.01, "decoupled weight decay", check=at_least(0))
    betas: list[float] = option([0.9, 0.98], "AdamW betas", check=each(between(0, 1, hi_open=True)))
    clip: float = option(1.0, "clip the global gradient norm (0: off)", check=at_least(0))


@dataclass
class ScheduleConfig:
    """The NCE learning-rate schedule and run length: linear warmup, then linear decay to 0 at max_steps (the only
    schedule this trainer has, so train-lm's schedule.name and its other keys are not accepted here)."""
    max_steps: int = option(10000, "NCE updates to train (after the MLM phase, if any); fixed for a run dir: "
                            "the lr reaches 0 there", check=at_least(1))
    warmup_steps: int = option(100, "linear warmup updates, then linear decay to 0 at max_steps", check=at_least(0))


@dataclass
class ValidConfig:
    split: str = option("valid", "split for the real-vs-LM classification accuracy and model selection")
    max_examples: int = option(256, "prefixes evaluated at each validation (0: all)", check=at_least(0))
    patience: int = option(0, "stop NCE training after this many evaluations in a row without a lower validation loss "
                              "(0: train all schedule.max_steps); best.pt, the checkpoint that is scored, is the full "
                              "run's unless its validation loss would have come back down", check=at_least(0))


@dataclass
class Config:
    base_lm: str = option("runs/demo/checkpoints/best.pt", "checkpoint of the frozen base LM written by `lmlab train-lm`")
    data: DataConfig = section(DataConfig, "real text")
    window: WindowConfig = section(WindowConfig, "prefix and continuation lengths")
    energy: EnergyConfig = section(EnergyConfig, "energy network")
    negatives: NegativesConfig = section(NegativesConfig, "noise samples from the base LM")
    mlm: MLMConfig = section(MLMConfig, "optional masked-LM pre-training of the BiT energy")
    optim: OptimConfig = section(OptimConfig, "optimizer")
    schedule: ScheduleConfig = section(ScheduleConfig, "learning-rate schedule and length")
    valid: ValidConfig = section(ValidConfig, "validation")
    run: RunConfig = option(factory=lambda: RunConfig(dir="runs/residual-demo"), help="run dir and checkpointing")
    hardware: HardwareConfig = section(HardwareConfig, "device, precision, compile")
    seed: int = option(1234, "random seed (energy init, window order, LM negatives)", check=between(0, 2**32 - 1))

    RENAMED = {"optim.max_steps": "schedule.max_steps", "optim.warmup_steps": "schedule.warmup_steps",
               "optim.batch_size": "data.batch_size"}  # issue #13: train-lm's names (core/config_renamed.py)
