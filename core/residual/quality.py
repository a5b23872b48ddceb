"""Generation quality of the residual joint model against its base LM, without human raters (issue #18).

For each of the split's first `max_examples` windows: the real continuation, one base-LM top-k sample, and one
Algorithm 1 sample (the same top-k, `candidates` LM candidates resampled by exp(-E)), all of the energy's
continuation length from the window's real prefix. Each system gets distinct-n, seq-rep-n and the held-out
accuracy of a real-vs-generated n-gram classifier (core/textquality.py; odd windows held out); the real
continuations give the reference levels. The paper's human evaluation found joint samples preferred; this is the
automatic counterpart.

    python -m lmlab.core.residual.quality --checkpoint runs/residual-demo/checkpoints/best.pt --split test
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch

from lmlab.core.errors import LmlabError
from lmlab.core.generate import sample_continuations
from lmlab.core.residual.joint import ResidualModel
from lmlab.core.residual.sample import joint_sample
from lmlab.core.residual.windows import Windows
from lmlab.core.textquality import quality


@torch.no_grad()
def generate_rows(model: ResidualModel, windows: Windows, *, count: int, candidates: int, top_k: int, batch_size: int,
                  seed: int, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """(count, C) token rows: the real continuations, base-LM samples and Algorithm 1 samples of the first `count`
    windows' prefixes, and Algorithm 1's effective number of candidates per window."""
    C = model.continuation_len
    lm_gen = torch.Generator(device=device).manual_seed(seed)  # one stream per system: neither's draws move the other's
    joint_gen = torch.Generator(device=device).manual_seed(seed + 1)
    parts: dict[str, list[np.ndarray]] = {"real": [], "base_lm": [], "joint": [], "effective_candidates": []}
    for start in range(0, count, batch_size):
        prefixes, conts = windows.get(np.arange(start, min(start + batch_size, count)), device)
        parts["real"].append(conts.cpu().numpy())
        parts["base_lm"].append(sample_continuations(model.lm, prefixes, max_new_tokens=C, top_k=top_k,
                                                     generator=lm_gen).cpu().numpy())
        res = joint_sample(model, prefixes, candidates=candidates, top_k=top_k, max_new_tokens=C, generator=joint_gen)
        parts["joint"].append(res["tokens"][:, 0].cpu().numpy())
        parts["effective_candidates"].append(res["effective_candidates"][:, 0].cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def generation_quality(model: ResidualModel, windows: Windows, *, max_examples: int, candidates: int, top_k: int,
                       batch_size: int, seed: int, device: str | torch.device = "cpu") -> dict[str, Any]:
    count = len(windows) if max_examples <= 0 else min(max_examples, len(windows))
    if count < 4:
        raise LmlabError(f"{count} windows: the classifier needs at least 4 (2 to train on, 2 held out)")
    rows = generate_rows(model, windows, count=count, candidates=candidates, top_k=top_k, batch_size=batch_size,
                         seed=seed, device=device)
    held_out = np.arange(count) % 2 == 1
    return {"windows": count, "continuation_len": model.continuation_len, "top_k": top_k, "candidates": candidates,
            "seed": seed, "real": quality(rows["real"]),
            "base_lm": quality(rows["base_lm"], rows["real"], held_out),
            "joint": {**quality(rows["joint"], rows["real"], held_out),
                      "effective_candidates_mean": float(rows["effective_candidates"].mean())}}


def main(argv: list[str] | None = None) -> int:
    import json

    from lmlab.core.checkpoint import load_checkpoint
    from lmlab.core.data import DataDir, trained_data_dir
    from lmlab.core.residual.joint import load_residual

    p = argparse.ArgumentParser(prog="python -m lmlab.core.residual.quality", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a train-ebm --kind residual checkpoint")
    p.add_argument("--data", default=None, help="data dir (default: the one the energy was trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-examples", type=int, default=0, help="windows to generate for (0: every window)")
    p.add_argument("--candidates", type=int, default=32, help="Algorithm 1's LM candidates per prefix")
    p.add_argument("--top-k", type=int, default=10, help="both systems sample from the LM's top k tokens (0: all)")
    p.add_argument("--batch-size", type=int, default=16, help="prefixes per call (memory only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    a = p.parse_args(argv)
    try:
        if a.candidates < 1 or a.batch_size < 1 or a.top_k < 0 or a.max_examples < 0:
            raise LmlabError("--candidates and --batch-size must be >= 1, --top-k and --max-examples >= 0")
        from lmlab.core.distributed import pick_device
        device = str(pick_device(a.device))
        state = load_checkpoint(a.checkpoint, "residual-ebm")
        model, _, info = load_residual(state, device)
        data = DataDir(a.data or trained_data_dir(state, a.checkpoint))
        if info.get("tokenizer_sha256") and info["tokenizer_sha256"] != data.tokenizer_sha256:
            raise LmlabError(f"data dir {data.path} has another tokenizer than the checkpoint {a.checkpoint}")
        windows = Windows(data.split(a.split), model.prefix_len, model.continuation_len, f"{data.path}:{a.split}")
        out = generation_quality(model, windows, max_examples=a.max_examples, candidates=a.candidates, top_k=a.top_k,
                                 batch_size=a.batch_size, seed=a.seed, device=device)
    except LmlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": a.checkpoint, "split": a.split, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
