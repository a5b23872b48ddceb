"""Training loop of `train-lm --task translation`: label-smoothed cross-entropy, Adam, inverse-sqrt warmup.

Resumption is exact: the checkpoint holds model, optimizer, scheduler, step, the data position
(epoch, batch index in that epoch's seeded order) and every RNG state. SIGTERM/SIGUSR1 save and return.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from lmlab import __version__
from lmlab.core import distributed
from lmlab.core.checkpoint import strip_compile_prefix
from lmlab.core.config import to_dict
from lmlab.core.errors import LmlabError, NonFiniteLossError
from lmlab.core.machine import machine_at_end, machine_info
from lmlab.core.reporting import Reporter
from lmlab.core.rng import rng_state, set_rng_state
from lmlab.core.rundir import RunDir
from lmlab.core.seq2seq.config import Config, Seq2SeqScheduleConfig
from lmlab.core.seq2seq.data import collate, epoch_order, load_split, load_tokenizers, read_meta, token_batches
from lmlab.core.seq2seq.model import build_seq2seq, label_smoothed_nll
from lmlab.core.train.loop import TrainLoop
from lmlab.core.train.optim import torch_fused

KIND = "seq2seq"


def inverse_sqrt(cfg: Seq2SeqScheduleConfig, peak_lr: float):
    """Factor on the peak lr: linear warmup, then sqrt(warmup / step) (Vaswani et al. eq. 3 up to the peak's scale)."""
    w, init = max(cfg.warmup_steps, 1), cfg.warmup_init_lr / peak_lr

    def factor(step: int) -> float:
        if step < w:
            return init + (1.0 - init) * step / w
        return math.sqrt(w / step)
    return factor


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    o, fused = cfg.optim, cfg.hardware.fused_optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                                 fused=torch_fused(fused))
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, fused=torch_fused(fused))


@torch.no_grad()
def evaluate(model, split, batches, device, eps: float, amp, poll=None) -> dict[str, float]:
    """`poll(i)` before batch i may raise StopRequested (a stop signal met inside a long validation)."""
    model.eval()
    loss = nll = tokens = 0.0
    for i, index in enumerate(batches):
        if poll is not None:
            poll(i)
        b = {k: v.to(device) for k, v in collate(split, index).items()}
        with amp:
            logits = model(b["src"], b["prev"])
        l, n = label_smoothed_nll(logits, b["target"], eps)
        loss, nll, tokens = loss + float(l), nll + float(n), tokens + int((b["target"] != 0).sum())
    model.train()
    return {"valid_loss_nats": loss / tokens, "valid_nll_nats": nll / tokens, "valid_ppl": math.exp(min(nll / tokens, 50))}


def count_params(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())  # shared (tied) tensors once
    embed = {id(p): p.numel() for m in (model.src_embed, model.tgt_embed) for p in m.parameters()}
    return {"params": total, "embedding_params": sum(embed.values())}



@dataclasses.dataclass
class Position:
    """Where the run stands; the loop's closures update it in place."""
    step: int
    epoch: int
    batch_pos: int  # this process's next batch within the epoch
    best: float  # best valid NLL so far (nats/token)
    tokens: int = 0  # target tokens trained on since this process started (for tokens/s)
    last: dict = dataclasses.field(default_factory=dict)  # the last update's metrics row
    saved: int = -1  # the update last.pt holds


def train(cfg: Config, reporter: Reporter) -> dict[str, Any]:
    """Train a translation model; returns a summary dict. Under torchrun/srun every process calls this; they train
    one model data-parallel and rank 0 writes."""
    with distributed.job(RunDir(cfg.run.dir).last, "lower data.max_tokens, or split the batch with optim.grad_accum"):
        dist = distributed.init(cfg.hardware.device, cfg.hardware.dist_timeout_s)
        if cfg.hardware.threads > 0:
            torch.set_num_threads(cfg.hardware.threads)
        config_dict = to_dict(cfg)
        run = RunDir(cfg.run.dir, is_main=dist.is_main)
        resuming = run.prepare(config_dict, cfg.run.resume, cfg.run.force)
        try:
            return _train(cfg, reporter, dist, run, resuming, config_dict)
        finally:
            run.release()  # also when data or model set-up fails: the corrected command may start at once


