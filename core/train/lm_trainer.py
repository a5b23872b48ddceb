"""The `train-lm` loop: contiguous BPTT batches, carried LSTM state, gradient accumulation and
clipping, autocast, periodic evaluation, atomic checkpoints with everything needed to resume
bit-for-bit (model, optimizer, schedule, objective, RNG, data position, carried state), graceful stop
on SIGTERM/SIGUSR1, and data parallelism when launched by torchrun/srun (rank 0 alone writes)."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lmlab import __version__
from lmlab.core import distributed
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import to_dict
from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError, NonFiniteLossError
from lmlab.core.evaluate import evaluate_lm
from lmlab.core.machine import machine_at_end, machine_info, note_hardware, restored_hardware_history
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.lm import parameter_counts
from lmlab.core.plot import write_curves_png  # here, not when the run ends: a run outlives code changed beside it
from lmlab.core.reporting import Reporter, progress_lines
from lmlab.core.rng import rng_state, seed_everything, set_rng_state  # noqa: F401 (re-exported)
from lmlab.core.rundir import RunDir
from lmlab.core.train.batches import StreamBatches, VariableBPTT, expected_window_length
from lmlab.core.train.config import TrainConfig
from lmlab.core.train.loop import TrainLoop
from lmlab.core.train.objectives import build_objective
from lmlab.core.train.optim import LRSchedule, averaged_state_dict, build_asgd, build_optimizer, should_trigger_asgd


def autocast_factory(device: torch.device, precision: str):
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise LmlabError("hardware.precision=fp16 needs a CUDA device (use bf16 on CPU)")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


class LMTrainer:
    KIND = "lm"

    def __init__(self, cfg: TrainConfig, reporter: Reporter | None = None):
        self.cfg = cfg
        self.reporter = reporter or Reporter()
        if cfg.hardware.threads:
            torch.set_num_threads(cfg.hardware.threads)
        self.dist = distributed.init(cfg.hardware.device, cfg.hardware.dist_timeout_s)
        self.device = self.dist.device
        self.data = DataDir(cfg.data.dir)
        self.train_stream = self.data.split("train")
        self.valid_stream = self.data.split(cfg.data.valid_split)
        seed_everything(cfg.seed)
        self.model = build_language_model(cfg.model, self.data.vocab_size).to(self.device)
        if getattr(self.model, "base_tokenizer_sha256", None) not in (None, self.data.tokenizer_sha256):
            raise LmlabError(f"model.ralm_base {cfg.model.ralm_base} was trained on another tokenizer than data dir "
                             f"{cfg.data.dir}: train the RALM on the base LM's data dir")
        self.raw_model = self.model
        if cfg.hardware.compile:
            self.model.body.compile()  # in place: state_dict keys stay free of `_orig_mod.`
        self.batches = StreamBatches(self.train_stream, cfg.data.batch_size, cfg.data.bptt,
                                     self.dist.rank, self.dist.world_size)
        # AWD-LSTM's variable-length windows: an epoch ends at the stream's end, after a varying number of
        # windows; windows_per_epoch (hence total_updates under schedule.epochs) is then their expected number
        self.variable_bptt = VariableBPTT(cfg.data.bptt, cfg.seed) if cfg.data.variable_bptt else None
        self.windows_per_epoch = (math.ceil(self.batches.positions / expected_window_length(cfg.data.bptt))
                                  if self.variable_bptt else self.batches.windows_per_epoch)
        self.optimizer = build_optimizer(cfg.optim, self.model, fused=cfg.hardware.fused_optimizer)
        updates_per_epoch = max(1, self.windows_per_epoch // cfg.optim.grad_accum)
        self.total_updates = cfg.schedule.epochs * updates_per_epoch if cfg.schedule.epochs else cfg.schedule.max_steps
        self.schedule = LRSchedule(cfg.schedule, cfg.optim.lr, self.total_updates)
        self.objective = build_objective(cfg, self.train_stream, self.data.vocab_size, Path(cfg.data.dir), self.device)
        self.autocast = autocast_factory(self.device, cfg.hardware.precision)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.hardware.precision == "fp16" else None
        self.run = RunDir(cfg.run.dir, is_main=self.dist.is_main)
        self.params = parameter_counts(self.model)
        # position
        self.step = 0
        self.epoch = 0
        self.window = 0
        self.position = 0  # variable_bptt: where the next window starts in the columns
        self.state = None
        self.best_valid = math.inf
        self.tokens_seen = 0
        self.valid_history: list[float] = []
        self.averaging = False  # NT-ASGD has switched to its averaging phase
        self.wall_s_before = 0.0  # wall time of the processes this run resumed from
        # [first update, hardware] per change of machine or build across its processes (None: not recorded, a
        # checkpoint from before this list): a run resumed over several sessions says what each stretch ran on
        self.hardware_history: list[list[Any]] = []
        self.loop = TrainLoop(update=self._update_and_log, measure=self.evaluate, record=self._record_eval, save=self._save,
                              finished=lambda: self._trained_enough() or self.schedule.finished(),
                              eval_due=lambda: self._eval_due(self._epoch_ended) or self._trained_enough(),
                              save_due=lambda: bool(cfg.run.save_interval) and self.step % cfg.run.save_interval == 0,
                              step=lambda: self.step, device=self.device, log=self.reporter.log, last=self.run.last)

    # ------------------------------------------------------------------------------------------
    def config_record(self) -> dict[str, Any]:
        record = to_dict(self.cfg)
        record["derived"] = {**self.params, "vocab_size": self.data.vocab_size, "total_updates": self.total_updates,
                             "windows_per_epoch": self.windows_per_epoch, "world_size": self.dist.world_size,
                             "tokenizer_sha256": self.data.tokenizer_sha256, "lmlab_version": __version__}
        return record

    def model_state(self) -> dict[str, Any]:
        """What eval/sample load: the averaged weights once NT-ASGD averages, else the weights."""
        return averaged_state_dict(self.raw_model, self.optimizer) if self.averaging else self.raw_model.state_dict()

    def checkpoint_state(self) -> dict[str, Any]:
        return {"model": self.model_state(), "model_iterate": self.raw_model.state_dict() if self.averaging else None,
                "averaging": self.averaging, "valid_history": list(self.valid_history),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "objective": self.objective.state_dict() if hasattr(self.objective, "state_dict") else {},
                "step": self.step, "epoch": self.epoch, "window": self.window, "tokens_seen": self.tokens_seen,
                "position": self.position,
                "variable_bptt": self.variable_bptt.state_dict() if self.variable_bptt else None,
                "best_valid_nats": self.best_valid, "carried_state": distributed.gather_columns(self.state), "rng": rng_state(),
                "config": to_dict(self.cfg), "data_dir_abs": os.path.abspath(self.cfg.data.dir),
                "vocab_size": self.data.vocab_size, "specials": self.data.specials,
                "tokenizer_json": self.data.tokenizer_json, "tokenizer_sha256": self.data.tokenizer_sha256,
                "params": self.params, "wall_s": self._wall_s(), "eval_pending": self.loop.eval_pending,
                "hardware_history": self.hardware_history}

    def _wall_s(self) -> float:
        """Training wall time over every process of this run (resumes add up; evaluations included)."""
        start = getattr(self, "_wall_t0", None)
        return self.wall_s_before + (time.perf_counter() - start if start is not None else 0.0)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("tokenizer_sha256") != self.data.tokenizer_sha256:
            raise LmlabError(f"run dir {self.run.path} was trained with another tokenizer than {self.data.tokenizer_path}; "
                             "use a new --run-dir")
        if self.variable_bptt and ckpt.get("variable_bptt") is None:
            raise LmlabError(f"run dir {self.run.path} was trained with fixed-length windows (before data.variable_bptt "
                             "existed); resume it with --set data.variable_bptt=false, or use a new --run-dir")
        self.averaging = bool(ckpt.get("averaging", False))
        self.valid_history = [float(v) for v in ckpt.get("valid_history", [])]
        self.raw_model.load_state_dict(ckpt["model_iterate"] if self.averaging else ckpt["model"])
        if self.averaging:
            self.optimizer = build_asgd(self.cfg.optim, self.raw_model, self.schedule.lr)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        if hasattr(self.objective, "load_state_dict") and ckpt.get("objective"):
            self.objective.load_state_dict(ckpt["objective"])
        self.step, self.epoch, self.window = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["window"])
        self.tokens_seen, self.best_valid = int(ckpt["tokens_seen"]), float(ckpt["best_valid_nats"])
        self.position = int(ckpt.get("position", 0))
        if self.variable_bptt:
            self.variable_bptt.load_state_dict(ckpt["variable_bptt"])
        carried = ckpt.get("carried_state")
        if carried is not None:
            per = self.cfg.data.batch_size // self.dist.world_size
            sl = slice(self.dist.rank * per, (self.dist.rank + 1) * per)
            self.state = [(h[:, sl].to(self.device), c[:, sl].to(self.device)) for h, c in carried]
        self.wall_s_before = float(ckpt.get("wall_s") or 0.0)
        self.hardware_history = restored_hardware_history(ckpt)
        self.loop.eval_pending = bool(ckpt.get("eval_pending", False))
        set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if self.averaging:  # evaluate the averaged weights (AWD-LSTM), then restore the iterate
            iterate = {k: v.clone() for k, v in self.raw_model.state_dict().items()}
            self.raw_model.load_state_dict(self.model_state())
            try:
                return self._evaluate()
            finally:
                self.raw_model.load_state_dict(iterate)
        return self._evaluate()

    def _evaluate(self) -> dict[str, float]:
        log_progress = progress_lines(self.reporter, f"validating at update {self.step}")
        chunks = itertools.count()

        def progress(done: int, total: int) -> None:
            log_progress(done, total)
            self.loop.poll_in_validation(next(chunks))

        try:
            return evaluate_lm(self.model, self.valid_stream, columns=self.cfg.data.eval_batch_size,
                               bptt=self.cfg.data.bptt, device=self.device, autocast=self.autocast, progress=progress)
        finally:
            self.model.train()

    def _eval_due(self, epoch_ended: bool) -> bool:
        c = self.cfg.run
        if c.eval_interval:
            return self.step % c.eval_interval == 0
        if self.cfg.schedule.epochs:
            return epoch_ended
        return self.step % max(1, self.total_updates // 10) == 0

    def _trained_enough(self) -> bool:
        """The run's length: schedule.epochs whole epochs when window lengths vary (total_updates is then an
        estimate), else total_updates."""
        if self.variable_bptt and self.cfg.schedule.epochs:
            return self.epoch >= self.cfg.schedule.epochs
        return self.step >= self.total_updates

    def _next_window(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if self.variable_bptt:  # every rank draws the same length from the same seeded generator
            x, y = self.batches.span(self.position, self.variable_bptt.draw())
            self.position += x.shape[1]
            epoch_ended = self.position >= self.batches.positions
        else:
            x, y = self.batches.window(self.window)
            self.window += 1
            epoch_ended = self.window >= self.batches.windows_per_epoch
        return x.to(self.device), y.to(self.device), epoch_ended

    def train_update(self) -> tuple[dict[str, float], bool]:
        """One optimizer update over `grad_accum` windows. Returns (metrics, epoch ended)."""
        cfg = self.cfg
        self.model.train()
        lr = self.schedule.apply(self.optimizer, self.step)
        sums: dict[str, float] = {}
        epoch_ended = False
        lengths = []  # the windows' lengths (variable_bptt scales the lr by them)
        for _ in range(cfg.optim.grad_accum):
            if hasattr(self.objective, "at_window"):  # IMM's official sampled-batch phase needs it
                self.objective.at_window(self.epoch, self.window)
            x, y, ended = self._next_window()
            with self.autocast() if self.autocast else contextlib.nullcontext():
                loss, self.state, metrics = self.objective(self.model, x, y, self.state, self.step)
            if not torch.isfinite(loss):
                kept = (f"the last good checkpoint is {self.run.last}" if self.run.last.exists()
                        else "no checkpoint was saved before it")
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at update {self.step + 1}; stopped without "
                                         f"saving; {kept} (try a lower optim.lr or optim.clip)")
            scaled = loss / cfg.optim.grad_accum
            if cfg.optim.loss_reduction == "sum_time":  # sum over the unrolled steps / batch = T x the token mean
                scaled = scaled * x.shape[1]
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            self.state = self.model.detach_state(self.state)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.optim.grad_accum
            if self.variable_bptt:
                lengths.append(x.shape[1])
                self.tokens_seen += self.batches.batch_size * x.shape[1]
            else:
                self.tokens_seen += self.batches.tokens_per_window_global
            if ended:
                epoch_ended = True
                self.window = 0
                self.position = 0
                self.epoch += 1
                self.state = None
                self.schedule.on_epoch_end(self.epoch)
                break
        if self.dist.distributed:
            distributed.average_gradients(list(self.model.parameters()), self.dist.world_size)
        if self.dist.distributed:  # log the global mean, not rank 0's shard
            keys = sorted(sums)
            values = distributed.all_reduce_mean(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
            sums = dict(zip(keys, values.tolist()))
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip if cfg.optim.clip > 0 else float("inf"))
        if hasattr(self.objective, "after_clip"):  # IMM with imm.clip = main: its gradient joins unclipped
            self.objective.after_clip(self.model)
        if lengths:  # AWD-LSTM: this update's lr x window length / bptt (the mean length over grad_accum windows)
            # Under NT-ASGD's averaging phase torch's ASGD steps with the eta it computed from the previous
            # update's lr, so the scale lags one update there, as it does in the reference code.
            mean_length = sum(lengths) / len(lengths)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * mean_length / cfg.data.bptt
            sums["window_tokens"] = mean_length
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if lengths:
            for group in self.optimizer.param_groups:
                group["lr"] = lr  # the schedule's lr again
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        sums.update(lr=lr, grad_norm=float(grad_norm))
        return sums, epoch_ended

    def _save(self, is_best: bool) -> None:
        state = self.checkpoint_state()  # collective under DDP: every rank takes part
        self.run.save(state, self.KIND, self.step, is_best=is_best, keep=self.cfg.run.keep)

    def _log_eval(self) -> None:
        self._record_eval(self.evaluate())

    def _record_eval(self, result: dict[str, float]) -> None:
        self._tokens_since_eval, self._s_since_eval = 0, 0.0  # tokens/s in metrics rows: over the updates since this
        is_best = result["nats_per_token"] < self.best_valid
        if is_best:
            self.best_valid = result["nats_per_token"]
        record = {"step": self.step, "epoch": self.epoch, "split": self.cfg.data.valid_split,
                  "valid_loss_nats": result["nats_per_token"], "valid_ppl": result["ppl"], "lr": self.schedule.lr_at(self.step)}
        self.run.log_metrics(record)
        self.reporter.log(f"eval step {self.step}: valid ppl {result['ppl']:.2f} ({result['nats_per_token']:.4f} nats/token)"
                          + (" *best*" if is_best else ""))
        self.valid_history.append(result["nats_per_token"])
        if self.cfg.optim.name == "nt-asgd" and not self.averaging and should_trigger_asgd(self.valid_history, self.cfg.optim.nonmono):
            self.optimizer = build_asgd(self.cfg.optim, self.raw_model, self.schedule.lr_at(self.step))
            self.averaging = True
            self.reporter.log(f"NT-ASGD: validation stopped improving; averaging from update {self.step}")
        decayed = self.schedule.on_eval(result["nats_per_token"])
        if hasattr(self.objective, "on_eval"):
            self.objective.on_eval(self.step, result["ppl"], self.schedule)
        if decayed and self.cfg.schedule.reload_best and self.run.best.exists():
            # before the save: last.pt must hold the weights the next update starts from, or a run killed before
            # its next checkpoint resumes from the weights the decay discarded
            self._reload_best_weights()
            self.reporter.log(f"lr decayed to {self.schedule.lr:.4g}; reloaded the best weights")
        self._save(is_best)

    def _reload_best_weights(self) -> None:
        best = load_checkpoint(self.run.best, self.KIND, map_location=self.device) if self.dist.is_main else None
        if self.dist.distributed:
            box = [best["model"] if best else None]
            dist.broadcast_object_list(box, src=0)
            self.raw_model.load_state_dict(box[0])
        else:
            self.raw_model.load_state_dict(best["model"])

    # ------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        fixed = "its cosine learning rate is scheduled over the whole run" if cfg.schedule.name == "cosine" else ""
        resumed = self.run.prepare(self.config_record(), cfg.run.resume, cfg.run.force, length_fixed_by=fixed)
        distributed.barrier()
        if resumed:
            self._restore(self.run.load_last(self.KIND, map_location="cpu", log=self.reporter.log))
            self.run.truncate_metrics_after(self.step)
            where = f"position {self.position}" if self.variable_bptt else f"window {self.window}"
            self.reporter.log(f"resumed {self.run.path} at update {self.step} (epoch {self.epoch}, {where})")
        else:
            self.reporter.log(f"training {cfg.model.kind} LM: {self.params['params_total']:,} parameters "
                              f"({self.params['params_embedding']:,} in the input embedding), {self.total_updates} updates")
        self.reporter.start(self.total_updates, "train")
        machine_at_start, wall_t0 = machine_info(), time.perf_counter()
        note_hardware(self.hardware_history, self.step, machine_at_start)
        self._wall_t0 = wall_t0
        tokens0 = self.tokens_seen
        self._train_s = 0.0  # this process's training seconds
        self._tokens_since_eval, self._s_since_eval = 0, 0.0
        with self.loop.stop_flag(self.run, self.reporter):
            stopped_by = self.loop.run()
            if stopped_by is None and self.dist.is_main:
                self._write_curves()
        machine = machine_at_end(machine_at_start)
        evaluated = math.isfinite(self.best_valid)  # False when the run stopped before its first evaluation
        return {"run_dir": str(self.run.path), "step": self.step, "best_valid_nats": self.best_valid if evaluated else None,
                "wall_s": round(self._wall_s(), 1), "wall_s_this_process": round(time.perf_counter() - wall_t0, 1),
                "machine": machine, "train_tokens_per_s": round((self.tokens_seen - tokens0) / max(self._train_s, 1e-9), 1),
                "best_valid_ppl": math.exp(min(self.best_valid, 700)) if evaluated else None, "stopped_by": stopped_by,
                "hardware_history": self.hardware_history, **self.params}

    def _update_and_log(self) -> None:
        """One update (train_update), its metrics row and the progress display."""
        t0, tokens_before = time.perf_counter(), self.tokens_seen
        metrics, self._epoch_ended = self.train_update()
        seconds = time.perf_counter() - t0
        self._train_s += seconds
        self._tokens_since_eval += self.tokens_seen - tokens_before
        self._s_since_eval += seconds
        tps = self._tokens_since_eval / max(self._s_since_eval, 1e-9)  # training only, over the updates since the last evaluation
        record = {"step": self.step, "epoch": self.epoch, "train_loss_nats": metrics.pop("loss_nats"), **metrics,
                  "tokens": self.tokens_seen, "tokens_per_s": tps, "train_s": self._train_s}
        record["train_ppl"] = math.exp(min(record["train_loss_nats"], 700))
        self.run.log_metrics(record)
        # variable_bptt + epochs: total_updates is an estimate; the bar waits below it until the last epoch ends
        shown = self.step if self._trained_enough() else min(self.step, self.total_updates - 1)
        self.reporter.update(shown, {"loss": record["train_loss_nats"], "ppl": record["train_ppl"],
                                     "lr": record["lr"], "tok/s": round(tps)})

    def _write_curves(self) -> None:
        rows = self.run.read_metrics()
        series = {"train": [(r["step"], r["train_loss_nats"]) for r in rows if "train_loss_nats" in r],
                  "valid": [(r["step"], r["valid_loss_nats"]) for r in rows if "valid_loss_nats" in r]}
        write_curves_png(self.run.path / "curves.png", series, title=f"{self.run.path.name}", ylabel="loss (nats/token)")


def train_lm(cfg: TrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    with distributed.job(RunDir(cfg.run.dir).last, "lower data.batch_size, or split the batch with optim.grad_accum"):
        trainer = LMTrainer(cfg, reporter)
        try:
            return trainer.fit()
        finally:
            trainer.run.release()
