"""`train-ebm --kind residual`: conditional NCE of a residual energy against a frozen base LM (Deng et al., ICLR 2020).

Each update takes `data.batch_size` training windows; the positives are their real continuations, the
negatives `negatives.per_prefix` continuations of the same prefixes sampled from the base LM (on the
fly, or read from `negatives.file`); the loss is binary cross-entropy with logit -E (estimators.nce_loss).
Validation logs the real-vs-LM classification accuracy on a fixed set of valid windows and negatives.
Checkpoints (kind "residual-ebm") hold the energy weights, optimizer, step, RNG, the resolved config and
the base LM's path + sha256, and the negatives' true provenance (`negatives`: on the fly or the file's split,
data dir, tokenizer, top-k, temperature, prefix hash); `run.resume=auto` continues, a changed base LM is refused.

Data-parallel under torchrun/srun (core/distributed.py): `data.batch_size` is the global batch; every rank draws
the same window indices from (seed, update) and takes its contiguous share, the energy is wrapped in DDP (the
mean over equal shares averaged over ranks is the global mean), and only rank 0 writes. With `negatives.file`
each rank reads the negatives of its own prefixes, so N processes train as one does (tested within 1e-5); on-the-fly
negatives and dropout draw from (seed, update, rank) streams instead, so they differ from a single process's.
The MLM phase is not data-parallel (refused under torchrun until it has finished).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from lmlab import __version__
from lmlab.core import distributed
from lmlab.core.config import check_renamed_file, to_dict
from lmlab.core.data import DataDir
from lmlab.core.errors import LmlabError, NonFiniteLossError
from lmlab.core.generate import load_lm
from lmlab.core.machine import machine_at_end, machine_info, note_hardware, restored_hardware_history
from lmlab.core.models.lm import count_parameters
from lmlab.core.reporting import NullReporter, Reporter
from lmlab.core.residual.config import Config
from lmlab.core.residual.energy import build_energy
from lmlab.core.residual.estimators import classification_accuracy, nce_loss
from lmlab.core.residual.joint import KIND, base_lm_record, score
from lmlab.core.residual.mlm import MLMPretrainer
from lmlab.core.residual.negatives import NegativeSampler, NegativesFile
from lmlab.core.residual.windows import Windows
from lmlab.core.rundir import RunDir
from lmlab.core.signals import StopFlag
from lmlab.core.train.batches import batch_not_divisible
from lmlab.core.train.loop import TrainLoop
from lmlab.core.train.optim import torch_fused
from lmlab.core.train.lm_trainer import autocast_factory, rng_state, seed_everything, set_rng_state


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


class ResidualTrainer:
    def __init__(self, cfg: Config, reporter: Reporter | None = None):
        self.cfg, self.reporter = cfg, reporter or NullReporter()
        if cfg.hardware.threads:
            torch.set_num_threads(cfg.hardware.threads)
        seed_everything(cfg.seed)
        self.dist = distributed.init(cfg.hardware.device, cfg.hardware.dist_timeout_s)
        self.device = self.dist.device
        if not self.dist.is_main:
            self.reporter = NullReporter()  # rank 0 reports for the job
        if cfg.data.batch_size % self.dist.world_size:
            raise LmlabError(batch_not_divisible(cfg.data.batch_size, self.dist.world_size))
        self.base = base_lm_record(cfg.base_lm)
        self.lm, _, info = load_lm(cfg.base_lm, self.device)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.data = DataDir(cfg.data.dir)
        if self.data.vocab_size != info["vocab_size"]:
            raise LmlabError(f"data dir {cfg.data.dir} has a vocabulary of {self.data.vocab_size} but the base LM "
                             f"{cfg.base_lm} has {info['vocab_size']}: use the data dir the LM was trained on")
        if info.get("tokenizer_sha256") and info["tokenizer_sha256"] != self.data.tokenizer_sha256:
            raise LmlabError(f"data dir {cfg.data.dir} has another tokenizer than the base LM {cfg.base_lm}")
        P, C = cfg.window.prefix_len, cfg.window.continuation_len
        if self.lm.context is not None and P + C > self.lm.context:
            raise LmlabError(f"window {P}+{C} exceeds the base LM's context of {self.lm.context}; "
                             "shorten window.prefix_len or window.continuation_len")
        self.train_windows = Windows(self.data.split(cfg.data.train_split), P, C, f"{cfg.data.dir}:{cfg.data.train_split}")
        self.valid_windows = Windows(self.data.split(cfg.valid.split), P, C, f"{cfg.data.dir}:{cfg.valid.split}")
        self.energy = build_energy(cfg.energy, self.data.vocab_size, P + C, self.lm).to(self.device)
        # the scoring forward: compiled and autocast when asked; the weights, optimizer and checkpoints stay fp32
        self.energy_forward = torch.compile(self.energy) if cfg.hardware.compile else self.energy
        self.train_forward = self.energy_forward  # validation scores with the plain energy: no collectives there
        if self.dist.distributed:  # gradients averaged over ranks in backward; the constructor broadcasts rank 0's weights
            ddp = DistributedDataParallel(self.energy, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.train_forward = torch.compile(ddp) if cfg.hardware.compile else ddp
        self.autocast = autocast_factory(self.device, cfg.hardware.precision) or contextlib.nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if cfg.hardware.precision == "fp16" else None
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.energy.parameters(), lr=o.lr, betas=tuple(o.betas),
                                           weight_decay=o.weight_decay, fused=torch_fused(cfg.hardware.fused_optimizer))
        sch = cfg.schedule
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(sch.warmup_steps, sch.max_steps))
        n = cfg.negatives
        self.neg_file = (NegativesFile(n.file, self.train_windows, split=cfg.data.train_split,
                                       tokenizer_sha256=self.data.tokenizer_sha256, per_prefix=n.per_prefix,
                                       top_k=n.top_k, temperature=n.temperature, base_lm_sha256=self.base["sha256"])
                         if n.file else None)
        # the negatives' true settings (a file's provenance was checked against the config just above)
        self.negatives_record = (self.neg_file.record() if self.neg_file is not None else
                                 {"source": "on-the-fly", "data_dir": cfg.data.dir, "split": cfg.data.train_split,
                                  "tokenizer_sha256": self.data.tokenizer_sha256, "top_k": n.top_k,
                                  "temperature": float(n.temperature), "per_prefix": n.per_prefix, "seed": cfg.seed,
                                  "base_lm_sha256": self.base["sha256"]})
        self.gen = torch.Generator(device=self.device)
        self.sampler = NegativeSampler(self.lm, cfg.negatives.per_prefix, C, cfg.negatives.top_k,
                                       cfg.negatives.temperature, self.gen)
        self.run = RunDir(cfg.run.dir, is_main=self.dist.is_main)
        self.step, self.best_valid, self.mlm_done = 0, math.inf, cfg.mlm.steps == 0 or cfg.energy.kind != "bit"
        self.evals_since_best = 0  # for valid.patience
        self.hardware_history: list[list[Any]] = []  # what each stretch of a run resumed across processes ran on
        m = cfg.mlm
        self.mlm = (None if self.mlm_done else
                    MLMPretrainer(self.energy, self.train_windows, steps=m.steps, batch_size=m.batch_size or cfg.data.batch_size,
                                  lr=m.lr, mask_prob=m.mask_prob, seed=cfg.seed, device=self.device,
                                  warmup_steps=m.warmup_steps, rank=self.dist.rank, world_size=self.dist.world_size,
                                  fused=cfg.hardware.fused_optimizer))
        self._valid_set = None
        max_steps = cfg.schedule.max_steps
        eval_every, save_every = cfg.run.eval_interval or max(1, max_steps // 10), cfg.run.save_interval
        self.loop = TrainLoop(update=self._update_and_log, measure=self.evaluate, record=self._record_eval, save=self._save,
                              finished=lambda: self.step >= max_steps or self.patience_ran_out,
                              eval_due=lambda: self.step % eval_every == 0 or self.step == max_steps,
                              save_due=lambda: save_every > 0 and self.step % save_every == 0,
                              step=lambda: self.step, device=self.device, log=self.reporter.log, last=self.run.last)

    @property
    def patience_ran_out(self) -> bool:
        patience = self.cfg.valid.patience
        return patience > 0 and self.evals_since_best >= patience

    # ------------------------------------------------------------------------------------------
    def config_record(self) -> dict[str, Any]:
        return {**to_dict(self.cfg), "derived": {"base_lm_sha256": self.base["sha256"], "lmlab_version": __version__,
                                                  "energy_params": count_parameters(self.energy),
                                                  "tokenizer_sha256": self.data.tokenizer_sha256,
                                                  "negatives": self.negatives_record, "world_size": self.dist.world_size}}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"energy": self.energy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "step": self.step, "best_valid_nats": self.best_valid,
                "evals_since_best": self.evals_since_best, "mlm_done": self.mlm_done, "rng": rng_state(),
                "config": to_dict(self.cfg), "base_lm": self.base,
                "vocab_size": self.data.vocab_size, "tokenizer_sha256": self.data.tokenizer_sha256,
                "negatives": self.negatives_record, "eval_pending": self.loop.eval_pending,
                "hardware_history": self.hardware_history,
                "mlm": self.mlm.state_dict() if self.mlm is not None and not self.mlm_done else None}

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt["base_lm"]["sha256"] != self.base["sha256"]:
            raise LmlabError(f"run dir {self.run.path} trained an energy on another base LM (sha256 of {self.cfg.base_lm} "
                             "changed); use a new --run-dir")
        self.energy.load_state_dict(ckpt["energy"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.step, self.best_valid, self.mlm_done = int(ckpt["step"]), float(ckpt["best_valid_nats"]), bool(ckpt["mlm_done"])
        self.evals_since_best = int(ckpt["evals_since_best"]) if "evals_since_best" in ckpt else self._evals_since_best_logged()
        if not self.mlm_done and ckpt.get("mlm"):
            self.mlm.load_state_dict(ckpt["mlm"])  # resume the MLM phase where it stopped
        set_rng_state(ckpt["rng"])
        self.loop.eval_pending = bool(ckpt.get("eval_pending", False))
        self.hardware_history = restored_hardware_history(ckpt)

    def _evals_since_best_logged(self) -> int:
        """A checkpoint written before valid.patience existed: count from the run's logged evaluations up to it."""
        losses = [r["valid_loss_nats"] for r in self.run.read_metrics()
                  if r.get("valid_loss_nats") is not None and r.get("step", 0) <= self.step]
        best = math.inf
        since = 0
        for loss in losses:
            best, since = (loss, 0) if loss < best else (best, since + 1)
        return since

    def _save(self, is_best: bool) -> None:
        self.run.save(self.checkpoint_state(), KIND, self.step, is_best=is_best, keep=self.cfg.run.keep)

    # ------------------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's (prefixes (B/W, P), positives (B/W, 1, C), negatives (B/W, K, C)) of the global batch of B;
        window order is a function of (seed, step), the same on every rank, so the W shares make one process's batch."""
        rng = np.random.default_rng([self.cfg.seed, self.step])
        B, W, rank = self.cfg.data.batch_size, self.dist.world_size, self.dist.rank
        share = slice(rank * B // W, (rank + 1) * B // W)
        if self.neg_file is not None:  # the file rows of this rank's prefixes: their own negatives
            index, neg = self.neg_file.rows(rng.integers(0, len(self.neg_file), B)[share], self.device)
            prefixes, pos = self.train_windows.get(index, self.device)
        else:
            prefixes, pos = self.train_windows.get(rng.integers(0, len(self.train_windows), B)[share], self.device)
            # one process: (seed, step) as always; W > 1: one stream per rank, so ranks draw independent negatives
            self.gen.manual_seed((self.cfg.seed * 1_000_003 + self.step) * W + rank)
            neg = self.sampler(prefixes)
        return prefixes, pos.unsqueeze(1), neg

    def train_update(self) -> dict[str, float]:
        self.energy.train()
        if self.dist.distributed:  # dropout masks from (seed, step, rank): independent across ranks, exact on resume
            torch.manual_seed(int(np.random.SeedSequence([self.cfg.seed, self.step, self.dist.rank, 2]).generate_state(1)[0]))
        prefixes, pos, neg = self._batch()
        with self.autocast():
            e = score(self.train_forward, prefixes, torch.cat([pos, neg], dim=1)).float()  # (B/W, 1+K)
        loss = nce_loss(e[:, 0], e[:, 1:])  # mean over this rank's share; DDP averages the shares' gradients
        acc = classification_accuracy(e[:, 0].detach(), e[:, 1:].detach())
        logged = {"train_loss_nats": loss.item(), "train_acc": acc["acc"]}
        if self.dist.distributed:  # the global batch's loss (means of equal shares), the same on every rank
            values = torch.tensor(list(logged.values()), dtype=torch.float64, device=self.device)
            logged = dict(zip(logged, distributed.all_reduce_mean(values).tolist()))
        if not math.isfinite(logged["train_loss_nats"]):  # every rank agrees, so none is left waiting in backward
            raise NonFiniteLossError(f"NCE loss became {logged['train_loss_nats']} at update {self.step}; last good "
                                     f"checkpoint: {self.run.last} (lower optim.lr)")
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.energy.parameters(), self.cfg.optim.clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()
        self.step += 1
        return {**logged, "lr": self.schedule.get_last_lr()[0]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """NCE loss and real-vs-LM accuracy on fixed valid windows with fixed LM negatives."""
        if self._valid_set is None:  # built whole or not at all: a stop inside leaves it to the next evaluation
            count = len(self.valid_windows) if self.cfg.valid.max_examples <= 0 else min(self.cfg.valid.max_examples,
                                                                                         len(self.valid_windows))
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 17)
            sampler = NegativeSampler(self.lm, self.cfg.negatives.per_prefix, self.cfg.window.continuation_len,
                                      self.cfg.negatives.top_k, self.cfg.negatives.temperature, gen)
            valid_set = []
            for chunk, start in enumerate(range(0, count, 64)):
                prefixes, pos = self.valid_windows.get(np.arange(start, min(start + 64, count)), self.device)
                valid_set.append((prefixes, pos.unsqueeze(1), sampler(prefixes)))
                self.loop.poll_in_validation(chunk)
            self._valid_set = valid_set
        self.energy.eval()
        e_pos, e_neg = [], []
        for chunk, (prefixes, pos, neg) in enumerate(self._valid_set):
            self.loop.poll_in_validation(chunk)
            with self.autocast():
                e = score(self.energy_forward, prefixes, torch.cat([pos, neg], dim=1), chunk=512).float()
            e_pos.append(e[:, 0])
            e_neg.append(e[:, 1:])
        e_pos, e_neg = torch.cat(e_pos), torch.cat(e_neg)
        acc = classification_accuracy(e_pos, e_neg)
        return {"valid_loss_nats": nce_loss(e_pos, e_neg).item(), **{f"valid_{k}": v for k, v in acc.items()},
                "valid_energy_real_mean": e_pos.mean().item(), "valid_energy_lm_mean": e_neg.mean().item()}

    def _record_eval(self, metrics: dict[str, float]) -> None:
        is_best = metrics["valid_loss_nats"] < self.best_valid
        self.best_valid = min(self.best_valid, metrics["valid_loss_nats"])
        self.evals_since_best = 0 if is_best else self.evals_since_best + 1
        self.run.log_metrics({"step": self.step, **metrics})
        self.reporter.log(f"valid step {self.step}: loss {metrics['valid_loss_nats']:.4f} nats, "
                          f"real-vs-LM accuracy {metrics['valid_acc']:.3f}")
        self._save(is_best)

    def _update_and_log(self) -> None:
        record = self.train_update()
        record["examples_per_s"] = (self.step - self._step0) * self.cfg.data.batch_size / max(time.perf_counter() - self._t0, 1e-9)
        self.run.log_metrics({"step": self.step, **record})
        self.reporter.update(self.step, {"loss": record["train_loss_nats"], "acc": record["train_acc"]})

    def _pretrain_mlm(self, stop: StopFlag) -> str | None:
        """The MLM phase (BiT only), checkpointed like NCE so a long one resumes; returns the stopping signal or None."""
        every = self.cfg.run.save_interval or max(1, self.mlm.steps // 10)
        self.reporter.start(self.mlm.steps, "mlm")
        losses: list[float] = []
        while not self.mlm.done:
            losses.append(self.mlm.update())
            self.reporter.update(self.mlm.step, {"mlm_loss": losses[-1]})
            stopping = self.loop.stop_requested()  # every rank stops after the same MLM update
            if self.mlm.step % every == 0 or self.mlm.done or stopping:
                self.mlm_done = self.mlm.done
                self._save(is_best=False)  # checkpoint first, then its metrics line: a resume never repeats one
                self.run.log_metrics({"step": 0, "mlm_step": self.mlm.step, "mlm_loss_nats": float(np.mean(losses)),
                                      "mlm_lr": self.mlm.schedule.get_last_lr()[0]})
                losses = []
            if stopping and not self.mlm.done:
                name = stop.signal_name or "signal"
                self.reporter.log(f"{name}: saved {self.run.last} at MLM update {self.mlm.step}; rerun to resume")
                return name
        self.reporter.finish()
        return None

    # ------------------------------------------------------------------------------------------
    def _check_renamed_keys(self) -> None:
        """A config.json from before issue #13's renames: one line naming the file and the key, before the run dir opens."""
        if self.cfg.run.resume != "never" and self.run.config_path.is_file():
            check_renamed_file(Config, self.run.config_path)

    def _refuse_indivisible_mlm_batch(self) -> None:
        """The MLM phase is data-parallel like NCE: its global batch must divide by the number of processes."""
        if self.mlm is not None and self.mlm.batch_size % self.dist.world_size:
            raise LmlabError(batch_not_divisible(self.mlm.batch_size, self.dist.world_size)
                             .replace("data.batch_size", "mlm.batch_size"))

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self._check_renamed_keys()
        self._refuse_indivisible_mlm_batch()  # before the run dir is touched
        resumed = self.run.prepare(self.config_record(), cfg.run.resume, cfg.run.force,
                                   length_fixed_by="its lr decays linearly to 0 at the last update")
        distributed.barrier()  # rank 0 has created (or moved aside) the run dir before any rank reads last.pt
        try:
            if resumed:
                self._restore(self.run.load_last(KIND, map_location="cpu", log=self.reporter.log))
        except BaseException:
            self.run.release()
            raise
        if resumed:
            self.run.truncate_metrics_after(self.step)
            self.reporter.log(f"resumed {self.run.path} at update {self.step}")
        else:
            self.reporter.log(f"training residual energy ({cfg.energy.kind}, {count_parameters(self.energy):,} parameters) "
                              f"on base LM {cfg.base_lm}: {cfg.schedule.max_steps} NCE updates")
        self._t0, self._step0, stopped_by = time.perf_counter(), self.step, None
        machine_at_start = machine_info()
        note_hardware(self.hardware_history, self.step, machine_at_start)
        with self.loop.stop_flag(self.run, self.reporter) as stop:
            if not self.mlm_done and not self.loop.eval_pending:
                stopped_by = self._pretrain_mlm(stop)
            if stopped_by is None:
                self.reporter.start(cfg.schedule.max_steps, "nce")
                stopped_by = self.loop.run()
            if stopped_by is None and (self.step == 0 or not self.run.best.exists()) and not self.loop.evaluate():
                stopped_by = stop.signal_name or "signal"  # a run that ends without a best.pt gets one
                self._save(is_best=False)
        best = self.best_valid if math.isfinite(self.best_valid) else None  # None: stopped before its first evaluation
        early = stopped_by is None and self.step < cfg.schedule.max_steps and self.patience_ran_out
        if early:
            self.reporter.log(f"stopped at update {self.step}: {self.evals_since_best} evaluations without a lower "
                              f"validation loss (valid.patience); best.pt holds the best")
        return {"run_dir": str(self.run.path), "step": self.step, "best_valid_nats": best, "stopped_by": stopped_by,
                **({"early_stop": f"{self.evals_since_best} evaluations without a lower validation loss "
                                  f"(valid.patience), at update {self.step} of {cfg.schedule.max_steps}"} if early else {}),
                "energy_params": count_parameters(self.energy),
                "machine": machine_at_end(machine_at_start), "hardware_history": self.hardware_history}


def train(cfg: Config, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train a residual energy on `cfg.base_lm`; returns a summary dict (run dir, updates, best valid NCE loss).
    Under torchrun/srun every process calls this; they train one model data-parallel and rank 0 writes."""
    with distributed.job(RunDir(cfg.run.dir).last, "lower data.batch_size or negatives.per_prefix"):
        return ResidualTrainer(cfg, reporter).fit()