def _train(cfg: Config, reporter: Reporter, dist: distributed.DistInfo, run: RunDir, resuming: bool,
           config_dict: dict[str, Any]) -> dict[str, Any]:
    device = dist.device
    meta = read_meta(cfg.data.dir)
    tokenizers = load_tokenizers(cfg.data.dir, meta)
    vocab = {"src": meta["vocab_size"][meta["src_lang"]], "tgt": meta["vocab_size"][meta["tgt_lang"]]}
    train_split = load_split(cfg.data.dir, "train", meta)
    valid_split = load_split(cfg.data.dir, cfg.data.valid_split, meta)
    per_rank_tokens = max(cfg.data.max_tokens // dist.world_size, 1)
    batches = token_batches(train_split, per_rank_tokens, cfg.model.max_positions)
    valid_batches = token_batches(valid_split, per_rank_tokens, cfg.model.max_positions)
    if not batches:
        raise LmlabError(f"data dir {cfg.data.dir}: no training pairs fit model.max_positions={cfg.model.max_positions}")
    if len(batches) < dist.world_size:
        raise LmlabError(f"{len(batches)} training batches for {dist.world_size} processes: lower data.max_tokens "
                         f"(now {cfg.data.max_tokens}) or run fewer processes")

    torch.manual_seed(cfg.seed)
    model = build_seq2seq(cfg.model, vocab["src"], vocab["tgt"]).to(device)
    sizes = count_params(model)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt(cfg.schedule, cfg.optim.lr))
    step, epoch, batch_pos, best = 0, 0, 0, float("inf")
    if resuming:
        # on the CPU: RNG states must stay CPU byte tensors (map_location=cuda broke resume on a GPU); the model and
        # optimizer states are copied to their parameters' device by load_state_dict
        state = run.load_last(KIND, map_location="cpu", log=reporter.log)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch_pos, best = state["step"], state["epoch"], state["batch_pos"], state["best_valid_nll_nats"]
        set_rng_state(state["rng"])
        run.truncate_metrics_after(step)
        reporter.log(f"resumed {cfg.run.dir} at step {step} (epoch {epoch}, batch {batch_pos})")
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.distributed else model
    if cfg.hardware.compile:
        train_model = torch.compile(train_model)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.hardware.precision)
    amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    scaler = torch.amp.GradScaler(enabled=amp_dtype is torch.float16)

    max_steps = cfg.schedule.max_steps
    if cfg.schedule.epochs > 0:
        max_steps = min(max_steps, cfg.schedule.epochs * math.ceil(len(batches) // dist.world_size / cfg.optim.grad_accum))
    eval_interval = cfg.run.eval_interval or max(max_steps // 10, 1)
    save_interval = cfg.run.save_interval or eval_interval
    reporter.log(f"seq2seq: {sizes['params']:,} parameters ({sizes['embedding_params']:,} in embeddings), "
                 f"{len(train_split)} training pairs in {len(batches)} batches, {max_steps} updates")

    pos = Position(step, epoch, batch_pos, best)
    t0 = time.monotonic()
    wall_before = float(state.get("wall_s") or 0.0) if resuming else 0.0  # the processes this run resumed from
    machine_at_start = machine_info()

    def save(is_best: bool) -> None:
        state = {"model": strip_compile_prefix(model.state_dict()), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "step": pos.step, "epoch": pos.epoch, "batch_pos": pos.batch_pos,
                 "best_valid_nll_nats": pos.best, "rng": rng_state(), "config": config_dict, "vocab_size": vocab,
                 "tokenizers": tokenizers, "tokenizer_sha256": meta["tokenizer_sha256"], "data_meta": meta,
                 "lmlab_version": __version__, "eval_pending": loop.eval_pending,
                 "wall_s": wall_before + time.monotonic() - t0, **sizes}
        run.save(state, KIND, pos.step, is_best=is_best, keep=cfg.run.keep)
        pos.saved = pos.step

    def my_batches(epoch: int) -> list[int]:
        order = epoch_order(len(batches), cfg.seed, epoch)
        # equal shares: ranks that step a different number of times wait for each other forever (DDP)
        usable = len(order) - len(order) % dist.world_size
        return order[:usable][dist.rank::dist.world_size]

    def update() -> None:
        mine = my_batches(pos.epoch)
        if pos.batch_pos >= len(mine):  # the last update ended an epoch (a checkpoint may have been saved there)
            pos.epoch, pos.batch_pos = pos.epoch + 1, 0
            mine = my_batches(pos.epoch)
        group = mine[pos.batch_pos:pos.batch_pos + cfg.optim.grad_accum]
        bs = [{k: v.to(device) for k, v in collate(train_split, batches[bi]).items()} for bi in group]
        ntok = sum(int((b["target"] != 0).sum()) for b in bs)
        if dist.distributed:  # fairseq's normalisation: the update's target tokens on all ranks together
            ntok = int(distributed.all_reduce_sum(torch.tensor([float(ntok)], device=device)).item())
        sums = [0.0, 0.0]
        for i, b in enumerate(bs):
            sync = dist.distributed and i < len(bs) - 1
            with (train_model.no_sync() if sync else nullcontext()), amp:
                logits = train_model(b["src"], b["prev"])
            loss, nll = label_smoothed_nll(logits, b["target"], cfg.label_smoothing)
            if dist.distributed:  # DDP averages the ranks' gradients: x W makes it the sum over all ranks / ntok
                loss_for_grad = loss * (dist.world_size / ntok)
            else:
                loss_for_grad = loss / ntok  # per-token mean over the whole update
            scaler.scale(loss_for_grad).backward()
            sums = [sums[0] + float(loss.detach()), sums[1] + float(nll.detach())]
        if dist.distributed:  # the logged losses are the update's, over every rank's tokens
            sums = distributed.all_reduce_sum(torch.tensor(sums, dtype=torch.float64, device=device)).tolist()
        if not math.isfinite(sums[0]):
            raise NonFiniteLossError(f"loss became {sums[0]} at step {pos.step}; lower optim.lr or raise "
                                     f"schedule.warmup_steps (last good checkpoint: {run.last})")
        scaler.unscale_(optimizer)
        if cfg.optim.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        pos.step, pos.batch_pos, pos.tokens = pos.step + 1, pos.batch_pos + len(group), pos.tokens + ntok
        pos.last = {"step": pos.step, "epoch": pos.epoch, "train_loss_nats": sums[0] / ntok,
                       "train_nll_nats": sums[1] / ntok, "lr": scheduler.get_last_lr()[0],
                       "tgt_tokens_per_s": pos.tokens / max(time.monotonic() - t0, 1e-9)}
        reporter.update(pos.step, pos.last)

    def record(metrics: dict[str, float]) -> None:
        is_best = metrics["valid_nll_nats"] < pos.best
        pos.best = min(pos.best, metrics["valid_nll_nats"])
        run.log_metrics({**pos.last, **metrics, "elapsed_s": time.monotonic() - t0})
        reporter.log(f"step {pos.step}: valid nll {metrics['valid_nll_nats']:.4f} nats/token, ppl {metrics['valid_ppl']:.2f}")
        save(is_best)

    def epochs_done() -> bool:
        return cfg.schedule.epochs > 0 and pos.epoch >= cfg.schedule.epochs

    loop = TrainLoop(update=update, save=save, record=record, step=lambda: pos.step, device=device, log=reporter.log,
                     measure=lambda: evaluate(model, valid_split, valid_batches, device, cfg.label_smoothing, amp,
                                      poll=lambda chunk: loop.poll_in_validation(chunk)),
                     finished=lambda: pos.step >= max_steps or epochs_done(),
                     eval_due=lambda: pos.step % eval_interval == 0 or pos.step == max_steps,
                     save_due=lambda: pos.step % save_interval == 0, last=run.last)
    loop.eval_pending = bool(state.get("eval_pending", False)) if resuming else False
    pos.saved = step if resuming else -1
    model.train()
    reporter.start(max_steps, "train")
    with loop.stop_flag(run, reporter):
        stopped = loop.run()
        if not stopped and pos.saved != pos.step:
            save(False)
    step, epoch, best, last = pos.step, pos.epoch, pos.best, pos.last
    if not stopped and len(my_batches(epoch)) <= pos.batch_pos:
        epoch += 1  # the last update ended an epoch
    distributed.barrier()
    evaluated = math.isfinite(best)  # False when the run stopped before its first evaluation
    # the last update's metrics first: its "epoch" is the epoch index that update was in, not the epochs completed
    return {**last, "run_dir": str(run.path), "step": step, "epoch": epoch,
            "best_valid_nll_nats": best if evaluated else None,
            "best_valid_ppl": math.exp(min(best, 50)) if evaluated else None, "stopped": stopped,
            "wall_s": round(wall_before + time.monotonic() - t0, 1), "wall_s_this_process": round(time.monotonic() - t0, 1),
            "machine": machine_at_end(machine_at_start), **sizes}
