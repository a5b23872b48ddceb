"""lmlab cache-define: a trained DeFINE LM's embedding, cached as a plain V x d lookup table (an inference checkpoint)."""

from __future__ import annotations

from pathlib import Path

import typer

from lmlab.cli.common import handle_errors, strict_json
from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
from lmlab.core.errors import LmlabError


@handle_errors
def cache_define(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="train-lm checkpoint of an LM with a DeFINE embedding, e.g. runs/X/checkpoints/best.pt"),
    out: str = typer.Option(..., "--out", "-o", help="Where to write the cached checkpoint (.pt)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
):
    """Cache a DeFINE embedding as a lookup table: after training the unit is a fixed function of the token id
    (DeFINE §3.3), so OUT.pt scores and samples exactly as IN.pt with a plain embedding lookup.

    \b
    OUT.pt is for eval-ppl and sample (optimizer state is dropped; it cannot be resumed). Prints one JSON line:
    the input-embedding parameters before and after. Translation checkpoints are not cached yet.

    \b
    Example:
      lmlab cache-define -c runs/demo-define/checkpoints/best.pt -o runs/demo-define/cached.pt
      lmlab eval-ppl -c runs/demo-define/cached.pt --split valid
    """
    from lmlab.core.models.define import cache_define_checkpoint

    if Path(out).exists() and not force:
        raise LmlabError(f"--out {out} exists; pass --force to overwrite it")
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise LmlabError("--out is the input checkpoint: write the cached copy beside it")
    ckpt = load_checkpoint(checkpoint, ("lm", "seq2seq"))
    if ckpt["kind"] == "seq2seq":
        raise LmlabError(f"{checkpoint} is a translation checkpoint: cache-define caches language models only so far")
    cached = cache_define_checkpoint(ckpt)
    before = sum(v.numel() for k, v in ckpt["model"].items() if k.removeprefix("_orig_mod.").startswith("embed."))
    after = sum(v.numel() for k, v in cached["model"].items() if k.startswith("embed."))
    save_checkpoint(out, cached, "lm")
    print(strict_json({"checkpoint": checkpoint, "out": out, "embedding_params_before": before,
                       "embedding_params_after": after}))
