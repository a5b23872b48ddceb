"""lmlab against fairseq (and pytorch/examples' word_language_model) on the same data and model sizes.

    python bench/vs_fairseq.py                    # full: < 20 min on 2 quiet CPU cores
    BENCH_QUICK=1 python bench/vs_fairseq.py      # ~3 min smoke version (smaller inputs, 1 round)
    python bench/vs_fairseq.py --device cuda --precision bf16   # GPU mode: MFU against the GPU's bf16 peak

Every comparison runs its arms alternately (A B A B ...) and reports the median of the per-round ratios.
The Markdown goes to stdout; `make bench` stores it in the record results/bench.json, and `make results`
puts it in docs/results.md (with --results FILE it replaces the bench region of FILE directly). fairseq runs from its own interpreter
(FAIRSEQ_PYTHON, default /work/venv-fairseq/bin/python); without it the fairseq column says why.
Method and where the time goes: docs/bench.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data  # noqa: E402
import lm_arms as arms  # noqa: E402
from bench_common import (alternate, cpu_model, gpu_peak_tflops, load_average, markdown_table, matmul_gflops,  # noqa: E402
                          median, median_ratio, read_region, write_region)
from fairseq_env import find_fairseq  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Sizes:
    prep_mb: float  # text for the prep comparison
    prep_reps: int
    train_updates: int  # per run, warm-up included
    train_warmup: int
    train_batch: int  # 256-token samples per update
    train_reps: int
    valid_lines: int
    test_lines: int
    eval_reps: int
    lstm_updates: int
    lstm_warmup: int
    lstm_reps: int


MODES = {
    "full": Sizes(105, 2, 5, 2, 32, 3, 300, 400, 3, 30, 6, 3),
    "quick": Sizes(10, 1, 3, 1, 32, 1, 100, 120, 1, 25, 5, 1),
    "tiny": Sizes(1, 1, 3, 1, 2, 1, 20, 30, 1, 8, 2, 1),  # for debugging the harness itself
}


def versions(fairseq) -> dict[str, str]:
    import torch
    from lmlab import __version__
    return {"torch": torch.__version__, "lmlab": __version__,
            "fairseq": f"{fairseq.version} (fairseq-fixed, torch {fairseq.torch})" if fairseq.available else "not available"}


def ceilings(device: str) -> dict:
    """GFLOP/s ceilings the MFU columns divide by: measured 4096^2 matmuls on the CPU; on a GPU the
    datasheet dense bf16 peak (or the measured bf16 matmul when the GPU is not in the table)."""
    if device == "cpu":
        fp32, n32 = matmul_gflops("float32")
        bf16, n16 = matmul_gflops("bfloat16")
        return {"fp32": fp32, "bf16": bf16, "sizes": f"fp32 {n32}², bf16 {n16}²"}
    import torch
    name = torch.cuda.get_device_name()
    peak = gpu_peak_tflops(name)
    measured, _ = matmul_gflops("bfloat16", n=8192, seconds=2.0, device=device)
    return {"bf16": peak * 1e3 if peak else measured, "fp32": peak * 1e3 if peak else measured,
            "bf16_measured": measured, "gpu": name}


def med(results: list[dict], key: str) -> float:
    return median([r.get(key) for r in results if "skip" not in r])


def ratio(a: list[dict], b: list[dict], key: str) -> float:
    return median_ratio([r.get(key) if "skip" not in r else None for r in a],
                        [r.get(key) if "skip" not in r else None for r in b])


def skipped(results: list[dict]) -> str | None:
    reasons = [r["skip"] for r in results if "skip" in r]
    return reasons[0] if reasons and len(reasons) == len(results) else None


class Bench:
    def __init__(self, args, sizes: Sizes):
        self.args, self.s = args, sizes
        self.work = Path(args.work)
        self.fairseq = find_fairseq()
        self.rows: list[list] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    def fs_arm(self, fn):
        if self.fairseq.available:
            return fn
        return lambda: {"skip": "fairseq skipped (see above)"}

    def row(self, what: str, a: float | None, b: float | None, r: float | None, note: str = "") -> None:
        self.rows.append([what, a, b, r, note])

    def precisions(self) -> list[str]:
        """fp32 (+ bf16 autocast on a CPU whose bf16 matmul is not slower than fp32; without AVX-512 BF16
        or AMX it runs ~100x slower, and a bf16 run would take hours: the row then says so)."""
        if self.args.device != "cpu":
            return [self.args.precision]
        if self.ceil["bf16"] < self.ceil["fp32"]:
            note = (f"bf16 autocast not run: this CPU's bf16 matmul reaches {self.ceil['bf16']:.2f} GFLOP/s against "
                    f"{self.ceil['fp32']:.0f} fp32 (no AVX-512 BF16/AMX), so bf16 would be slower, not faster")
            if note not in self.notes:
                self.notes.append(note)
            return ["fp32"]
        return ["fp32", "bf16"]

    # -- comparisons --------------------------------------------------------------------------------
    def prep(self) -> None:
        s, tokens = self.s, []
        self.log(f"prep: lmlab prep vs fairseq-preprocess on {self.data.big_mb:.0f} MB, {s.prep_reps} round(s)")
        res = alternate({"lmlab": arms.prep_lmlab(self.data.big_text, self.work / "prep-lmlab", tokens),
                         "fairseq": self.fs_arm(arms.prep_fairseq(self.fairseq, self.data.big_text, self.work / "prep-fairseq",
                                                                  tokens))}, s.prep_reps, self.log)
        a, b = res["lmlab"], res["fairseq"]
        why = skipped(b) or ""
        mb = f"{self.data.big_mb:.0f} MB"
        self.row(f"prep {mb} (word vocab): tokens/s", med(a, "tokens_per_s"), med(b, "tokens_per_s"),
                 ratio(a, b, "tokens_per_s"), why or f"{tokens[0]:,} tokens; fairseq-preprocess --workers 2")
        self.row(f"prep {mb}: peak RSS, MB (lower is better)", med(a, "peak_rss_mb"), med(b, "peak_rss_mb"),
                 ratio(a, b, "peak_rss_mb"), why or "summed over the process tree (workers included)")
        for d in ("prep-lmlab", "prep-fairseq"):
            subprocess.run(["rm", "-rf", str(self.work / d)], check=False)

    def train(self) -> None:
        s, dev = self.s, self.args.device
        prec = self.precisions()
        flops = arms.transformer_flops_per_token(self.data.vocab_size, arms.TF["d"], arms.TF["layers"], arms.TF["ffn"],
                                                 arms.TF["context"])
        self.log(f"train: lmlab train-lm ({'/'.join(prec)}) vs fairseq-train ({prec[0]}), {s.train_reps} round(s) of "
                 f"{s.train_updates} updates x {s.train_batch * arms.TF['context']} tokens")
        runs = self.work / "runs"
        arm_map = {f"lmlab-{p}": arms.train_lmlab_transformer(self.data.lmlab_dir, runs / f"lm-{p}", s.train_updates,
                                                              s.train_warmup, s.train_batch, dev, p) for p in prec}
        arm_map["fairseq"] = self.fs_arm(arms.train_fairseq(self.fairseq, self.data.fairseq_dir, runs / "fairseq",
                                                            s.train_updates, s.train_warmup, s.train_batch, dev, prec[0], True))
        res = alternate(arm_map, s.train_reps, self.log)
        b = res["fairseq"]
        why = skipped(b) or ""
        tok = s.train_updates * s.train_batch * arms.TF["context"]
        for p in prec:
            a = res[f"lmlab-{p}"]
            ceil = self.ceil[p]
            mfu = lambda x: f"{100 * flops * x / (ceil * 1e9):.0f}%" if x == x else "—"  # noqa: E731
            ta, tb = med(a, "tokens_per_s"), med(b, "tokens_per_s")
            self.row(f"train-lm Transformer {p} vs fairseq-train {prec[0]}: tokens/s", ta, tb, ratio(a, b, "tokens_per_s"),
                     (why + "; " if why else "") + f"MFU lmlab {mfu(ta)} / fairseq {mfu(tb)} of the {p} "
                     f"ceiling ({ceil:,.0f} GFLOP/s; {flops / 1e6:.0f} MFLOP/token)")
            self.row(f"train-lm {p}: valid loss after {tok:,} tokens, nats", med(a, "valid_loss_nats"),
                     med(b, "valid_loss_nats"), None, why or f"{s.train_updates} updates (lr warm-up {s.train_warmup}); valid = "
                     f"first {s.valid_lines} lines of WikiText-2 valid")
        a = res[f"lmlab-{prec[0]}"]
        self.row(f"train-lm {prec[0]}: peak RSS, MB (lower is better)", med(a, "peak_rss_mb"), med(b, "peak_rss_mb"),
                 ratio(a, b, "peak_rss_mb"), why)
        self.train_ckpts = (runs / f"lm-{prec[0]}" / "checkpoints" / "last.pt", runs / "fairseq" / "checkpoint_last.pt")

    def eval(self) -> None:
        s, dev = self.s, self.args.device
        lm_ckpt, fs_template = self.train_ckpts
        ev = self.work / "eval"
        ev.mkdir(parents=True, exist_ok=True)
        same = make_same_weights(lm_ckpt, ev / "lmlab.pt")
        fs_ckpt = ev / "fairseq.pt"
        conv = None
        if self.fairseq.available:
            conv = subprocess.run([self.fairseq.python, str(Path(__file__).with_name("fairseq_convert.py")), str(same),
                                   str(fs_template), str(fs_ckpt)], capture_output=True, text=True)
            if conv.returncode:
                self.notes.append(f"conversion to fairseq failed: {conv.stderr.strip().splitlines()[-1][:300]}")
        prec = self.precisions()
        stride, ctx = arms.TF["context"] // 2, arms.TF["context"]
        self.log(f"eval: lmlab eval-ppl ({'/'.join(prec)}) vs fairseq-eval-lm on the same weights, {s.eval_reps} round(s)")
        arm_map = {f"lmlab-{p}": arms.eval_lmlab(same, 8, stride, dev, p) for p in prec}
        fs_ok = self.fairseq.available and conv is not None and conv.returncode == 0
        arm_map["fairseq"] = (arms.eval_fairseq(self.fairseq, self.data.fairseq_dir, fs_ckpt, 8, stride, ctx, dev) if fs_ok
                              else lambda: {"skip": "fairseq skipped (see above)" if not self.fairseq.available else "conversion failed"})
        res = alternate(arm_map, s.eval_reps, self.log)
        b = res["fairseq"]
        why = skipped(b) or ""
        for p in prec:
            a = res[f"lmlab-{p}"]
            self.row(f"eval-ppl {p} vs fairseq-eval-lm fp32: tokens/s", med(a, "tokens_per_s"), med(b, "tokens_per_s"),
                     ratio(a, b, "tokens_per_s"), why or f"scoring loop only; {med(a, 'tokens'):,.0f} test tokens, "
                     f"{ctx}-token windows, {stride} new tokens each, 8 windows a batch")
        a = res[f"lmlab-{prec[0]}"]
        pa, pb = med(a, "ppl"), med(b, "ppl")
        self.row(f"perplexity of the same weights ({prec[0]})", pa, pb, pa / pb if pb == pb else None,
                 why or f"tokens scored: lmlab {med(a, 'tokens'):,.0f}, fairseq {med(b, 'tokens'):,.0f}; "
                 f"|Δ| = {100 * abs(pa / pb - 1):.3f}%")
        if dev == "cpu" and "bf16" in prec:
            self.row("perplexity, lmlab bf16 autocast vs lmlab fp32", med(res["lmlab-bf16"], "ppl"), pa,
                     med(res["lmlab-bf16"], "ppl") / pa, "bf16 rounding of activations")

    def big(self) -> None:
        """lmlab prep alone on a WikiText-103-sized stream: throughput and peak memory stay flat with size."""
        text = self.work / "text" / "big540.txt"
        mb = bench_data.repeat_text(bench_data.WT2 / "train.txt", text, 540)
        self.log(f"big: lmlab prep on {mb:.0f} MB")
        tokens: list[int] = []
        r = arms.prep_lmlab(text, self.work / "prep-big", tokens)()
        self.row(f"prep {mb:.0f} MB (WikiText-103 size): tokens/s", r.get("tokens_per_s"), None, None,
                 f"lmlab only, one run; {tokens[0]:,} tokens; peak RSS {r.get('peak_rss_mb', float('nan')):,.0f} MB"
                 if tokens else r.get("skip", ""))
        subprocess.run(["rm", "-rf", str(self.work / "prep-big"), str(text)], check=False)

    def lstm(self) -> None:
        s = self.s
        self.log(f"lstm: lmlab train-lm vs word_language_model design (2 x 200, tied), {s.lstm_reps} round(s)")
        runs = self.work / "runs"
        res = alternate({"lmlab": arms.train_lmlab_lstm(self.data.lmlab_dir, runs / "lstm", s.lstm_updates, s.lstm_warmup),
                         "reference": arms.train_reference_lstm(self.data.lmlab_dir, s.lstm_updates, s.lstm_warmup),
                         "demo": arms.train_lmlab_lstm(self.data.demo_dir, runs / "demo", s.lstm_updates, s.lstm_warmup,
                                                       preset="demo")}, s.lstm_reps, self.log)
        a, b = res["lmlab"], res["reference"]
        self.row("train-lm LSTM 2x200 (WikiText-2) vs word_language_model design: tokens/s", med(a, "tokens_per_s"),
                 med(b, "tokens_per_s"), ratio(a, b, "tokens_per_s"),
                 f"batch 20 x bptt 35, SGD lr 20, clip 0.25, fp32; {s.lstm_updates - s.lstm_warmup} timed updates per run")
        self.row("train-lm --preset demo (LSTM 1x200, Austen, batch 32 x 35): tokens/s", med(res["demo"], "tokens_per_s"),
                 None, None, "lmlab only (the README demo's model)")

    # -- output --------------------------------------------------------------------------------------------
    def run(self) -> str:
        self.load_start = load_average()
        self.log(f"fairseq: {self.fairseq.version or self.fairseq.reason}")
        self.ceil = ceilings(self.args.device)
        self.log("ceiling: " + ", ".join(f"{k} {v:,.2f} GFLOP/s" if isinstance(v, float) else f"{k} {v}" for k, v in self.ceil.items()))
        s = self.s
        self.data = bench_data.build(self.work, s.prep_mb, s.valid_lines, s.test_lines, self.fairseq, self.log)
        sections = self.args.sections.split(",")
        if os.environ.get("BENCH_BIG") == "1":
            sections.append("big")
        for name in ("prep", "big", "train", "eval", "lstm"):
            if name in sections and not (name == "eval" and "train" not in sections):
                getattr(self, name)()
        return self.render()

    def render(self) -> str:
        v = versions(self.fairseq)
        ceil = ", ".join(f"{k} {val:,.2f} GFLOP/s" if isinstance(val, float) else f"{k}: {val}" for k, val in self.ceil.items())
        head = [f"## Speed: lmlab vs fairseq ({self.args.mode} mode, device {self.args.device})", "",
                f"- machine: {cpu_model()}, {os.cpu_count()} cores; matmul ceiling: {ceil}",
                f"- versions: torch {v['torch']}, lmlab {v['lmlab']}, fairseq {v['fairseq']}",
                f"- load average (1/5/15 min) at start: {self.load_start}; at end: {load_average()}; "
                f"wall time {time.perf_counter() - self.t0:.0f} s",
                f"- command: `{self.args.command}` ({time.strftime('%Y-%m-%d %H:%M')})",
                "- each comparison alternates its arms round by round; values are medians, the ratio is the median of the "
                "per-round ratios, with their min–max in brackets (lmlab / baseline: > 1 is faster for throughput, < 1 is leaner for memory). Method: docs/bench.md.", ""]
        if not self.fairseq.available:
            head.insert(4, f"- fairseq column skipped: {self.fairseq.reason}")
        table = markdown_table(["measurement", "lmlab", "fairseq / reference", "ratio", "notes"], self.rows)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return "\n".join(head) + "\n" + table + ("\n" + notes if notes else "") + "\n"


def make_same_weights(src: Path, dst: Path) -> Path:
    """The lmlab checkpoint with its output bias zeroed (fairseq's tied output has none), so both toolkits
    evaluate exactly the same function."""
    import torch
    from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
    state = load_checkpoint(src, "lm")
    if "output.bias" in state["model"]:
        state["model"]["output.bias"] = torch.zeros_like(state["model"]["output.bias"])
    state = {k: v for k, v in state.items() if k not in ("format", "format_version", "kind")}
    save_checkpoint(dst, state, "lm")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="quick" if os.environ.get("BENCH_QUICK") == "1" else "full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="bf16", help="GPU mode: the precision of both toolkits")
    ap.add_argument("--sections", default="prep,train,eval,lstm")
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp/lmlab-bench"))
    ap.add_argument("--results", default=None, help="also write the table into this file's bench region "
                                                     "(default: stdout only; `make bench` records it)")
    ap.add_argument("--no-write", action="store_true", help="print the table only (the default)")
    ap.add_argument("--append", action="store_true", help="add the table below the region's current content")
    ap.add_argument("--reps", type=int, default=0, help="rounds per comparison (0: the mode's)")
    args = ap.parse_args()
    args.command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if args.mode == "quick" and os.environ.get("BENCH_QUICK") == "1":
        args.command = "BENCH_QUICK=1 " + args.command
    os.chdir(ROOT)  # presets use repo-relative corpus paths
    sizes = MODES[args.mode]
    if args.reps:
        sizes = dataclasses.replace(sizes, prep_reps=args.reps, train_reps=args.reps, eval_reps=args.reps, lstm_reps=args.reps)
    if not (bench_data.WT2 / "train.txt").exists():  # before the ceiling's seconds of matmuls
        sys.exit(f"bench: WikiText-2 not found at {bench_data.WT2} (train/valid/test.txt); point LMLAB_WIKITEXT2 (or "
                 "make's LMLAB_DATA) at it")
    try:
        text = Bench(args, sizes).run()
    except FileNotFoundError as exc:  # missing benchmark data: one line, not a traceback
        sys.exit(f"bench: {exc}")
    print(text)
    if args.results and not args.no_write:
        write_region(args.results, (read_region(args.results) + "\n\n" if args.append else "") + text)
        print(f"wrote the bench region of {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
