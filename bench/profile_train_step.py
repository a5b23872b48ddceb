"""Where one training step of the benchmark Transformer LM spends its time (torch profiler, CPU).

    python bench/profile_train_step.py --batch 8 --steps 2 [--precision bf16] [--loss-chunk 0]

Builds the model of `make bench` (4 x 256, FFN 1024, tied, 33,280-word vocabulary) with lmlab's builders,
runs one warm-up step and profiles `--steps` more (forward, backward, clipping, AdamW), then prints the
ops by self CPU time. Shares are what to read: absolute times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_arms import TF, TF_LOSS_CHUNK  # noqa: E402
from lmlab.core.models.builders import build_language_model  # noqa: E402
from lmlab.core.models.config import ModelConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8, help="256-token samples per step")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=33280)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--loss-chunk", type=int, default=TF_LOSS_CHUNK,
                    help="model.output.loss_chunk, the fused output layer (make bench's CPU arms; 0: the logits path)")
    args = ap.parse_args()
    cfg = ModelConfig(kind="transformer", d_model=TF["d"], n_layers=TF["layers"])
    cfg.transformer.n_heads, cfg.transformer.ffn_dim = TF["heads"], TF["ffn"]
    cfg.transformer.context, cfg.transformer.dropout = TF["context"], TF["dropout"]
    cfg.output.tie, cfg.output.bias = True, False  # make bench's model: fairseq's tied output has no bias
    cfg.output.loss_chunk = args.loss_chunk
    model = build_language_model(cfg, args.vocab).train()
    opt = torch.optim.AdamW(model.parameters(), lr=TF["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    x = torch.randint(0, args.vocab, (args.batch, TF["context"]))
    y = torch.randint(0, args.vocab, (args.batch, TF["context"]))
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext

    def step() -> None:
        with cast():
            nll, _ = model(x, y)
        nll.float().mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TF["clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - t0) / args.steps
    print(f"{seconds:.2f} s/step, {args.batch * TF['context'] / seconds:,.0f} tokens/s (under the profiler)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
