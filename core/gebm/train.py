"""Training a Generalized EBM (Arbel, Zhou & Gretton, ICLR 2021, Algorithm 1), or its flow base by MLE.

One "step" is one base update preceded by its energy updates: 100 before base steps 0 and 1 and
every `init_every`-th, `energy_steps` (5) otherwise. The run dir holds config.json, metrics.jsonl
and checkpoints whose state (nets, both Adams, A, step, data position, RNG states, resolved config)
lets a killed run continue bit-for-bit where its last checkpoint was.

Data-parallel under torchrun/srun: `data.batch_size` is the global batch. Every process draws the global batch's
indices, latents and penalty weights from the same seeded streams and computes its own rows (`Shares`); gradients
are averaged in one all-reduce per update (the gradient penalty's double backward rules out DDP's hooks), the base
step's log-mean-exp over all latents is reduced exactly, and rank 0 alone writes. Batch-norm statistics (the image
generator's) are those of a process's rows, as under torch DDP.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from lmlab.core.config import check_renamed_file, to_dict
from lmlab.core import distributed, runlock
from lmlab.core.errors import LmlabError, NonFiniteLossError
from lmlab.core.gebm import data as gdata
from lmlab.core.gebm.config import Config  # noqa: F401  (re-exported for the CLI)
from lmlab.core.gebm.evaluate import log_partition_is, nll_rows
from lmlab.core.gebm.kale import (base_loss, energy_loss, gradient_penalty, init_log_partition, transform_grads,
                                  weight_l2_penalty)
from lmlab.core.gebm.models import build
from lmlab.core.gebm.plateau import fixed_decays
from lmlab.core.gebm.train_images import ImageEvaluation
from lmlab.core.machine import machine_at_end, machine_info, note_hardware, restored_hardware_history
from lmlab.core.reporting import NullReporter, Reporter
from lmlab.core.rundir import RunDir
from lmlab.core.train.loop import TrainLoop
from lmlab.core.train.batches import batch_not_divisible

KIND = "gebm"


class Batches:
    """Epochs of a seeded permutation; (epoch, pos) is the data position stored in checkpoints."""

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int, epoch: int = 0, pos: int = 0):
        self.data, self.batch_size, self.seed = data, min(batch_size, len(data)), seed
        self.epoch, self.pos = epoch, pos
        self._perm = self._make_perm()

    def _make_perm(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.data), generator=g)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.data):
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._make_perm()
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.data[idx]


class Shares:
    """This process's rows of the global batch (B data rows, N >= B latents) among W processes: data rows
    [rB/W, (r+1)B/W); latents the same rows (the gradient penalty pairs data row i with latent row i) plus an
    equal share of rows B..N. Equal shares make one process's means over the global batch the mean of the W
    processes' means. One process: the whole batch, untouched."""

    def __init__(self, rank: int, world: int, batch: int, n_fake: int, device: torch.device | str = "cpu"):
        if batch % world or n_fake % world:  # data.batch_size itself was checked first; a data set smaller than it
            raise LmlabError(f"{batch} data rows and {n_fake} latents per update cannot be shared by {world} processes: "
                             f"set data.batch_size to a multiple of {world} no larger than the data set")
        self.world = world
        self.rows = slice(rank * batch // world, (rank + 1) * batch // world)
        extra = n_fake - batch
        self.fake_rows = torch.cat([torch.arange(batch)[self.rows],
                                    batch + torch.arange(rank * extra // world, (rank + 1) * extra // world)]).to(device)

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.world == 1 else x[self.rows]

    def fake(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.world == 1 else z[self.fake_rows]


def _global_base_loss(e_fake: torch.Tensor, e_real: torch.Tensor | None, n_fake: int, rank: int, world: int):
    """Algorithm 1's base loss over the global batch from this process's rows: (its value, a surrogate whose gradient,
    once averaged over the processes, is the global loss's). -log mean exp(-E) has gradient softmax(-E) over *all*
    latents, so the normaliser is reduced across processes first."""
    neg = -e_fake.detach()
    lse = torch.zeros(world, dtype=neg.dtype, device=neg.device)
    lse[rank] = torch.logsumexp(neg, 0)
    lse = torch.logsumexp(distributed.all_reduce_sum(lse), 0)  # log sum exp(-E) over every latent
    weights = torch.exp(neg - lse)  # softmax(-E) over the global latent batch, this process's rows
    value = -(lse - math.log(n_fake))
    surrogate = world * (weights * e_fake).sum()  # averaged over W processes: sum_i w_i grad E(G(z_i))
    if e_real is not None:
        value = value - distributed.all_reduce_mean(e_real.detach().mean())
        surrogate = surrogate - e_real.mean()
    return value, surrogate


def _check(value: torch.Tensor, what: str, step: int) -> float:
    v = float(value.detach())
    if not math.isfinite(v):
        raise NonFiniteLossError(f"{what} became {v} at base step {step}; the last good checkpoint is kept "
                                 "(lower optim.lr_energy/lr_base or raise optim.penalty)")
    return v


def _validate(cfg: Config) -> None:
    """Rules across sections (each key's own range is checked by the config)."""
    if cfg.optim.objective == "mle" and cfg.data.kind != "density":
        raise LmlabError("optim.objective=mle needs a tractable base: only density runs (data.kind=density)")
    milestones(cfg.optim.lr_milestones)
    if cfg.optim.lr_plateau and (cfg.data.kind != "image" or cfg.eval.fid_samples < 3):
        raise LmlabError("optim.lr_plateau tests image samples' features at every evaluation: it needs data.kind=image "
                         "and eval.fid_samples >= 3 (official: 50000)")
    if cfg.eval.fid_samples and cfg.data.kind != "image":
        raise LmlabError("eval.fid_samples scores generated images: only for data.kind=image")


def milestones(text: str) -> list[int]:
    try:
        return sorted(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise LmlabError(f"optim.lr_milestones={text!r}: expected a comma list of integers, e.g. 50,500,750") from None


def lr_factor(updates: int, steps: list[int], decay: float, events: int = 0) -> float:
    """MultiStepLR stepped once per update (official UCI runs): decay^(#milestones reached); times decay^events for
    the images schedule's fixed and plateau decays (core/gebm/plateau.py)."""
    f = decay ** sum(1 for m in steps if updates >= m)
    return f * decay ** events if events else f


def train(cfg: Config, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train a GEBM (or its base by MLE); returns a summary dict. Under torchrun/srun every process calls this;
    they train one model data-parallel and rank 0 writes."""
    with distributed.job(RunDir(cfg.run.dir).last, "lower data.batch_size (the latent batch is optim.noise_factor x it)"):
        try:
            return _train(cfg, reporter)
        finally:
            runlock.release(Path(cfg.run.dir))  # also when data or model set-up fails after the run dir was locked


def _train(cfg: Config, reporter: Reporter | None = None) -> dict[str, Any]:
    reporter = reporter or Reporter()
    _validate(cfg)
    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    dist = distributed.init(cfg.hardware.device, cfg.hardware.dist_timeout_s)
    device, world = dist.device, dist.world_size
    if not dist.is_main:
        reporter = NullReporter()  # rank 0 reports for the job
    if cfg.data.batch_size % world:
        raise LmlabError(batch_not_divisible(cfg.data.batch_size, world))
    rundir = RunDir(cfg.run.dir, is_main=dist.is_main)
    if cfg.run.resume != "never":
        check_renamed_file(Config, rundir.config_path)  # a run dir from before issue #13's renames
    resuming = rundir.prepare(to_dict(cfg), cfg.run.resume, cfg.run.force)
    distributed.barrier()  # rank 0 has created (or moved aside) the run dir before any rank reads last.pt

    # data -------------------------------------------------------------------------------------
    raw = gdata.load_for_config(cfg.data)
    if cfg.data.kind == "image":
        train_x, valid_x, data_dim = torch.as_tensor(raw), None, None  # uint8, converted per batch
        prep = gdata.to_float
    else:
        train_x, valid_x = torch.as_tensor(raw["train"]), torch.as_tensor(raw["valid"]).to(device)
        test_x = torch.as_tensor(raw["test"]).to(device) if cfg.eval.test_each_eval else None
        data_dim, prep = train_x.shape[1], (lambda b: b)
    reporter.log(f"gebm: {cfg.data.dataset} train={len(train_x)} objective={cfg.optim.objective} device={device}")

    # model ------------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    base, energy = build(cfg, data_dim)
    base.to(device)
    energy.to(device)
    log_partition = torch.nn.Parameter(torch.zeros((), device=device))
    o = cfg.optim
    opt_e = torch.optim.Adam(list(energy.parameters()) + [log_partition], lr=o.lr_energy, betas=(o.beta1, o.beta2))
    opt_b = torch.optim.Adam(base.parameters(), lr=o.lr_base, betas=(o.beta1, o.beta2))
    gen = torch.Generator().manual_seed(cfg.seed)
    batch_size, max_steps = cfg.data.batch_size, cfg.schedule.max_steps
    eval_every = cfg.run.eval_interval or max(1, max_steps // 10)
    batches = Batches(train_x, batch_size, cfg.seed)
    step, best, updates = 0, math.inf, 0
    wall_before, t0 = 0.0, time.monotonic()  # t0 restarts when the updates begin
    hardware_history: list[list[Any]] = []  # what each stretch of a run resumed across processes ran on
    energy_done = 0  # energy updates already made in the current base step (a stop can land between them)
    window = {"sums": {}, "count": 0}
    lr_steps = milestones(o.lr_milestones)
    images_eval = (ImageEvaluation(cfg, raw, device, o.lr_plateau_window // eval_every + 1 if o.lr_plateau else None)
                   if cfg.eval.fid_samples else None)
    plateau_decays = 0  # rank 0's count, shared by every rank after each evaluation

    def lr_events() -> int:  # the images schedule's decays so far (official trainer.py, use_scheduler)
        return fixed_decays(step, o.lr_decay_every, eval_every if o.lr_plateau else None) + plateau_decays
    # the official weight term sums over the combined module's weights, the base's included (constant here: the
    # base is frozen in the energy step), and divides by all their shape dims, so the energy's share is as there
    penalised = list(energy.parameters()) + (list(base.parameters()) if cfg.model.energy == "flow-combined" else [])
    n_fake = o.noise_factor * batch_size
    shares = Shares(dist.rank, world, batches.batch_size, n_fake, device)
    energy_params = list(energy.parameters()) + [log_partition]

    def averaged(*values: torch.Tensor) -> list[torch.Tensor]:  # the global batch's figures, the same on every rank
        if world == 1:
            return [v.detach() for v in values]
        return list(distributed.all_reduce_mean(torch.stack([v.detach().double() for v in values])).unbind())

    def set_lr() -> None:
        f = lr_factor(updates, lr_steps, o.lr_decay, lr_events())
        for opt, lr in ((opt_e, o.lr_energy), (opt_b, o.lr_base)):
            for group in opt.param_groups:
                group["lr"] = lr * f

    def fake_batch(n: int, grad: bool, share: bool = True) -> torch.Tensor:
        z = base.sample(n, gen, device)  # every process draws the global latents: the streams stay in step
        z = shares.fake(z) if share else z
        with torch.set_grad_enabled(grad):
            return base(z)

    if resuming:
        # on the CPU: RNG states must stay CPU byte tensors (map_location=cuda broke resume on a GPU, found by make
        # gpu-check); load_state_dict copies the network and optimizer states to their parameters' device
        st = rundir.load_last(KIND, map_location="cpu", log=reporter.log)
        base.load_state_dict(st["base"])
        energy.load_state_dict(st["energy"])
        with torch.no_grad():
            log_partition.copy_(st["log_partition"].to(device))
        opt_e.load_state_dict(st["opt_energy"])
        opt_b.load_state_dict(st["opt_base"])
        step, best, updates = int(st["step"]), float(st["best_metric"]), int(st.get("updates", 0))
        wall_before = float(st.get("wall_s") or 0.0)  # training time of the processes before this one
        hardware_history = restored_hardware_history(st)
        energy_done = int(st.get("energy_steps_done", 0))  # stopped inside a base step's energy phase
        window = st.get("metrics_window") or window  # the rows averaged since the last metrics line
        gen.set_state(st["rng"]["generator"])
        torch.set_rng_state(st["rng"]["torch"])
        if "cuda" in st["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
        batches = Batches(train_x, batch_size, cfg.seed, *st["data_pos"])
        if images_eval and images_eval.plateau and st.get("plateau"):
            images_eval.plateau.load_state_dict(st["plateau"])
            plateau_decays = images_eval.plateau.decays
        rundir.truncate_metrics_after(step)
        reporter.log(f"resumed {rundir.last} at base step {step}")
    elif o.objective == "gebm":
        base.eval()
        a0 = init_log_partition(energy, lambda: fake_batch(n_fake, False, share=False), o.init_log_partition_batches)
        with torch.no_grad():
            log_partition.fill_(a0)  # A_0 = log mean exp(-E(G(z)))
        reporter.log(f"initial log-partition A = {a0:.4f}")

    def state() -> dict[str, Any]:
        return {"config": to_dict(cfg), "objective": o.objective, "step": step, "best_metric": best, "updates": updates,
                "data_dim": data_dim, "base": base.state_dict(), "energy": energy.state_dict(),
                "log_partition": log_partition.detach().cpu().clone(), "opt_energy": opt_e.state_dict(),
                "energy_steps_done": energy_done, "metrics_window": {"sums": dict(sums), "count": count},
                "wall_s": wall_before + time.monotonic() - t0, "hardware_history": hardware_history,
                "opt_base": opt_b.state_dict(), "data_pos": [batches.epoch, batches.pos],
                "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state(),
                        **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {})},
                **({"plateau": images_eval.plateau.state_dict()} if images_eval and images_eval.plateau else {})}

    def evaluate() -> dict[str, float]:
        nonlocal plateau_decays
        if images_eval is not None:
            # rank 0 alone samples and scores; its stop polls are collectives, so under torchrun a stop waits for it
            poll = loop.poll_in_validation if world == 1 else (lambda chunk: None)
            out = images_eval(base, cfg.seed, poll) if dist.is_main else {}
            decays = images_eval.plateau.decays if dist.is_main and images_eval.plateau else 0
            if world > 1:  # rank 0 decides: every rank steps its learning rates with it
                decays = int(distributed.all_reduce_sum(torch.tensor(float(decays), device=device)).item())
            plateau_decays = decays
            return {**out, "lr_factor": lr_factor(updates, lr_steps, o.lr_decay, lr_events())} if out else {}
        if valid_x is None:
            return {}
        base.eval()
        energy.eval()
        if o.objective == "mle":
            r = nll_rows(base, energy, valid_x, 0.0)
            out = {"valid_nll_base_nats": r["nll_base_nats"]}
            if test_x is not None:
                out["test_nll_base_nats"] = nll_rows(base, energy, test_x, 0.0)["nll_base_nats"]
            return out
        z = log_partition_is(base, energy, cfg.eval.is_samples, torch.Generator().manual_seed(1234), device)
        r = nll_rows(base, energy, valid_x, z["log_z"])
        out = {"valid_nll_gebm_nats": r["nll_gebm_nats"], "valid_nll_base_nats": r["nll_base_nats"],
               "log_z_is": z["log_z"], "is_ess_frac": z["ess_frac"]}
        if test_x is not None:  # the same log Z estimate: the official min-over-test rule, reported only
            t = nll_rows(base, energy, test_x, z["log_z"])
            out.update(test_nll_gebm_nats=t["nll_gebm_nats"], test_nll_base_nats=t["nll_base_nats"])
        return out

    def update() -> bool:
        """One base step of Algorithm 1 after its energy steps (or one MLE step); False: a stop came mid-phase."""
        nonlocal step, updates, energy_done, sums, count
        rec: dict[str, float] = {}
        if o.objective == "gebm":
            n_e = o.energy_steps_init if (step < 2 or step % o.init_every == 0) else o.energy_steps
            base.eval()
            energy.train()
            for p in base.parameters():  # a combined energy reads log b(x): no base grads in the energy step
                p.requires_grad_(False)
            for _ in range(energy_done, n_e):  # energy step of Algorithm 1
                if loop.stop_requested():  # a long energy phase (100 steps at init) must not delay a SLURM stop
                    break
                real = shares.real(prep(batches.next())).to(device)
                fake = fake_batch(n_fake, False)
                e_real, e_fake = energy(real), energy(fake)
                loss = energy_loss(e_real, e_fake, log_partition)
                if o.penalty > 0:  # the global batch's weights, this process's rows
                    alpha = None if world == 1 else shares.real(torch.rand((len(real) * world,) + (1,) * (real.dim() - 1), generator=gen))
                    pen = gradient_penalty(energy, real, fake, gen, alpha=alpha)
                else:
                    pen = torch.zeros((), device=device)
                if o.penalty > 0 and o.penalty_type == "gradient_l2":
                    pen = pen + weight_l2_penalty(penalised)
                loss_all, pen_all = averaged(loss, pen)  # every rank checks the same figures
                opt_e.zero_grad(set_to_none=True)
                (loss + o.penalty * pen).backward()
                if world > 1:
                    distributed.average_gradients(energy_params, world)
                if o.grad_transform:  # on the global gradient: the transform is not linear
                    transform_grads(energy.parameters(), log_partition)
                set_lr()
                opt_e.step()
                updates += 1
                rec["energy_loss_nats"] = _check(loss_all, "energy loss", step)
                rec["grad_penalty"] = float(pen_all)
                energy_done += 1
            if energy_done < n_e:  # stopped mid-phase: the saved run makes the remaining energy steps when resumed
                for p in base.parameters():
                    p.requires_grad_(True)
                if energy_done:
                    reporter.log(f"stopped after {energy_done} energy updates of base step {step + 1}")
                return False
            energy_done = 0
            rec["kale_nats"] = -rec.get("energy_loss_nats", float("nan"))
            for p in base.parameters():
                p.requires_grad_(True)
            base.train()
            energy.eval()
            for p in energy.parameters():
                p.requires_grad_(False)
            real = shares.real(prep(batches.next())).to(device)
            e_fake, e_real = energy(fake_batch(n_fake, True)), energy(real)
            if world == 1:
                lb = lb_value = base_loss(e_fake, e_real)  # base step of Algorithm 1
            else:
                lb_value, lb = _global_base_loss(e_fake, e_real, n_fake, dist.rank, world)
            for p in energy.parameters():
                p.requires_grad_(True)
            rec["log_partition_A"] = float(log_partition.detach())
        else:
            base.train()
            lb = -base.log_prob(shares.real(prep(batches.next())).to(device)).mean()  # maximum likelihood baseline
            (lb_value,) = averaged(lb)
        _check(lb_value, "base loss", step)  # before backward: every rank raises, none waits in the all-reduce
        opt_b.zero_grad(set_to_none=True)
        lb.backward()
        if world > 1:
            distributed.average_gradients(list(base.parameters()), world)
        set_lr()
        opt_b.step()
        updates += 1
        rec["base_loss_nats"] = float(lb_value.detach())
        step += 1
        for k, v in rec.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if step % cfg.run.log_every == 0 or step == max_steps:
            elapsed = time.monotonic() - t0
            row = {"step": step, **{k: v / count for k, v in sums.items()},
                   "s_per_step": elapsed / max(step - start_step, 1)}
            rundir.log_metrics(row)
            reporter.update(step, row)
            sums, count = {}, 0
        else:
            reporter.update(step, rec)  # a progress line every run.log_interval_s between metrics lines
        return True

    def record(ev: dict[str, float]) -> None:
        nonlocal best
        metric = ev.get("valid_nll_gebm_nats", ev.get("valid_nll_base_nats", -step))
        is_best = metric < best
        best = min(best, metric)
        if ev:
            rundir.log_metrics({"step": step, **ev})
            reporter.log(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in ev.items()))
        rundir.save(state(), KIND, step, is_best=is_best, keep=cfg.run.keep)

    # loop -------------------------------------------------------------------------------------
    loop = TrainLoop(update=update, measure=evaluate, record=record, step=lambda: step, device=device, log=reporter.log,
                     save=lambda is_best: rundir.save(state(), KIND, step, is_best=is_best, keep=cfg.run.keep),
                     finished=lambda: step >= max_steps, eval_due=lambda: step % eval_every == 0 or step == max_steps,
                     save_due=lambda: False, last=rundir.last)
    t0, start_step, sums, count = time.monotonic(), step, dict(window["sums"]), int(window["count"])
    machine_at_start = machine_info()
    note_hardware(hardware_history, step, machine_at_start)
    reporter.start(max_steps, "gebm")
    with loop.stop_flag(rundir, reporter):
        stopped_by = loop.run()
    return {"run_dir": str(rundir.path), "step": step, "completed": step >= max_steps,
            "stopped_by": stopped_by, "best_metric": best if math.isfinite(best) else None, "objective": o.objective,
            "log_partition_A": float(log_partition.detach()), "updates": updates, "seconds": time.monotonic() - t0,
            "wall_s": wall_before + time.monotonic() - t0,
            "machine": machine_at_end(machine_at_start), "hardware_history": hardware_history}
