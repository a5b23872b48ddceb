"""lmlab cache-define: a trained DeFINE LM's embedding, cached as a plain V x d lookup table (an inference checkpoint)."""

from __future__ import annotations

from pathlib import Path

import typer

from lmlab.cli.common import handle_errors, strict_json
from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
from lmlab.core.errors import LmlabError


@handle_errors
def cache_define(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="train-lm checkpoint (LM or translation) with a DeFINE embedding, e.g. runs/X/checkpoints/best.pt"),
    out: str = typer.Option(..., "--out", "-o", help="Where to write the cached checkpoint (.pt)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
):
    """Cache a DeFINE embedding as a lookup table: after training the unit is a fixed function of the token id
    (DeFINE §3.3), so OUT.pt scores and samples exactly as IN.pt with a plain embedding lookup.

    \b
    OUT.pt is for eval-ppl, sample and bleu (optimizer state is dropped; it cannot be resumed). Prints one JSON
    line: the input-embedding parameters before and after. A translation model's encoder and decoder units become
    tables (one if they were one unit); an output tied to the DeFINE Map keeps a copy of it.

    \b
    Example:
      lmlab cache-define -c runs/demo-define/checkpoints/best.pt -o runs/demo-define/cached.pt
      lmlab eval-ppl -c runs/demo-define/cached.pt --split valid
      lmlab cache-define -c runs/mt-define/checkpoints/best.pt -o runs/mt-define/cached.pt
    """
    from lmlab.core.models.define import cache_define_checkpoint

    if Path(out).exists() and not force:
        raise LmlabError(f"--out {out} exists; pass --force to overwrite it")
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise LmlabError("--out is the input checkpoint: write the cached copy beside it")
    ckpt = load_checkpoint(checkpoint, ("lm", "seq2seq"))
    if ckpt["kind"] == "seq2seq":  # encoder and decoder inputs; an output tied to the Map keeps it as its own table
        from lmlab.core.seq2seq.model import cache_define_seq2seq
        cached, prefixes = cache_define_seq2seq(ckpt), ("src_embed.", "tgt_embed.")
    else:
        cached, prefixes = cache_define_checkpoint(ckpt), ("embed.",)

    def embedding_params(state: dict) -> int:  # shared tensors once
        seen = {id(v): v.numel() for k, v in state.items() if k.removeprefix("_orig_mod.").startswith(prefixes)}
        return sum(seen.values())

    before, after = embedding_params(ckpt["model"]), embedding_params(cached["model"])
    save_checkpoint(out, cached, ckpt["kind"])
    print(strict_json({"checkpoint": checkpoint, "out": out, "embedding_params_before": before,
                       "embedding_params_after": after}))
