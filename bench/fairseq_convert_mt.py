"""Convert an lmlab translation checkpoint (standard embeddings) into a fairseq `transformer` checkpoint that
decodes the same translations. Run with the fairseq interpreter:

    $FAIRSEQ_PYTHON bench/fairseq_convert_mt.py LMLAB.pt POSITIONS.pt DATA_BIN SRC TGT OUT.pt

POSITIONS.pt holds {"positions": lmlab's sinusoid table} (a buffer, not in the checkpoint; this interpreter has no
lmlab to rebuild it), written by bench/beam_vs_fairseq.py.

DATA_BIN holds dict.SRC.txt and dict.TGT.txt listing lmlab's tokens 4.. in id order (bench/beam_vs_fairseq.py
writes them), so fairseq id i is lmlab id i except the specials: fairseq <s>=0 <pad>=1 </s>=2 <unk>=3, lmlab
<pad>=0 <s>=1 </s>=2 <unk>=3 (rows 0 and 1 swap).

Two layout differences are bridged exactly:
- positions: lmlab adds fixed sinusoids with sin/cos interleaved; fairseq's sinusoids use another layout, so the
  fairseq model is built with learned positions (`--*-learned-pos`) holding lmlab's table, position p at row
  p + padding_idx + 1 where fairseq's learned positions start;
- the decoder's first input: lmlab starts from <s>, fairseq from </s>. The fairseq decoder gets its own input
  table whose </s> row is lmlab's <s> row (</s> is never fed back: a hypothesis ends there), and an untied output
  projection whose </s> row is lmlab's </s> row. Encoder, decoder input and output are separate tables in
  fairseq; the arithmetic per token is the same as lmlab's shared table.
"""

from __future__ import annotations

import argparse
import sys

import torch
from fairseq_convert import tensor_writer

PADDING_IDX, FS_EOS = 1, 2
LMLAB_BOS = 1


def swap_specials(table: torch.Tensor) -> torch.Tensor:
    """lmlab rows (<pad>, <s>, ...) -> fairseq rows (<s>, <pad>, ...)."""
    out = table.clone()
    out[0], out[1] = table[1], table[0]
    return out


def fairseq_args(cfg: dict, data_bin: str, src: str, tgt: str) -> list[str]:
    """fairseq-train flags for lmlab's model config (the architecture only: nothing is trained)."""
    if cfg["embedding"]["kind"] != "standard" or cfg.get("output_proj_dim", 0):
        raise SystemExit("only the standard embedding converts to fairseq (DeFINE has no fairseq module)")
    n = cfg["max_positions"]
    flags = [data_bin, "--task", "translation", "--source-lang", src, "--target-lang", tgt, "--arch", "transformer",
             "--activation-fn", "relu", "--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0",
             "--encoder-learned-pos", "--decoder-learned-pos",
             "--max-source-positions", str(n), "--max-target-positions", str(n)]
    for side, layers in (("encoder", cfg["encoder_layers"]), ("decoder", cfg["decoder_layers"])):
        flags += [f"--{side}-embed-dim", str(cfg["d_model"]), f"--{side}-ffn-embed-dim", str(cfg["ffn_dim"]),
                  f"--{side}-layers", str(layers), f"--{side}-attention-heads", str(cfg["n_heads"])]
        if cfg["normalize_before"]:
            flags.append(f"--{side}-normalize-before")
    if not cfg["embed_scale"]:
        flags.append("--no-scale-embedding")
    return flags


def convert_state(lm: dict[str, torch.Tensor], fs: dict[str, torch.Tensor], cfg: dict,
                  positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """lmlab state dict -> fairseq's; `positions` (max_positions, d) is lmlab's sinusoid table (not in its state)."""
    out = dict(fs)
    put = tensor_writer(out)

    src_table = swap_specials(lm["src_embed.table.weight"])
    dec_input = swap_specials(lm["tgt_embed.table.weight"])
    dec_input[FS_EOS] = lm["tgt_embed.table.weight"][LMLAB_BOS]  # fairseq's decoder starts from </s>
    put("encoder.embed_tokens.weight", src_table)
    put("decoder.embed_tokens.weight", dec_input)
    put("decoder.output_projection.weight", swap_specials(lm["output.weight"]))
    n = positions.shape[0]
    for side in ("encoder", "decoder"):
        pos = out[f"{side}.embed_positions.weight"].clone()
        pos[PADDING_IDX + 1: PADDING_IDX + 1 + n] = positions
        out[f"{side}.embed_positions.weight"] = pos
    attn = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
    for side, blocks in (("encoder", {"attn": "self_attn"}),
                         ("decoder", {"self_attn": "self_attn", "cross_attn": "encoder_attn"})):
        lns = ["self_attn_layer_norm", "final_layer_norm"] if side == "encoder" else \
            ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"]
        for layer in range(cfg[f"{side}_layers"]):
            src, dst = f"{side}.{layer}.", f"{side}.layers.{layer}."
            for part in ("weight", "bias"):
                for ours, theirs in blocks.items():
                    for a, b in attn.items():
                        put(f"{dst}{theirs}.{b}.{part}", lm[f"{src}{ours}.{a}.{part}"])
                for i, ln in enumerate(lns):
                    put(f"{dst}{ln}.{part}", lm[f"{src}r{i + 1}.ln.{part}"])
                put(f"{dst}fc1.{part}", lm[f"{src}ffn.fc1.{part}"])
                put(f"{dst}fc2.{part}", lm[f"{src}ffn.fc2.{part}"])
    if cfg["normalize_before"]:
        for side, ours in (("encoder", "enc_ln"), ("decoder", "dec_ln")):
            for part in ("weight", "bias"):
                put(f"{side}.layer_norm.{part}", lm[f"{ours}.{part}"])
    return out


def _plain(value):
    """Legacy fairseq architectures keep an argparse.Namespace inside the config; store it as a dict."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def main(lmlab_path: str, positions_path: str, data_bin: str, src: str, tgt: str, out_path: str) -> None:
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    state = torch.load(lmlab_path, map_location="cpu", weights_only=True)
    if state.get("kind") != "seq2seq":
        raise SystemExit(f"{lmlab_path} is not an lmlab translation checkpoint")
    cfg = state["config"]["model"]
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=fairseq_args(cfg, data_bin, src, tgt))
    fs_cfg = convert_namespace_to_omegaconf(args)
    model = tasks.setup_task(fs_cfg.task).build_model(fs_cfg.model)
    positions = torch.load(positions_path, map_location="cpu", weights_only=True)["positions"]
    model.load_state_dict(convert_state(state["model"], model.state_dict(), cfg, positions), strict=True)
    # plain containers, as fairseq-train writes them: the file loads with torch.load(weights_only=True)
    config = _plain(OmegaConf.to_container(fs_cfg, resolve=True, enum_to_str=True))
    history = [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "none", "lr_scheduler_state": {},
                "num_updates": 0}]  # fairseq's loader reads the last entry
    checkpoint_utils.torch_persistent_save({"args": None, "cfg": config, "model": model.state_dict(),
                                            "optimizer_history": history, "extra_state": {}}, out_path)
    print(f"wrote {out_path}: fairseq transformer, {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main(*sys.argv[1:])
