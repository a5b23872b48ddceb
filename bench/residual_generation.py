"""Cost of the residual EBM's Algorithm 1 (top-k joint sampling) against one batched base-LM sampling pass.

Both draw 32 continuations per prefix from the base LM with the same top-k (KV cache / carried LSTM state);
Algorithm 1 also scores the 32 candidates with the energy and resamples one. Prints one JSON object.

    python bench/residual_generation.py runs/residual-demo/checkpoints/best.pt --data data/demo --prefixes 8

With --memory-prompts 16,64,256 it also runs `lmlab sample`'s residual path (core/residual/sample.py sample_lines,
--batch-size prompts per Algorithm 1 call) on that many test prefixes, each count in a fresh process, and reports
each process's peak RSS: flat in the number of prompts when the batching bounds the memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.data import DataDir
from lmlab.core.generate import sample_continuations
from lmlab.core.residual.joint import load_residual
from lmlab.core.residual.sample import joint_sample
from lmlab.core.residual.windows import Windows


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def probe(a) -> None:
    """One process: sample_lines on the first N test prefixes (as text) -> its own peak RSS. The prompts come from the
    data dir alone, so the only model in the process is the one sample_lines builds."""
    from lmlab.core.residual.sample import sample_lines
    state = load_checkpoint(a.checkpoint, "residual-ebm")
    data, window = DataDir(a.data), state["config"]["window"]
    windows = Windows(data.split(a.split), window["prefix_len"], window["continuation_len"])
    prefixes, _ = windows.get(np.arange(a.probe), "cpu")
    prompts = [data.tokenizer.decode(row.tolist()) for row in prefixes]
    t0 = time.perf_counter()
    sample_lines(state, prompts, num_samples=1, candidates=a.candidates, top_k=a.top_k, seed=0, device=a.device,
                 batch_size=a.batch_size)
    print(json.dumps({"prompts": a.probe, "batch_size": a.batch_size, "seconds": round(time.perf_counter() - t0, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def memory_sweep(a) -> list[dict]:
    rows = []
    for n in (int(x) for x in a.memory_prompts.split(",")):
        cmd = [sys.executable, __file__, a.checkpoint, "--data", a.data, "--split", a.split, "--candidates",
               str(a.candidates), "--top-k", str(a.top_k), "--batch-size", str(a.batch_size), "--device", a.device,
               "--probe", str(n)] + (["--threads", str(a.threads)] if a.threads else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", default="data/demo")
    p.add_argument("--split", default="test")
    p.add_argument("--prefixes", type=int, default=8)
    p.add_argument("--candidates", type=int, default=32)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-prompts", default="", help="comma-separated prompt counts for the peak-memory sweep")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per Algorithm 1 call in the memory sweep")
    p.add_argument("--probe", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.probe:
        return probe(a)
    model, _, _ = load_residual(load_checkpoint(a.checkpoint, "residual-ebm"), a.device)
    windows = Windows(DataDir(a.data).split(a.split), model.prefix_len, model.continuation_len)
    prefixes, _ = windows.get(np.arange(a.prefixes), a.device)
    C = model.continuation_len
    gen = torch.Generator(device=a.device).manual_seed(0)
    lm_s = timed(lambda: sample_continuations(model.lm, prefixes, num_samples=a.candidates, max_new_tokens=C,
                                              top_k=a.top_k, generator=gen), a.repeats)
    joint_s = timed(lambda: joint_sample(model, prefixes, candidates=a.candidates, top_k=a.top_k, max_new_tokens=C,
                                         generator=gen), a.repeats)
    print(json.dumps({"prefixes": a.prefixes, "candidates": a.candidates, "top_k": a.top_k, "continuation_len": C,
                      "threads": torch.get_num_threads(), "device": a.device,
                      "lm_pass_s": lm_s, "algorithm1_s": joint_s, "ratio": joint_s / lm_s,
                      "energy_overhead_s": joint_s - lm_s, "load_avg": [round(x, 2) for x in os.getloadavg()],
                      **({"memory": memory_sweep(a)} if a.memory_prompts else {})}))


if __name__ == "__main__":
    main()
