"""The fused chunked output layer + loss (model.output.loss_chunk, core/models/fused_ce.py) against the plain
logits + cross-entropy, forward and backward, side by side in one run: time per step as a ratio (rounds alternate,
median and min-max of the per-round ratios) and each arm's peak RSS in its own process. Needs quiet cores.

    python bench/fused_ce.py --tokens 700 --dim 650 --vocab 10000 --chunk 1024 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_arm(tokens: int, dim: int, vocab: int, chunk: int, steps: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from lmlab.core.models.fused_ce import chunked_linear_cross_entropy
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    h = torch.randn(tokens, dim, requires_grad=True)
    w = (torch.randn(vocab, dim) * 0.05).requires_grad_()
    b = torch.zeros(vocab, requires_grad=True)
    t = torch.randint(0, vocab, (tokens,))

    def step():
        nll = (chunked_linear_cross_entropy(h, w, b, t, chunk) if chunk else
               F.cross_entropy(F.linear(h, w, b), t, reduction="none"))
        nll.mean().backward()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return {"s_per_step": (time.perf_counter() - t0) / steps,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=700, help="rows of one update (PTB 2x650: 20 x 35)")
    p.add_argument("--dim", type=int, default=650)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arm", type=int, default=None, help=argparse.SUPPRESS)  # internal: one arm in this process
    a = p.parse_args()
    if a.arm is not None:
        print(json.dumps(one_arm(a.tokens, a.dim, a.vocab, a.arm, a.steps, a.threads)))
        return
    runs: dict[str, list[dict]] = {"plain": [], "fused": []}
    for _ in range(a.rounds):  # alternate the arms, each in a fresh process (its own peak RSS)
        for name, chunk in (("plain", 0), ("fused", a.chunk)):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--arm", str(chunk)], capture_output=True,
                                 text=True, check=True)
            runs[name].append(json.loads(out.stdout))
    ratios = sorted(p["s_per_step"] / f["s_per_step"] for p, f in zip(runs["plain"], runs["fused"]))
    print(json.dumps({"shape": {"tokens": a.tokens, "dim": a.dim, "vocab": a.vocab}, "chunk": a.chunk,
                      "threads": a.threads, "speedup_median": ratios[len(ratios) // 2],
                      "speedup_min_max": [ratios[0], ratios[-1]],
                      "peak_rss_mb": {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()},
                      "s_per_step_median": {k: sorted(r["s_per_step"] for r in v)[len(v) // 2] for k, v in runs.items()}}))


if __name__ == "__main__":
    main()
