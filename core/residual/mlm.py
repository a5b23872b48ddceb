"""Optional masked-LM pre-training of the bidirectional energy before NCE.

The paper's strongest energies (BiT-Base*, BiT-Large*) start from RoBERTa, i.e. from a bidirectional
encoder pre-trained with masked language modelling on ~160 GB of text. No RoBERTa weights are loaded here:
this trains the same objective (BERT/RoBERTa masking: of the `mask_prob` selected tokens 80% -> [MASK],
10% -> random, 10% kept; AdamW betas 0.9/0.98, eps 1e-6, linear warmup then linear decay) on the training
windows, then drops the MLM head and keeps the encoder for NCE. Each update's windows and masks are a
function of (seed, update), and `MLMPretrainer.state_dict` holds the head, optimizer, schedule and
update count, so a long pre-training phase resumes exactly from a checkpoint.

Data-parallel (W processes): `batch_size` is the global batch. Every process draws the global batch's windows and
masks and takes its rows; the loss is the mean over the global batch's masked tokens (their count is reduced
first), and gradients are averaged in one all-reduce, so W processes make one process's update.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.core import distributed
from lmlab.core.residual.energy import BiTEnergy
from lmlab.core.residual.windows import Windows
from lmlab.core.train.optim import torch_fused


def mask_tokens(tokens: torch.Tensor, mask_id: int, vocab_size: int, prob: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted tokens, targets with -100 where not selected), both (N, L)."""
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    selected = u < prob
    r = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    rand_tok = torch.randint(vocab_size, tokens.shape, generator=generator, device=tokens.device)
    inp = torch.where(selected & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inp = torch.where(selected & (r >= 0.8) & (r < 0.9), rand_tok, inp)
    return inp, tokens.masked_fill(~selected, -100)


def _warmup_linear_decay(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


class MLMPretrainer:
    """Masked-LM updates of `energy`'s encoder (plus a throwaway vocabulary head), one `update()` at a time."""

    def __init__(self, energy: BiTEnergy, windows: Windows, *, steps: int, batch_size: int, lr: float, mask_prob: float,
                 seed: int, device, warmup_steps: int = 0, rank: int = 0, world_size: int = 1, fused: bool = False):
        self.energy, self.windows, self.steps, self.batch_size = energy, windows, steps, batch_size
        self.rank, self.world_size = rank, world_size
        self.mask_prob, self.seed, self.device = mask_prob, seed, device
        self.head = nn.Linear(energy.tok.embedding_dim, energy.vocab_size).to(device)
        self.params = list(energy.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, fused=torch_fused(fused))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, _warmup_linear_decay(warmup_steps, steps))
        self.step = 0
        self.gen = torch.Generator(device=device)

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def update(self) -> float:
        """One MLM update; returns its loss in nats per masked token."""
        self.energy.train()
        rng = np.random.default_rng([self.seed, 7, self.step])
        self.gen.manual_seed(self.seed * 1_000_003 + 7 + self.step)
        prefixes, conts = self.windows.get(rng.integers(0, len(self.windows), self.batch_size), self.device)
        tokens = torch.cat([prefixes, conts], dim=1)  # (B, P+C)
        inp, targets = mask_tokens(tokens, self.energy.mask_id, self.energy.vocab_size, self.mask_prob, self.gen)
        W = self.world_size
        if W > 1:  # this process's rows of the global batch (windows and masks drawn for all of it)
            rows = slice(self.rank * self.batch_size // W, (self.rank + 1) * self.batch_size // W)
            inp, targets = inp[rows], targets[rows]
        h = self.energy.hidden(inp, torch.ones_like(inp, dtype=torch.bool))  # (B/W, L, d)
        masked = targets != -100  # the vocabulary head runs on the ~15% masked positions only
        logits = self.head(h[masked])  # (M, V)
        if W == 1:
            loss = value = F.cross_entropy(logits, targets[masked])
        else:  # the mean over the global batch's masked tokens: sum here / count everywhere, x W for the average
            total = F.cross_entropy(logits, targets[masked], reduction="sum")
            count = distributed.all_reduce_sum(masked.sum().to(total.dtype))
            loss = total * (W / count)
            value = distributed.all_reduce_sum(total.detach()) / count
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if W > 1:
            distributed.average_gradients(self.params, W)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.schedule.step()
        self.step += 1
        return value.item()

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "optimizer": self.opt.state_dict(),
                "schedule": self.schedule.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])


def pretrain_mlm(energy: BiTEnergy, windows: Windows, *, steps: int, batch_size: int, lr: float, mask_prob: float,
                 seed: int, device, warmup_steps: int = 0, log: Callable[[str], None] | None = None) -> list[float]:
    """Train `energy`'s encoder as a masked LM for `steps` updates; returns the loss per update (nats per masked token)."""
    trainer = MLMPretrainer(energy, windows, steps=steps, batch_size=batch_size, lr=lr, mask_prob=mask_prob, seed=seed,
                            device=device, warmup_steps=warmup_steps)
    losses = []
    while not trainer.done:
        losses.append(trainer.update())
        if log is not None and trainer.step % max(1, steps // 10) == 0:
            log(f"mlm {trainer.step}/{steps} loss_nats={np.mean(losses[-max(1, steps // 10):]):.3f}")
    return losses
