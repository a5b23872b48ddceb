"""Shared pieces of the speed benchmarks: timed subprocesses with the peak RSS of their whole process
tree, A/B alternation with a median ratio, the machine's matmul ceiling, and the Markdown table writer
for the marked region of docs/results.md. No timing happens at import; tests exercise the pure parts.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

START_MARK = "<!-- bench:start -->"
END_MARK = "<!-- bench:end -->"


# ---- statistics ------------------------------------------------------------------------------------
class Ratio(float):
    """A median ratio that keeps the spread of the per-round ratios it came from (`lo`, `hi`): tables print
    "median (lo–hi)", so one noisy round is visible next to the figure."""

    def __new__(cls, value: float, lo: float = float("nan"), hi: float = float("nan")):
        obj = super().__new__(cls, value)
        obj.lo, obj.hi = lo, hi
        return obj


def median_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """Median of the per-round ratios a[i] / b[i] (rounds run A, B alternately, so each pair saw the
    same background load), with their min and max; pairs with a missing or zero b are ignored. NaN when
    no pair is usable."""
    ratios = [x / y for x, y in zip(a, b) if x is not None and y]
    return Ratio(statistics.median(ratios), min(ratios), max(ratios)) if ratios else Ratio(float("nan"))


def median(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def alternate(arms: dict[str, Callable[[], dict]], reps: int, log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Run every arm once per round, round after round (A B C A B C ...), so slow drifts in the
    machine's load hit every arm alike. An arm returns a dict of measurements, or {"skip": reason}."""
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(reps):
        for name, fn in arms.items():
            t = time.perf_counter()
            out = fn()
            results[name].append(out)
            log(f"  round {r + 1}/{reps} {name}: {_short(out)} ({time.perf_counter() - t:.0f} s)")
    return results


def _short(out: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()
                     if not isinstance(v, (list, dict)))


# ---- timed subprocesses -----------------------------------------------------------------------------
@dataclasses.dataclass
class ProcResult:
    rc: int
    seconds: float
    peak_rss_mb: float  # sum over the process tree (workers included), sampled every `interval` s
    stdout: str
    stderr: str


def _tree_pids(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_timed(cmd: Sequence[str], env: dict | None = None, cwd: str | None = None, interval: float = 0.1,
              timeout: float | None = None) -> ProcResult:
    """Run `cmd`; wall seconds and the peak of the summed RSS of the process and all its descendants."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    peak = [0]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], sum(_rss_kb(p) for p in _tree_pids(proc.pid)))
            done.wait(interval)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    finally:
        done.set()
        poller.join()
    return ProcResult(proc.returncode, time.perf_counter() - t0, peak[0] / 1024, out, err)


# ---- the machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def matmul_gflops(dtype_name: str = "float32", n: int = 4096, seconds: float = 3.0, device: str = "cpu") -> tuple[float, int]:
    """Dense n x n matmul throughput (2 n^3 FLOPs each): the practical ceiling for MFU on this machine.
    Returns (GFLOP/s, n used). Probes at 256^2 and 1024^2 come first: where the dtype has no fast kernel (bf16
    on a CPU without AVX-512 BF16/AMX runs ~100x slower than fp32) n stays small so the probe stays short."""
    import torch
    dtype = getattr(torch, dtype_name)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def rate(size: int, budget: float) -> float:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        torch.matmul(a, b)  # warm-up (oneDNN/cuBLAS kernel selection)
        sync()
        count, t0 = 0, time.perf_counter()
        while True:
            torch.matmul(a, b)
            count += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= budget and count >= 1:
                return 2 * size ** 3 * count / elapsed / 1e9

    size, gflops = 256, rate(256, 0.5)
    for bigger, limit in ((1024, 5.0), (n, seconds / 2)):
        if bigger <= size or 2 * bigger ** 3 / (gflops * 1e9) > limit:  # one product would take too long
            break
        size, gflops = bigger, rate(bigger, seconds if bigger == n else 0.5)
    return gflops, size


# Dense bf16 peaks (TFLOP/s, no sparsity) for GPU MFU; an unknown GPU falls back to the measured matmul.
GPU_BF16_PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0,
                        "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0, "V100": 125.0}


def gpu_peak_tflops(name: str) -> float | None:
    for key in sorted(GPU_BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return GPU_BF16_PEAK_TFLOPS[key]
    return None


# ---- the results table ----------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            if v != v:
                return "—"
            text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
            if isinstance(v, Ratio) and v.lo == v.lo and v.lo != v.hi:
                text += f" ({v.lo:.3g}–{v.hi:.3g})"
            return text
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_region(text: str, body: str) -> str:
    """`text` with everything between the bench markers replaced by `body`; the markers are appended
    at the end when absent. Everything outside the markers is kept byte for byte."""
    block = f"{START_MARK}\n{body.strip()}\n{END_MARK}"
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(END_MARK):]
    if start >= 0 or end >= 0:
        raise ValueError("docs/results.md has only one of the bench markers; fix it by hand")
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return text + sep + block + "\n"


def read_region(path: str | Path) -> str:
    """The current body between the bench markers ('' when the file or the markers are absent)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = text.find(START_MARK), text.find(END_MARK)
    return text[start + len(START_MARK): end].strip() if 0 <= start < end else ""


def write_region(path: str | Path, body: str) -> None:
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    tmp = path.with_suffix(path.suffix + ".bench-tmp")
    tmp.write_text(replace_region(old, body), encoding="utf-8")
    os.replace(tmp, path)
