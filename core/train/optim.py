"""Optimizers and learning-rate schedules: SGD with plateau or per-epoch decay (the classic PTB recipe),
AdamW with linear warmup + cosine decay. The schedule is a small object with a plain `state_dict`."""

from __future__ import annotations

import math

import torch

from lmlab.core.train.config import OptimConfig, ScheduleConfig


def torch_fused(on: bool) -> bool | None:
    """torch.optim's `fused` argument for hardware.fused_optimizer: True, or None when off, so torch keeps its own
    choice (its foreach kernel on GPUs, the per-tensor loop on CPU); fused=False would force the loop on GPUs too."""
    return True if on else None


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters; `fused` (hardware.fused_optimizer): torch's fused kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name in ("sgd", "nt-asgd"):  # nt-asgd starts as plain SGD (Merity et al. 2018, Sec. 3); ASGD has no fused kernel
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=torch_fused(fused))
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]  # biases and norms are not decayed
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=torch_fused(fused))


def build_asgd(cfg: OptimConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The averaging phase of NT-ASGD: iterate averages from the switch on (t0=0, lambd=0, as AWD-LSTM)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=cfg.weight_decay)


def should_trigger_asgd(history: list[float], nonmono: int) -> bool:
    """NT condition (AWD-LSTM main.py): the newest validation loss (history[-1]) is worse than the best of the
    earlier ones, leaving out the `nonmono` evaluations just before it; needs more than `nonmono` earlier ones."""
    earlier, newest = history[:-1], history[-1]
    return len(earlier) > nonmono and newest > min(earlier[:-nonmono])


def averaged_state_dict(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The model's state dict with each parameter replaced by its ASGD average (`ax`); tied weights
    (one parameter under two names) get the average under both."""
    averages = {p.data_ptr(): optimizer.state[p]["ax"] for g in optimizer.param_groups for p in g["params"]
                if "ax" in optimizer.state.get(p, {})}
    return {k: (averages[v.data_ptr()].detach().clone() if v.data_ptr() in averages else v)
            for k, v in model.state_dict().items()}


class LRSchedule:
    """Sets the optimizer's lr from the step (warmup/cosine) or from events (plateau, epoch end)."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_steps: int):
        self.cfg = cfg
        self.base_lr = base_lr
        self.total_steps = max(total_steps, 1)
        self.lr = base_lr
        self.best = math.inf
        self.bad_evals = 0
        self.decays = 0
        self.lr_set = False  # set_lr_below_ppl has fired

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if c.name == "cosine":
            if c.warmup_steps and step < c.warmup_steps:
                return self.base_lr * (step + 1) / c.warmup_steps
            progress = min(1.0, (step - c.warmup_steps) / max(1, self.total_steps - c.warmup_steps))
            floor = self.base_lr * c.min_lr_ratio
            return floor + 0.5 * (self.base_lr - floor) * (1 + math.cos(math.pi * progress))
        if c.name in ("constant", "plateau") and c.warmup_steps and step < c.warmup_steps:
            return self.base_lr * (step + 1) / c.warmup_steps  # linear warmup, then the event-driven lr
        return self.lr

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def on_eval(self, valid_loss: float) -> bool:
        """Plateau rule; returns True when the lr was decayed (the trainer may reload the best weights). Then the
        one-off lr event (set_lr_below_ppl), in the order IMM's switch-on follows the plateau rule."""
        decayed = self._plateau(valid_loss)
        c = self.cfg
        if c.set_lr_below_ppl > 0 and not self.lr_set and math.exp(min(valid_loss, 700)) < c.set_lr_below_ppl:
            self.lr, self.lr_set = c.set_lr_to, True
        return decayed

    def _plateau(self, valid_loss: float) -> bool:
        if valid_loss < self.best:
            self.best, self.bad_evals = valid_loss, 0
            return False
        self.bad_evals += 1
        if self.cfg.name == "plateau" and self.bad_evals > self.cfg.patience:
            self.lr /= self.cfg.decay
            self.decays += 1
            self.bad_evals = 0
            return True
        return False

    def on_epoch_end(self, epoch: int) -> None:
        """Zaremba et al.: after `decay_start` epochs divide the lr by `decay` at every epoch end (step);
        or only at the listed epochs (multistep)."""
        step_decay = self.cfg.name == "step" and epoch >= self.cfg.decay_start
        if step_decay or (self.cfg.name == "multistep" and epoch in self.cfg.milestones):
            self.lr /= self.cfg.decay
            self.decays += 1

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def finished(self) -> bool:
        c = self.cfg
        return (c.min_lr > 0 and self.lr < c.min_lr) or (c.max_decays > 0 and self.decays >= c.max_decays)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "best": self.best, "bad_evals": self.bad_evals, "decays": self.decays, "lr_set": self.lr_set}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.best = float(state["lr"]), float(state["best"])
        self.bad_evals, self.decays = int(state["bad_evals"]), int(state["decays"])
        self.lr_set = bool(state.get("lr_set", False))  # checkpoints from before the option
