"""Configuration of the training objectives beyond plain cross-entropy (IMM, KN noising)."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import option


@dataclass
class IMMConfig:
    weight: float = option(0.2, "lambda: weight of the induced-model loss (paper/official code: 0.2)")
    k: int = option(10, "k: full contexts sampled per restricted context (Algorithm 1)")
    j: int = option(0, "j: the last j positions of every sequence in an IMM batch are the restricted contexts (batch_size x j of them); 0: all positions (official code: unrolls_to_use = 35 = all)")
    context: int = option(0, "sampled_start = zero: tokens in each sampled full context, a training-stream window ending in the restricted token (0: data.bptt; capped at the Transformer's context)")
    sampled_start: str = option("zero", "where a sampled context starts: zero = a full window from a zero state; carried = the official code: "
                                "at BPTT position i, the last i+1 tokens of a window, from the LSTM state the batch row carried in",
                                choices=("zero", "carried"))
    clip: str = option("total", "gradient clipping with IMM on: total = optim.clip on the CE + IMM gradient; main = the official code: "
                       "clip the CE gradient alone, then add the IMM gradient unclipped", choices=("total", "main"))
    embedding_grad: str = option("plain", "input-embedding gradient with IMM on: plain = that of CE + IMM; official = the official code's "
                                 "rule: 2 x the clipped CE gradient, plus the smoothed term's, none from sampled IMM (needs clip = main, untied)",
                                 choices=("plain", "official"))
    smoothed_forward: str = option("shared", "the smoothed term's forward: shared = the CE pass's (same dropout masks); separate = "
                                   "the official code: a second pass from the same carried state with its own masks", choices=("shared", "separate"))
    between: str = option("smoothed", "on the other IMM-on batches: smoothed = the official code's single-sample term, lambda * CE((1-gamma(v)) onehot(y) + gamma(v) p_cont, Q); none = plain CE",
                          choices=("smoothed", "none"))
    every: int = option(5, "apply the sampled IMM term (k contexts per restricted context) on one batch in this many (official code: 5)")
    sample_phase: str = option("switch_on", "which IMM-on batches get the sampled term: switch_on = every `every`-th one counted from the "
                               "switch-on, across epochs; epoch = the official code: window w of epoch e (both from 0) when w mod every = "
                               "e mod every, so the phase moves each epoch", choices=("switch_on", "epoch"))
    mask_order: str = option("main_first", "with smoothed_forward = separate, which pass draws its dropout masks first: main_first = the CE "
                             "pass; smoothed_first = the official code (it builds the IMM gradients before the main loss)",
                             choices=("main_first", "smoothed_first"))
    start_below_ppl: float = option(90.0, "switch IMM on once validation perplexity falls below this (0: from the start)")
    lr_at_start: float = option(0.5, "learning rate set when IMM switches on (<= 0: keep the current one)")
    algorithm: str = option("sampled", "Algorithm 1 (sampled, batched) or Algorithm 2 (serialized, one context at a time)", choices=("sampled", "serialized"))
    bigram: str = option("", "path of the KN bigram file (default: <data dir>/kn_bigram.safetensors, built if missing)")


@dataclass
class NoisingConfig:
    gamma: float = option(0.2, "KN noising (Xie et al. 2017): base replacement probability, scaled by the bigram discount mass")
    discount: str = option("absolute", "replacement probability of a position whose input is v: absolute = gamma * N1+(v.)/c(v) (the paper's gamma_AD); "
                           "modified = gamma * the modified-KN missing mass of v", choices=("absolute", "modified"))
