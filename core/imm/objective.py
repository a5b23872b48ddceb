"""`objective = "imm"`: cross-entropy + λ · CE(P̂(· | x̄), Q̄(· | x̄)) (Muneeb & Ohannessian, NeurIPS 2024).

Schedule, as in the official LSTM code (uicdice/imm-language-modeling, lm.py):
- IMM is off until validation perplexity drops below `imm.start_below_ppl`; then the lr is set to
  `imm.lr_at_start` once (`on_eval`).
- While on, one batch in `imm.every` adds the sampled IMM term (Algorithm 1, or Algorithm 2 with
  `imm.algorithm = "serialized"`; which batch: `imm.sample_phase`) for the restricted contexts x̄ = the input tokens at the last `imm.j`
  positions (0: all) of every sequence, each with `imm.k` full contexts drawn from the training stream.
- The other batches add (with `imm.between = "smoothed"`) the official code's single-sample term:
  λ · CE((1-γ(x̄)) onehot(y) + γ(x̄) p_cont, Q(· | x)) on the batch itself, γ and p_cont from the bigram.

Loss scale. Every IMM term is a mean over its contexts, weighted by λ against the CE's mean over tokens;
the trainer multiplies the returned loss by T under `optim.loss_reduction = "sum_time"`, and the parts this
objective back-propagates itself get the same factor. With j = all positions this is the official loss:
Σ_t (1/B) Σ_b [CE_bt + λ · IMM_bt], main and IMM both summed over time and averaged over the batch.

Parts back-propagated here (`.backward()` scaled by λ·T/optim.grad_accum, the rest returned as the loss):
Algorithm 2, carried-state contexts (one BPTT position at a time), and with `imm.clip = "main"` every IMM
part, whose gradient is then kept aside and added by `after_clip` once the trainer has clipped the CE
gradient (the official code clips the main gradient only). With the shared forward the smoothed term is
CE + δ (δ linear in the logits), so only δ is back-propagated here and the CE part of the IMM gradient is
copied, × λ, by parameter hooks during the trainer's own backward of this batch. The trainer must call
`loss.backward()` before `optimizer.zero_grad()` (the usual order) and `after_clip` between clipping and the
step. Not usable with fp16 loss scaling (those parts would escape the GradScaler).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from lmlab.core.errors import LmlabError, NonFiniteLossError
from lmlab.core.imm.induced import ContextIndex, imm_backward_carried, imm_backward_serialized, imm_loss_sampled
from lmlab.core.imm.kn_bigram import KNBigram, load_or_build
from lmlab.core.models.embeddings import LinearOutput


class IMMObjective:
    def __init__(self, cfg, train_tokens: np.ndarray, vocab_size: int, kn: KNBigram, device: torch.device):
        self.cfg = c = cfg.imm
        if c.k < 1 or c.j < 0 or c.every < 1:
            raise LmlabError("imm.k and imm.every must be >= 1 and imm.j >= 0 (0: all positions)")
        if kn.vocab_size != vocab_size:
            raise LmlabError(f"KN bigram has vocabulary {kn.vocab_size} but the data has {vocab_size}; "
                             f"rebuild it (delete {c.bigram or 'kn_bigram.safetensors'} in the data dir)")
        self.carried = c.sampled_start == "carried"
        if self.carried and cfg.model.kind != "lstm":
            raise LmlabError("imm.sampled_start=carried needs model.kind=lstm (a carried recurrent state); use zero")
        if self.carried and c.algorithm == "serialized":
            raise LmlabError("imm.sampled_start=carried runs Algorithm 1 one BPTT position at a time; use imm.algorithm=sampled")
        if self.carried and c.context not in (0, cfg.data.bptt):
            raise LmlabError("imm.context sets the zero-start window; with imm.sampled_start=carried leave it 0 (the history is i+1 tokens)")
        if c.embedding_grad == "official" and (c.clip != "main" or cfg.model.output.tie):
            raise LmlabError("imm.embedding_grad=official needs imm.clip=main and an untied output (model.output.tie=false)")
        self.own_backward = c.algorithm == "serialized" or self.carried or c.clip == "main"
        if self.own_backward and cfg.hardware.precision == "fp16":
            raise LmlabError("imm.algorithm=serialized, imm.sampled_start=carried and imm.clip=main cannot run under fp16 "
                             "loss scaling; use hardware.precision=bf16 or fp32")
        length = cfg.data.bptt if self.carried else (c.context or cfg.data.bptt)
        if cfg.model.kind == "transformer":
            length = min(length, cfg.model.transformer.context)
        self.kn = kn
        self.index = ContextIndex(train_tokens, length, vocab_size)
        self.device = device
        self.sum_time = cfg.optim.loss_reduction == "sum_time"
        self.grad_scale = 1.0 / max(cfg.optim.grad_accum, 1)
        if c.mask_order == "smoothed_first" and c.smoothed_forward != "separate":
            raise LmlabError("imm.mask_order=smoothed_first orders two passes: it needs imm.smoothed_forward=separate")
        if c.sample_phase == "epoch" and cfg.data.variable_bptt:
            raise LmlabError("imm.sample_phase=epoch counts fixed windows of an epoch; it cannot run with data.variable_bptt")
        self.active = c.start_below_ppl <= 0
        self.calls = 0
        self.window: tuple[int, int] | None = None  # (epoch, window) of the next batch, from the trainer (`at_window`)
        self.pending: list[torch.Tensor | None] | None = None  # IMM gradient kept aside (clip = main)
        self._ce_hooks: list = []  # parameter hooks copying λ × this batch's CE gradient into `pending` (shared forward)
        self.imm_in_update = False
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        self.rng = np.random.default_rng([cfg.seed, 7919, rank])  # each data-parallel rank draws its own contexts

    # -- the loss -------------------------------------------------------------------------------

    def at_window(self, epoch: int, window: int) -> None:
        """The trainer's position before each batch: epoch and window index in it, both from 0."""
        self.window = (epoch, window)

    def _sampled_due(self) -> bool:
        every = self.cfg.every
        if self.cfg.sample_phase == "epoch":  # official lm.py: batch k of epoch e when k % every == e % every
            if self.window is None:
                raise LmlabError("imm.sample_phase=epoch needs the batch's (epoch, window) from the trainer (at_window)")
            epoch, window = self.window
            return window % every == epoch % every
        return self.calls % every == 0

    def __call__(self, model, inputs: torch.Tensor, targets: torch.Tensor, state, step: int):
        self._drop_ce_hooks()
        imm_on = self.active and model.training
        sampled = smoothed_first = False
        if imm_on:
            self.calls += 1
            sampled = self._sampled_due()  # sampled IMM (Algorithm 1 / 2) on one batch in `every`
            smoothed_first = (not sampled and self.cfg.between == "smoothed" and self.cfg.smoothed_forward == "separate"
                              and self.cfg.mask_order == "smoothed_first")
        lam = self.cfg.weight
        # the factor the trainer puts on a returned loss, for the parts back-propagated here
        scale = lam * (inputs.shape[1] if self.sum_time else 1) * self.grad_scale
        if smoothed_first:  # the official order: the single-sample pass draws its dropout masks before the CE pass
            smooth, smooth_nats = self._separate_smoothed(model, inputs, targets, state, scale)
        h, new_state = model.hidden(inputs, state)  # (B, T, d)
        nll = model.output.nll(h, targets)  # (B, T)
        ce = nll.mean()
        metrics = {"loss_nats": float(ce.detach()), "imm_active": float(self.active)}
        if not imm_on:
            return ce, new_state, metrics
        self.imm_in_update = True
        if sampled:
            extra, imm = self._sampled(model, inputs, state, scale)
            metrics.update(extra)
            _check_finite(extra["imm_loss_nats"], "sampled IMM")
            return (ce if imm is None else ce + lam * imm), new_state, metrics
        if self.cfg.between != "smoothed":
            return ce, new_state, metrics
        if self.cfg.smoothed_forward == "shared" and isinstance(model.output, LinearOutput):
            return self._shared_smoothed(model, h, inputs, targets, ce, new_state, metrics, scale)
        if self.cfg.smoothed_forward == "separate":  # the official graph: its own pass (own dropout masks), same state
            if not smoothed_first:
                smooth, smooth_nats = self._separate_smoothed(model, inputs, targets, state, scale)
        else:  # shared forward through an output layer without a weight matrix: the term on the CE's pass
            smooth, smooth_nats = self._smoothed(model, h, inputs, nll, scale, retain_graph=True)  # the CE still needs its graph
        metrics["imm_smoothed_nats"] = smooth_nats
        return (ce if smooth is None else ce + lam * smooth), new_state, metrics

    def _separate_smoothed(self, model, inputs: torch.Tensor, targets: torch.Tensor, state, scale: float):
        """The single-sample term on its own forward from the same carried state (own dropout masks)."""
        h, _ = model.hidden(inputs, state)
        return self._smoothed(model, h, inputs, model.output.nll(h, targets), scale, retain_graph=False)

    def _smoothed(self, model, h, inputs, nll, scale: float, retain_graph: bool):
        """(the term to add to the loss × λ, or None when back-propagated here (clip = main); its value)."""
        smooth = self._smoothed_term(model, h, inputs, nll)
        value = float(smooth.detach())
        if self.cfg.clip != "main":
            return smooth, value
        _check_finite(value, "smoothed IMM term")
        with self._aside(model, keep_embedding=True):
            (smooth * scale).backward(retain_graph=retain_graph)
        return None, value

    def _shared_smoothed(self, model, h, inputs, targets, ce, new_state, metrics, scale: float):
        """The smoothed term on the CE's own pass, as CE + δ (`_smoothed_delta`), without a second output projection.

        clip = total: the loss CE + λ (CE + δ). clip = main: δ is back-propagated here into the kept-aside gradient,
        and λ × the CE gradient the trainer's backward computes joins it through parameter hooks (so the CE is
        back-propagated once for both of its uses: clipped as the main gradient, unclipped inside the IMM one)."""
        delta = self._smoothed_delta(model, h, inputs, targets)
        smooth = ce + delta
        metrics["imm_smoothed_nats"] = float(smooth.detach())
        lam = self.cfg.weight
        if self.cfg.clip != "main":
            return ce + lam * smooth, new_state, metrics
        _check_finite(metrics["imm_smoothed_nats"], "smoothed IMM term")
        with self._aside(model, keep_embedding=True):
            (delta * scale).backward(retain_graph=True)  # the trainer's CE backward still needs the pass's graph
        self._keep_ce_gradient(model, lam)
        return ce, new_state, metrics

    def _sampled(self, model, inputs: torch.Tensor, state, scale: float):
        """The sampled term: (metrics, differentiable mean IMM loss or None when back-propagated here)."""
        contexts, windows, mask, positions = self._draw(inputs)
        c = self.cfg
        if c.algorithm == "sampled" and not self.carried and c.clip == "total":
            imm, extra = imm_loss_sampled(model, self.kn, contexts.reshape(-1), windows, mask)
            return extra, imm
        with self._aside(model, keep_embedding=False) if c.clip == "main" else contextlib.nullcontext():
            if self.carried:
                B, P = contexts.shape
                extra = imm_backward_carried(model, self.kn, contexts, windows.view(B, P, *windows.shape[1:]),
                                             positions, state, mask.view(B, P), scale=scale)
            elif c.algorithm == "serialized":
                extra = imm_backward_serialized(model, self.kn, contexts.reshape(-1), windows, mask, scale=scale)
            else:
                imm, extra = imm_loss_sampled(model, self.kn, contexts.reshape(-1), windows, mask)
                (imm * scale).backward()
        return extra, None

    def positions(self, length: int) -> list[int]:
        """BPTT positions whose inputs are the restricted contexts: the last j (j = 0: all)."""
        j = min(self.cfg.j or length, length)
        return list(range(length - j, length))

    def _draw(self, inputs: torch.Tensor):
        """Restricted contexts (B, j) = the inputs at the last j positions; k windows (B*j, k, L) for each."""
        positions = self.positions(inputs.shape[1])
        contexts = inputs[:, positions[0]:]  # (B, j)
        windows, found = self.index.sample(contexts.reshape(-1).cpu().numpy(), self.cfg.k, self.rng)
        to = dict(device=inputs.device)
        return contexts, torch.from_numpy(windows).to(**to), torch.from_numpy(found).to(**to), positions

    def _smoothed_term(self, model, h: torch.Tensor, inputs: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        """Official code's non-sampled IMM batches: CE((1-γ(x̄)) onehot(y) + γ(x̄) p_cont, Q(· | x)), mean over (B, T)."""
        logits = model.output.logits(h).float()  # (B, T, V)
        p_cont = self.kn.p_cont_tensor(logits.device)
        cross = torch.logsumexp(logits, -1) - logits @ p_cont  # -Σ_y p_cont(y) log Q(y | x): (B, T)
        gamma = self.kn.gamma_of(inputs)  # (B, T)
        return ((1 - gamma) * nll.float() + gamma * cross).mean()

    def _smoothed_delta(self, model, h: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The smoothed term minus the CE, mean over (B, T): (1-γ) nll + γ cross - nll = γ (z_y - p_cont · z) for
        logits z = W h + b. The log-normaliser cancels, so it is linear in z and needs only the target rows of W
        and p_cont W, never the (B, T, V) logits."""
        out = model.output
        p_cont = self.kn.p_cont_tensor(h.device)  # (V,)
        w_cont = p_cont.to(out.weight.dtype) @ out.weight  # (d,) = p_cont W
        margin = (h * (out.weight[targets] - w_cont)).sum(-1).float()  # (B, T): z_y - p_cont · z without the bias
        if out.bias is not None:
            margin = margin + (out.bias[targets] - out.bias @ p_cont.to(out.bias.dtype)).float()
        return (self.kn.gamma_of(inputs) * margin).mean()

    def _keep_ce_gradient(self, model, factor: float) -> None:
        """Add factor × the gradient of the trainer's next backward (this batch's CE) to the kept-aside gradient."""
        params = list(model.parameters())
        if self.pending is None:
            self.pending = [None] * len(params)

        def keep(n):
            def hook(grad):
                kept = grad * factor
                self.pending[n] = kept if self.pending[n] is None else self.pending[n] + kept
                return grad
            return hook
        self._ce_hooks = [p.register_hook(keep(n)) for n, p in enumerate(params) if p.requires_grad]

    def _drop_ce_hooks(self) -> None:
        for handle in self._ce_hooks:
            handle.remove()
        self._ce_hooks = []

    # -- the official clipping: IMM gradient kept aside, added after the CE gradient is clipped ----

    @contextlib.contextmanager
    def _aside(self, model, keep_embedding: bool):
        """The .backward() calls inside accumulate into `self.pending` instead of .grad (without the
        input embedding's part when keep_embedding is False: the official sampled IMM drops it)."""
        params = list(model.parameters())
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            yield
        finally:
            skip = set() if keep_embedding else {id(p) for p in model.embed.parameters()}
            if self.pending is None:
                self.pending = [None] * len(params)
            for n, (p, old) in enumerate(zip(params, saved)):
                g = p.grad
                if g is not None and id(p) not in skip:
                    self.pending[n] = g if self.pending[n] is None else self.pending[n] + g
                p.grad = old

    def after_clip(self, model) -> None:
        """Called by the trainer between clipping and the optimizer step: with imm.clip = main, add the
        IMM gradient kept aside (unclipped), and with imm.embedding_grad = official double the clipped CE
        gradient of the input embedding first."""
        self._drop_ce_hooks()
        pending, self.pending = self.pending, None
        imm_on, self.imm_in_update = self.imm_in_update, False
        if not imm_on or self.cfg.clip != "main":
            return
        params = list(model.parameters())
        if self.cfg.embedding_grad == "official":
            for p in model.embed.parameters():
                if p.grad is not None:
                    p.grad.mul_(2.0)
        if pending is None:
            return
        pending = [torch.zeros_like(p) if g is None else g for p, g in zip(params, pending)]
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            flat = torch.cat([g.reshape(-1) for g in pending])
            torch.distributed.all_reduce(flat)
            flat /= torch.distributed.get_world_size()
            pending = list(torch.split(flat, [g.numel() for g in pending]))
        for p, g in zip(params, pending):
            g = g.view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.add_(g)

    # -- schedule and resume --------------------------------------------------------------------

    def on_eval(self, step: int, valid_ppl: float, schedule) -> None:
        """Switch IMM on when validation perplexity first drops below the threshold (official: 90, lr -> 0.5).

        `schedule` is the trainer's LR schedule (its `set_lr` holds the lr the next updates use) or an optimizer."""
        if self.active or not (valid_ppl < self.cfg.start_below_ppl):
            return
        self.active = True
        if self.cfg.lr_at_start > 0 and schedule is not None:
            if hasattr(schedule, "set_lr"):
                schedule.set_lr(self.cfg.lr_at_start)
            else:
                for group in schedule.param_groups:
                    group["lr"] = self.cfg.lr_at_start

    def state_dict(self) -> dict:
        return {"active": self.active, "calls": self.calls, "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.active = bool(state["active"])
        self.calls = int(state["calls"])
        self.rng.bit_generator.state = json.loads(state["rng"])


def _check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(f"non-finite {what} ({value}); stopped without saving (try a lower optim.lr or imm.weight)")


def build_imm_objective(cfg, train_tokens: np.ndarray, vocab_size: int, data_dir: Path, device: torch.device) -> IMMObjective:
    kn = load_or_build(data_dir, cfg.imm.bigram or None)
    return IMMObjective(cfg, np.asarray(train_tokens), vocab_size, kn, device)
