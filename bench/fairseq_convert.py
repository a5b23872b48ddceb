"""Convert an lmlab Transformer LM checkpoint into a fairseq `transformer_lm` checkpoint (same weights).

Run with the fairseq interpreter: `$FAIRSEQ_PYTHON bench/fairseq_convert.py LMLAB.pt TEMPLATE.pt OUT.pt`.
TEMPLATE is any checkpoint fairseq-train wrote for the matching architecture (pre-LN
`--decoder-normalize-before`, `--decoder-learned-pos`, `--no-scale-embedding`, GELU, tied, input/output
dim = embed dim); its config is kept and its weights replaced. The vocabularies must already be aligned
(bench/bench_data.py): token i is the same word on both sides.

Mapping (lmlab -> fairseq): embed.table -> decoder.embed_tokens (= output_projection, tied);
body.pos[i] -> decoder.embed_positions[i + padding_idx + 1] (fairseq's learned positions start after
the padding index); block l: ln1 -> self_attn_layer_norm, attn.qkv -> q_proj/k_proj/v_proj (split in
three along the output dim), attn.proj -> out_proj, ln2 -> final_layer_norm, mlp.0 -> fc1,
mlp.2 -> fc2; body.ln_f -> decoder.layer_norm. fairseq's tied output has no bias, so the lmlab output
bias must be zero (the bench zeroes it in the lmlab checkpoint it evaluates too).
"""

from __future__ import annotations

import sys

import torch


def tensor_writer(out: dict[str, torch.Tensor]):
    """put(key, value): replace fairseq tensor `key` of `out` by lmlab's `value`, which must have its shape."""
    def put(key: str, value: torch.Tensor) -> None:
        if key not in out:
            raise KeyError(f"fairseq model has no {key}")
        if out[key].shape != value.shape:
            raise ValueError(f"{key}: fairseq {tuple(out[key].shape)} vs lmlab {tuple(value.shape)}")
        out[key] = value.to(out[key].dtype).clone()
    return put


def convert_state(lm: dict[str, torch.Tensor], template: dict[str, torch.Tensor], padding_idx: int = 1) -> dict[str, torch.Tensor]:
    bias = lm.get("output.bias")
    if bias is not None and bias.abs().max() > 0:
        raise ValueError("the lmlab output bias is non-zero; fairseq's tied output has none (zero it first)")
    out = {k: v.clone() for k, v in template.items()}
    put = tensor_writer(out)

    put("decoder.embed_tokens.weight", lm["embed.table.weight"])
    if "decoder.output_projection.weight" in out:
        put("decoder.output_projection.weight", lm["embed.table.weight"])
    pos = out["decoder.embed_positions.weight"].clone()
    n = lm["body.pos.weight"].shape[0]
    if pos.shape[0] < n + padding_idx + 1:
        raise ValueError(f"fairseq has {pos.shape[0]} position rows, lmlab needs {n} + {padding_idx + 1}")
    pos[padding_idx + 1: padding_idx + 1 + n] = lm["body.pos.weight"]
    out["decoder.embed_positions.weight"] = pos
    layers = sorted({int(k.split(".")[2]) for k in lm if k.startswith("body.blocks.")})
    for l in layers:
        src, dst = f"body.blocks.{l}.", f"decoder.layers.{l}."
        for part in ("weight", "bias"):
            put(dst + f"self_attn_layer_norm.{part}", lm[src + f"ln1.{part}"])
            put(dst + f"final_layer_norm.{part}", lm[src + f"ln2.{part}"])
            q, k, v = lm[src + f"attn.qkv.{part}"].chunk(3, dim=0)
            put(dst + f"self_attn.q_proj.{part}", q)
            put(dst + f"self_attn.k_proj.{part}", k)
            put(dst + f"self_attn.v_proj.{part}", v)
            put(dst + f"self_attn.out_proj.{part}", lm[src + f"attn.proj.{part}"])
            put(dst + f"fc1.{part}", lm[src + f"mlp.0.{part}"])
            put(dst + f"fc2.{part}", lm[src + f"mlp.2.{part}"])
    for part in ("weight", "bias"):
        put(f"decoder.layer_norm.{part}", lm[f"body.ln_f.{part}"])
    return out


def main(lmlab_path: str, template_path: str, out_path: str) -> None:
    lm = torch.load(lmlab_path, map_location="cpu", weights_only=True)["model"]
    # fairseq checkpoints pickle their config objects: load the one our own fairseq-train run wrote
    ckpt = torch.load(template_path, map_location="cpu", weights_only=False)
    ckpt["model"] = convert_state(lm, ckpt["model"])
    for key in ("last_optimizer_state", "extra_state"):
        ckpt.pop(key, None)
    ckpt["extra_state"] = {"train_iterator": {"epoch": 1}, "val_loss": None}
    torch.save(ckpt, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: fairseq_convert.py LMLAB.pt FAIRSEQ_TEMPLATE.pt OUT.pt")
    main(*sys.argv[1:])
