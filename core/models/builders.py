"""Builder functions: config -> parts -> model. A new part registers here; model classes never branch on it.

Registries map a config `kind` to "module:function" strings imported on first use, so optional
parts (DeFINE, adaptive) cost nothing when unused.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch.nn as nn

from lmlab.core.errors import LmlabError
from lmlab.core.models.config import EmbeddingConfig, ModelConfig, OutputConfig
from lmlab.core.models.embeddings import LinearOutput, TokenEmbedding
from lmlab.core.models.lm import LanguageModel
from lmlab.core.models.lstm import LSTMBody
from lmlab.core.models.transformer import TransformerBody


def build_standard_embedding(cfg: EmbeddingConfig, vocab_size: int, d_model: int, model: ModelConfig) -> nn.Module:
    init_range = model.lstm.init_range if model.kind == "lstm" else None
    return TokenEmbedding(vocab_size, d_model, dim=cfg.dim, init_range=init_range)


def build_linear_output(cfg: OutputConfig, vocab_size: int, d_model: int, embed: nn.Module, model: ModelConfig) -> nn.Module:
    tied = None
    if cfg.tie:
        tied = getattr(embed, "tie_weight", None)
        if tied is None:
            raise LmlabError("model.output.tie=true needs an input embedding whose table is d_model wide "
                             "(standard embedding with embedding.dim=0 or = d_model)")
        if tied.size(1) != d_model:
            raise LmlabError(f"model.output.tie=true: the tied table is {tied.size(1)} wide but the context model's "
                             f"output is {d_model} (model.lstm.last_hidden_size): make them equal")
    init_range = model.lstm.init_range if model.kind == "lstm" else None
    output = LinearOutput(d_model, vocab_size, tied_weight=tied, bias=cfg.bias, init_range=init_range)
    if model.kind == "lstm" and model.lstm.bias_init == "tensorflow" and output.bias is not None:
        nn.init.uniform_(output.bias, -init_range, init_range)  # the official softmax_b: the scope's U(±init_scale)
    output.loss_chunk = cfg.loss_chunk
    return output


EMBEDDINGS: dict[str, Callable | str] = {
    "standard": build_standard_embedding,
    "adaptive": "lmlab.core.models.adaptive:build_adaptive_input",
    "define": "lmlab.core.models.define:build_define_embedding",
}
OUTPUTS: dict[str, Callable | str] = {
    "linear": build_linear_output,
    "adaptive": "lmlab.core.models.adaptive:build_adaptive_softmax",
}
BODIES: dict[str, Callable] = {
    "lstm": lambda m: LSTMBody(m.d_model, m.n_layers, m.lstm),
    "transformer": lambda m: TransformerBody(m.d_model, m.n_layers, m.transformer),
}


def _resolve(registry: dict, kind: str, what: str) -> Callable:
    if kind not in registry:
        raise LmlabError(f"unknown {what} '{kind}' (known: {', '.join(registry)})")
    entry = registry[kind]
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = getattr(importlib.import_module(module), name)
    return entry


def build_input_embedding(model: ModelConfig, vocab_size: int) -> nn.Module:
    return _resolve(EMBEDDINGS, model.embedding.kind, "embedding")(model.embedding, vocab_size, model.d_model, model)


def build_output_layer(model: ModelConfig, vocab_size: int, embed: nn.Module, d_in: int = 0) -> nn.Module:
    """d_in: width of the context model's output (0: d_model; an LSTM's last_hidden_size may make it narrower)."""
    return _resolve(OUTPUTS, model.output.kind, "output layer")(model.output, vocab_size, d_in or model.d_model, embed, model)


def build_language_model(model: ModelConfig, vocab_size: int) -> LanguageModel:
    if model.ralm_base:
        return _build_ralm(model, vocab_size)
    body = _resolve(BODIES, model.kind, "model kind")(model)
    embed = build_input_embedding(model, vocab_size)
    output = build_output_layer(model, vocab_size, embed, getattr(body, "out_dim", model.d_model))
    embed_drop = model.lstm.embed_drop if model.kind == "lstm" else 0.0
    return LanguageModel(embed, body, output, embed_drop=embed_drop)


def _build_ralm(model: ModelConfig, vocab_size: int):
    """RALM (core/models/residual_lm.py): the frozen LM of model.ralm_base plus a residual built from the rest of
    model.*; a checkpoint of it holds both, but rebuilding it reads the base checkpoint's config again."""
    import dataclasses

    from lmlab.core.config import from_dict
    from lmlab.core.generate import load_lm
    from lmlab.core.models.residual_lm import build_ralm

    base, _, info = load_lm(model.ralm_base)
    if info["vocab_size"] != vocab_size:
        raise LmlabError(f"model.ralm_base {model.ralm_base} has a vocabulary of {info['vocab_size']}, the data "
                         f"{vocab_size}: train the RALM on the base LM's data dir")
    base_cfg = from_dict(ModelConfig, info["config"]["model"], "model")
    residual_cfg = dataclasses.replace(model, ralm_base="")
    residual = build_language_model(residual_cfg, vocab_size)
    ralm = build_ralm(residual, base, same_architecture=dataclasses.replace(base_cfg, ralm_base="") == residual_cfg)
    ralm.base_tokenizer_sha256 = info.get("tokenizer_sha256")  # the trainer checks its data dir against it
    return ralm
