"""The arms of each comparison: one callable per toolkit that runs the real command once and returns
its measurements, plus the parsers of what the commands write (lmlab's metrics.jsonl and JSON stdout,
fairseq's JSON log lines and its eval-lm summary). Throughput always excludes start-up: training from
the updates after the warm-up ones, evaluation from the scoring loop's own timer (both toolkits).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

from bench_common import run_timed
from bench_data import lmlab_cmd

LN2 = math.log(2)
# The Transformer LM both toolkits train: 4 pre-LN layers x 256, 4 heads, FFN 1024 (GELU), learned
# positions, 256-token samples, tied input/output table, 32 samples = 8192 tokens per update, AdamW.
TF = {"d": 256, "layers": 4, "heads": 4, "ffn": 1024, "context": 256, "dropout": 0.1, "lr": 5e-4, "clip": 1.0}
TF_LOSS_CHUNK = 1024  # token rows per chunk of the fused output layer (model.output.loss_chunk) on the CPU, both LM arms
# pytorch/examples word_language_model defaults: 2 x 200 LSTM, dropout 0.2, batch 20, bptt 35, SGD lr 20, clip 0.25
LSTM = {"d": 200, "layers": 2, "dropout": 0.2, "batch": 20, "bptt": 35, "lr": 20.0, "clip": 0.25}


def transformer_flops_per_token(vocab: int, d: int, layers: int, ffn: int, context: int) -> float:
    """Training FLOPs per token: 6 N for the matmul weights N (the tied table counted once, as the output
    projection; positions, norms and biases excluded) + 6 L T d for causal attention scores and values."""
    n_matmul = vocab * d + layers * (4 * d * d + 2 * d * ffn)
    return 6.0 * n_matmul + 6.0 * layers * context * d


# ---- parsers ---------------------------------------------------------------------------------------------
def lmlab_train_metrics(metrics_path: Path, warmup: int) -> dict:
    """tokens/s over the updates after `warmup` and the final validation loss. metrics.jsonl logs cumulative
    tokens and `train_s`, this process's training seconds without evaluations (older runs: tokens/s since the
    start, so elapsed = tokens / tokens_per_s)."""
    rows = [json.loads(l) for l in Path(metrics_path).read_text().splitlines() if l.strip()]
    train = [r for r in rows if "tokens_per_s" in r]
    valid = [r for r in rows if "valid_loss_nats" in r]
    if len(train) <= warmup:
        raise ValueError(f"{metrics_path}: {len(train)} updates logged, need more than the {warmup} warm-up ones")
    a, b = train[warmup - 1] if warmup else {"tokens": 0, "tokens_per_s": 1.0, "train_s": 0.0}, train[-1]
    if "train_s" in b:
        elapsed = lambda r: r["train_s"]  # noqa: E731
    else:
        elapsed = lambda r: r["tokens"] / r["tokens_per_s"] if r["tokens"] else 0.0  # noqa: E731
    tps = (b["tokens"] - a["tokens"]) / (elapsed(b) - elapsed(a))
    return {"tokens_per_s": tps, "updates": len(train), "tokens": b["tokens"],
            "valid_loss_nats": valid[-1]["valid_loss_nats"] if valid else None,
            "train_loss_nats": b["train_loss_nats"]}


def _json_logs(text: str, tag: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if f"| {tag} |" in line:
            try:
                out.append(json.loads(line.split(f"| {tag} |", 1)[1].strip()))
            except json.JSONDecodeError:
                continue
    return out


def fairseq_train_metrics(log: str, warmup: int) -> dict:
    """From `--log-format json --log-interval 1`: each train_inner line covers one update, with its own
    words/s (fairseq resets the meter at every log), so time per update = wpb / wps."""
    inner = _json_logs(log, "train_inner")
    if len(inner) <= warmup:
        raise ValueError(f"fairseq logged {len(inner)} updates, need more than the {warmup} warm-up ones")
    timed = inner[warmup:]
    tokens = sum(float(r["wpb"]) for r in timed)
    seconds = sum(float(r["wpb"]) / float(r["wps"]) for r in timed)
    valid = _json_logs(log, "valid")
    loss = float(valid[-1]["valid_loss"]) * LN2 if valid else None  # fairseq logs base-2 losses
    return {"tokens_per_s": tokens / seconds, "updates": len(inner), "valid_loss_nats": loss,
            "train_loss_nats": float(inner[-1]["loss"]) * LN2}


_EVAL_TOKENS = re.compile(r"Evaluated ([\d,]+) tokens in ([\d.]+)s \(([\d.,]+) tokens/s\)")
_EVAL_LOSS = re.compile(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)")


def fairseq_eval_metrics(log: str) -> dict:
    m, l = _EVAL_TOKENS.search(log), _EVAL_LOSS.search(log)
    if not m or not l:
        raise ValueError("fairseq-eval-lm printed no 'Evaluated N tokens' / 'Loss (base 2)' summary")
    tokens, seconds, tps = int(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3).replace(",", ""))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tps,  # seconds are printed to 0.1 s only
            "nats_per_token": float(l.group(1)) * LN2, "ppl": float(l.group(2))}


def _fail(what: str, proc) -> dict:
    tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
    print(f"    {what} failed (rc {proc.rc}): {' / '.join(tail)[-400:]}", file=sys.stderr)
    return {"skip": f"{what} failed (rc {proc.rc})"}


# ---- arms --------------------------------------------------------------------------------------------------
def prep_lmlab(text: Path, out: Path, tokens: list[int]):
    def arm() -> dict:
        shutil.rmtree(out, ignore_errors=True)
        p = run_timed(lmlab_cmd("prep", "--train", str(text), "--out", str(out), "--force", "-q"))
        if p.rc:
            return _fail("lmlab prep", p)
        n = json.loads((out / "meta.json").read_text())["splits"]["train"]["tokens"]
        tokens[:] = [n]
        return {"seconds": p.seconds, "tokens_per_s": n / p.seconds, "peak_rss_mb": p.peak_rss_mb}
    return arm


def prep_fairseq(fairseq, text: Path, out: Path, tokens: list[int], workers: int = 2):
    def arm() -> dict:
        shutil.rmtree(out, ignore_errors=True)
        p = run_timed(fairseq.script("fairseq-preprocess") + ["--only-source", "--trainpref", str(text),
                                                                "--destdir", str(out), "--workers", str(workers)])
        if p.rc:
            return _fail("fairseq-preprocess", p)
        n = tokens[0] if tokens else None  # the same text: lmlab's count of tokens (one <eos> per line)
        return {"seconds": p.seconds, "tokens_per_s": n / p.seconds if n else None, "peak_rss_mb": p.peak_rss_mb}
    return arm


def train_lmlab_transformer(data_dir: Path, run_dir: Path, updates: int, warmup: int, batch: int, device: str,
                            precision: str, threads: int = 0):
    sets = [f"model.kind=transformer", f"model.d_model={TF['d']}", f"model.n_layers={TF['layers']}",
            f"model.transformer.n_heads={TF['heads']}", f"model.transformer.ffn_dim={TF['ffn']}",
            f"model.transformer.context={TF['context']}", f"model.transformer.dropout={TF['dropout']}",
            "model.output.tie=true", "model.output.bias=false",  # fairseq's tied output has no bias: the same model
            f"data.batch_size={batch}", f"data.bptt={TF['context']}", "optim.name=adamw",
            f"optim.lr={TF['lr']}", "optim.weight_decay=0.0", f"optim.clip={TF['clip']}", "schedule.name=constant",
            f"schedule.warmup_steps={warmup}", "run.eval_interval=1000000", f"hardware.device={device}",
            f"hardware.precision={precision}", f"hardware.threads={threads}", "seed=1"]
    if device == "cpu":  # the fused output layer + loss: on this CPU faster than the logits path at this vocabulary
        sets.append(f"model.output.loss_chunk={TF_LOSS_CHUNK}")  # (bench/fused_ce.py); on a GPU not measured
    return _lmlab_train(data_dir, run_dir, updates, warmup, sets)


def train_lmlab_lstm(data_dir: Path, run_dir: Path, updates: int, warmup: int, preset: str | None = None):
    if preset:
        sets = ["run.eval_interval=1000000", "hardware.device=cpu"]
    else:
        sets = ["model.kind=lstm", f"model.d_model={LSTM['d']}", f"model.n_layers={LSTM['layers']}",
                f"model.lstm.hidden_size={LSTM['d']}", f"model.lstm.dropout={LSTM['dropout']}", "model.lstm.init_range=0.1",
                "model.output.tie=true", f"data.batch_size={LSTM['batch']}", f"data.bptt={LSTM['bptt']}", "optim.name=sgd",
                f"optim.lr={LSTM['lr']}", f"optim.clip={LSTM['clip']}", "schedule.name=constant",
                "run.eval_interval=1000000", "hardware.device=cpu", "seed=1",
                f"model.output.loss_chunk={TF_LOSS_CHUNK}"]  # the fused output layer: 1.2x the logits path at 700 x 200 x 33,280
    return _lmlab_train(data_dir, run_dir, updates, warmup, sets, preset)


def _lmlab_train(data_dir: Path, run_dir: Path, updates: int, warmup: int, sets: list[str], preset: str | None = None):
    def arm() -> dict:
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = lmlab_cmd("train-lm", *(["--preset", preset] if preset else []), "--data", str(data_dir),
                        "--run-dir", str(run_dir), "--steps", str(updates), "-q")
        for s in sets:
            cmd += ["--set", s]
        p = run_timed(cmd)
        if p.rc:
            return _fail("lmlab train-lm", p)
        return {**lmlab_train_metrics(run_dir / "metrics.jsonl", warmup), "peak_rss_mb": p.peak_rss_mb}
    return arm


def train_fairseq(fairseq, data_dir: Path, save_dir: Path, updates: int, warmup: int, batch: int, device: str,
                  precision: str, save: bool):
    def arm() -> dict:
        shutil.rmtree(save_dir, ignore_errors=True)
        cmd = fairseq.script("fairseq-train") + [
            str(data_dir), "--task", "language_modeling", "--arch", "transformer_lm", "--save-dir", str(save_dir),
            "--decoder-layers", str(TF["layers"]), "--decoder-embed-dim", str(TF["d"]),
            "--decoder-input-dim", str(TF["d"]), "--decoder-output-dim", str(TF["d"]),
            "--decoder-ffn-embed-dim", str(TF["ffn"]), "--decoder-attention-heads", str(TF["heads"]),
            "--decoder-normalize-before", "--decoder-learned-pos", "--no-scale-embedding", "--activation-fn", "gelu",
            "--share-decoder-input-output-embed", "--dropout", str(TF["dropout"]), "--attention-dropout", str(TF["dropout"]),
            "--tokens-per-sample", str(TF["context"]), "--sample-break-mode", "none",
            "--max-tokens", str(batch * TF["context"]), "--batch-size", str(batch), "--required-batch-size-multiple", "1",
            "--batch-size-valid", "8", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-8",
            "--weight-decay", "0.0", "--clip-norm", str(TF["clip"]), "--lr", str(TF["lr"]), "--lr-scheduler", "fixed",
            "--warmup-updates", str(warmup), "--max-update", str(updates), "--log-format", "json", "--log-interval", "1",
            "--seed", "1", "--num-workers", "0", "--no-epoch-checkpoints", "--no-progress-bar"]
        cmd += ["--cpu"] if device == "cpu" else []
        cmd += ["--bf16"] if precision == "bf16" else []
        cmd += [] if save else ["--no-save"]
        p = run_timed(cmd)
        if p.rc:
            return _fail("fairseq-train", p)
        return {**fairseq_train_metrics(p.stdout + p.stderr, warmup), "peak_rss_mb": p.peak_rss_mb}
    return arm


def eval_lmlab(checkpoint: Path, batch: int, stride: int, device: str, precision: str):
    def arm() -> dict:
        p = run_timed(lmlab_cmd("eval-ppl", "-c", str(checkpoint), "--split", "test", "--batch-size", str(batch),
                                "--stride", str(stride), "--device", device, "--precision", precision, "-q"))
        if p.rc:
            return _fail("lmlab eval-ppl", p)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        return {"tokens": r["tokens"], "tokens_per_s": r["tokens_per_s"], "nats_per_token": r["nats_per_token"],
                "ppl": r["ppl"], "peak_rss_mb": p.peak_rss_mb}
    return arm


def eval_fairseq(fairseq, data_dir: Path, checkpoint: Path, batch: int, stride: int, context: int, device: str):
    def arm() -> dict:
        cmd = fairseq.script("fairseq-eval-lm") + [
            str(data_dir), "--path", str(checkpoint), "--gen-subset", "test", "--batch-size", str(batch),
            # eval-lm subtracts the context window from tokens-per-sample: windows of `context`, `stride` new tokens
            "--tokens-per-sample", str(context), "--context-window", str(context - stride), "--num-workers", "0"]
        cmd += ["--cpu"] if device == "cpu" else []
        p = run_timed(cmd)
        if p.rc:
            return _fail("fairseq-eval-lm", p)
        return {**fairseq_eval_metrics(p.stdout + p.stderr), "peak_rss_mb": p.peak_rss_mb}
    return arm


def train_reference_lstm(data_dir: Path, updates: int, warmup: int):
    def arm() -> dict:
        script = Path(__file__).with_name("ref_word_lm.py")
        p = run_timed([sys.executable, str(script), str(data_dir), "--updates", str(updates), "--warmup", str(warmup),
                       "--emsize", str(LSTM["d"]), "--nhid", str(LSTM["d"]), "--nlayers", str(LSTM["layers"]),
                       "--dropout", str(LSTM["dropout"]), "--lr", str(LSTM["lr"]), "--clip", str(LSTM["clip"]),
                       "--batch-size", str(LSTM["batch"]), "--bptt", str(LSTM["bptt"]), "--tied"])
        if p.rc:
            return _fail("reference word_language_model", p)
        return {**json.loads(p.stdout.strip().splitlines()[-1]), "peak_rss_mb": p.peak_rss_mb}
    return arm
