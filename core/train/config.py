"""`train-lm` configuration (the LM task). Every field's help text is shown by `lmlab train-lm --help`."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import DEVICE, at_least, between, each, greater_than, option, section
from lmlab.core.imm.config import IMMConfig, NoisingConfig
from lmlab.core.models.config import ModelConfig


BF16_CPU_LSTM = "bf16 has no CPU LSTM kernel (oneDNN refuses it): use fp32 on a CPU, or bf16 on a CUDA device"


@dataclass
class DataConfig:
    dir: str = option("data/demo", "data dir written by `lmlab prep` (meta.json, tokenizer.json, train.bin, ...)")
    batch_size: int = option(20, "sequences per batch, summed over all processes (contiguous BPTT columns)", check=at_least(1))
    bptt: int = option(35, "tokens per training window (LSTM unroll length / Transformer sequence length)", check=at_least(1))
    variable_bptt: bool = option(
        False, "AWD-LSTM variable-length BPTT (Merity et al. 2018, Sec. 4.1; awd-lstm-lm main.py): each training "
        "window's length is max(5, int(N(b, 5))) with b = bptt, or b = bptt/2 with probability 0.05, and its update's "
        "lr is scaled by length/bptt (by the mean length/bptt over grad_accum windows); an epoch ends at the stream's end, "
        "so schedule.epochs counts epochs exactly and the update count is an estimate. Off: every window is bptt long")
    valid_split: str = option("valid", "split used for validation, model selection and plateau decay")
    eval_batch_size: int = option(10, "columns of the validation stream", check=at_least(1))


@dataclass
class OptimConfig:
    name: str = option("sgd", "optimizer; nt-asgd is AWD-LSTM's non-monotonically triggered averaged SGD",
                       choices=("sgd", "adamw", "nt-asgd"))
    nonmono: int = option(5, "nt-asgd: switch to averaging when validation is worse than the best of all but the last N evaluations", check=at_least(1))
    lr: float = option(1.0, "peak learning rate", check=greater_than(0))
    momentum: float = option(0.0, "SGD momentum", check=between(0, 1, hi_open=True))
    weight_decay: float = option(0.0, "weight decay (decoupled for AdamW)", check=at_least(0))
    betas: list[float] = option([0.9, 0.98], "AdamW betas", check=each(between(0, 1, hi_open=True)))
    eps: float = option(1e-8, "AdamW epsilon", check=greater_than(0))
    clip: float = option(5.0, "clip the global gradient norm to this (0: off)", check=at_least(0))
    loss_reduction: str = option(
        "mean_token", "loss the update differentiates: mean_token = mean NLL over the B x T window tokens (fairseq, "
        "nanoGPT); sum_time = NLL summed over the T unrolled steps, averaged over the B sequences (Zaremba et al.'s "
        "and the official IMM code): T times the gradient, so their lr and clip keep the paper's values. Logged "
        "losses are per token either way", choices=("mean_token", "sum_time"))
    grad_accum: int = option(1, "accumulate gradients over this many batches per update", check=at_least(1))
    activation_reg: float = option(0.0, "AWD-LSTM AR (alpha): + alpha x mean square of the last LSTM layer's dropped output (AWD-LSTM: 2)", check=at_least(0))
    temporal_reg: float = option(0.0, "AWD-LSTM TAR (beta): + beta x mean square of the step-to-step change of the last LSTM layer's output before dropout (AWD-LSTM: 1)", check=at_least(0))

    def problems(self):
        if len(self.betas) != 2:
            yield "betas", f"{self.betas} must hold two values (beta1, beta2)"


@dataclass
class ScheduleConfig:
    name: str = option("plateau", "plateau: divide lr when validation stalls (classic PTB); cosine: warmup + cosine; "
                       "step: divide lr by decay each epoch from decay_start (Zaremba); multistep: divide lr by decay "
                       "after each epoch in milestones (DeFINE WikiText-103: /10 at 15); constant",
                       choices=("plateau", "cosine", "step", "multistep", "constant"))
    epochs: int = option(0, "epochs to train (0: use max_steps)", check=at_least(0))
    max_steps: int = option(1000, "optimizer updates to train when epochs = 0", check=at_least(1))
    warmup_steps: int = option(0, "linear warmup updates (cosine, plateau, constant)", check=at_least(0))
    min_lr_ratio: float = option(0.1, "cosine floor as a fraction of lr", check=between(0, 1))
    decay: float = option(4.0, "divide lr by this on plateau / per epoch after decay_start (step)", check=greater_than(0))
    decay_start: int = option(0, "first epoch (1-based) whose end divides lr (step schedule)", check=at_least(0))
    milestones: list[int] = option([], "multistep: epochs (1-based) whose end divides lr by decay, e.g. [15]", check=each(at_least(1)))
    patience: int = option(0, "plateau: evaluations without improvement before decaying", check=at_least(0))
    reload_best: bool = option(False, "plateau: reload the best checkpoint's weights when decaying (official IMM code)")
    min_lr: float = option(0.0, "stop when the lr decays below this (0: never)", check=at_least(0))
    max_decays: int = option(0, "stop at this many lr decays in all, counted across any lr reset such as IMM's switch-on "
                             "(0: never); the official IMM code stops once decay_count > max_decays = 20, at the 21st", check=at_least(0))
    set_lr_below_ppl: float = option(0.0, "once validation perplexity first falls below this, set the lr to set_lr_to (0: never); "
                                     "a control arm for IMM's lr at switch-on (imm.lr_at_start) without IMM", check=at_least(0))
    set_lr_to: float = option(0.0, "the lr set when validation perplexity first falls below set_lr_below_ppl", check=at_least(0))


@dataclass
class RunConfig:
    dir: str = option("runs/demo", "run dir: config.json, metrics.jsonl, checkpoints/, curves.png")
    resume: str = option("auto", "auto: continue a run with the same config; never: refuse a non-empty run dir; must: fail without a checkpoint",
                         choices=("auto", "never", "must"))
    force: bool = option(False, "with a non-empty run dir that cannot be resumed: move it aside to <dir>.old-<time> and start over")
    eval_interval: int = option(0, "evaluate every N updates (0: once per epoch, or 10 times per run)", check=at_least(0))
    save_interval: int = option(0, "checkpoint every N updates (0: at each evaluation)", check=at_least(0))
    keep: int = option(2, "keep the last N step checkpoints beside last.pt and best.pt", check=at_least(0))
    log_interval_s: float = option(10.0, "seconds between plain log lines (batch jobs)", check=at_least(0))


@dataclass
class HardwareConfig:
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps (one device per process; torchrun/srun for more)", check=DEVICE)
    precision: str = option("fp32", "autocast precision for the forward pass", choices=("fp32", "bf16", "fp16"))
    compile: bool = option(False, "torch.compile the model")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", check=at_least(0))
    fused_optimizer: bool = option(False, "torch's fused SGD / AdamW kernel: one update for all parameters instead of "
                                   "a loop over tensors (faster, most on GPUs; the weights' last bits differ from the "
                                   "loop's, so a run keeps the setting it started with)")
    dist_timeout_s: float = option(300.0, "collective timeout: a dead rank stops the job after this long instead of hanging", check=greater_than(0))


@dataclass
class TrainConfig:
    data: DataConfig = section(DataConfig, "data")
    model: ModelConfig = section(ModelConfig, "model")
    optim: OptimConfig = section(OptimConfig, "optimizer")
    schedule: ScheduleConfig = section(ScheduleConfig, "learning-rate schedule and length")
    objective: str = option("ce", "training objective: cross-entropy, + induced model matching, or KN data noising",
                            choices=("ce", "imm", "kn-noising"))
    imm: IMMConfig = section(IMMConfig, "Induced Model Matching (Muneeb & Ohannessian, NeurIPS 2024)")
    noising: NoisingConfig = section(NoisingConfig, "KN noising baseline (Xie et al., ICLR 2017)")
    run: RunConfig = section(RunConfig, "run dir and checkpointing")
    hardware: HardwareConfig = section(HardwareConfig, "device, precision, compile")
    seed: int = option(1234, "random seed (model init, dropout, data noising)", check=between(0, 2**32 - 1))

    def problems(self):
        if self.hardware.precision == "bf16" and self.model.kind == "lstm" and self.hardware.device == "cpu":
            yield "hardware.precision", BF16_CPU_LSTM
        if self.data.variable_bptt and self.model.kind != "lstm":
            yield "data.variable_bptt", ("true needs model.kind=lstm (AWD-LSTM's variable-length windows run past "
                                         "data.bptt, and past a Transformer's context)")

    def environment_problems(self):
        """Rules that depend on this machine: checked when a command starts, never when a checkpoint's config loads."""
        if self.hardware.precision == "bf16" and self.model.kind == "lstm" and self.hardware.device == "auto":
            import torch
            if not torch.cuda.is_available():
                yield "hardware.precision", BF16_CPU_LSTM + " (hardware.device=auto found no GPU)"
