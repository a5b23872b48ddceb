"""`train-lm` configuration (the LM task). Every field's help text is shown by `lmlab train-lm --help`."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import option, section
from lmlab.core.imm.config import IMMConfig, NoisingConfig
from lmlab.core.models.config import ModelConfig


@dataclass
class DataConfig:
    dir: str = option("data/demo", "data dir written by `lmlab prep` (meta.json, tokenizer.json, train.bin, ...)")
    batch_size: int = option(20, "sequences per batch, summed over all processes (contiguous BPTT columns)")
    bptt: int = option(35, "tokens per training window (LSTM unroll length / Transformer sequence length)")
    valid_split: str = option("valid", "split used for validation, model selection and plateau decay")
    eval_batch_size: int = option(10, "columns of the validation stream")


@dataclass
class OptimConfig:
    name: str = option("sgd", "optimizer; nt-asgd is AWD-LSTM's non-monotonically triggered averaged SGD",
                       choices=("sgd", "adamw", "nt-asgd"))
    nonmono: int = option(5, "nt-asgd: switch to averaging when validation is worse than the best of all but the last N evaluations")
    lr: float = option(1.0, "peak learning rate")
    momentum: float = option(0.0, "SGD momentum")
    weight_decay: float = option(0.0, "weight decay (decoupled for AdamW)")
    betas: list[float] = option([0.9, 0.98], "AdamW betas")
    eps: float = option(1e-8, "AdamW epsilon")
    clip: float = option(5.0, "clip the global gradient norm to this (0: off)")
    loss_reduction: str = option(
        "mean_token", "loss the update differentiates: mean_token = mean NLL over the B x T window tokens (fairseq, "
        "nanoGPT); sum_time = NLL summed over the T unrolled steps, averaged over the B sequences (Zaremba et al.'s "
        "and the official IMM code): T times the gradient, so their lr and clip keep the paper's values. Logged "
        "losses are per token either way", choices=("mean_token", "sum_time"))
    grad_accum: int = option(1, "accumulate gradients over this many batches per update")


@dataclass
class ScheduleConfig:
    name: str = option("plateau", "plateau: divide lr when validation stalls (classic PTB); cosine: warmup + cosine; "
                       "step: divide lr by decay each epoch from decay_start (Zaremba); multistep: divide lr by decay "
                       "after each epoch in milestones (DeFINE WikiText-103: /10 at 15); constant",
                       choices=("plateau", "cosine", "step", "multistep", "constant"))
    epochs: int = option(0, "epochs to train (0: use max_steps)")
    max_steps: int = option(1000, "optimizer updates to train when epochs = 0")
    warmup_steps: int = option(0, "linear warmup updates (cosine)")
    min_lr_ratio: float = option(0.1, "cosine floor as a fraction of lr")
    decay: float = option(4.0, "divide lr by this on plateau / per epoch after decay_start (step)")
    decay_start: int = option(0, "first epoch (1-based) whose end divides lr (step schedule)")
    milestones: list[int] = option([], "multistep: epochs (1-based) whose end divides lr by decay, e.g. [15]")
    patience: int = option(0, "plateau: evaluations without improvement before decaying")
    reload_best: bool = option(False, "plateau: reload the best checkpoint's weights when decaying (official IMM code)")
    min_lr: float = option(0.0, "stop when the lr decays below this (0: never)")


@dataclass
class RunConfig:
    dir: str = option("runs/demo", "run dir: config.json, metrics.jsonl, checkpoints/, curves.png")
    resume: str = option("auto", "auto: continue a run with the same config; never: refuse a non-empty run dir; must: fail without a checkpoint",
                         choices=("auto", "never", "must"))
    force: bool = option(False, "with a non-empty run dir that cannot be resumed: move it aside to <dir>.old-<time> and start over")
    eval_interval: int = option(0, "evaluate every N updates (0: once per epoch, or 10 times per run)")
    save_interval: int = option(0, "checkpoint every N updates (0: at each evaluation)")
    keep: int = option(2, "keep the last N step checkpoints beside last.pt and best.pt")
    log_interval_s: float = option(10.0, "seconds between plain log lines (batch jobs)")


@dataclass
class HardwareConfig:
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps (one device per process; torchrun/srun for more)")
    precision: str = option("fp32", "autocast precision for the forward pass", choices=("fp32", "bf16", "fp16"))
    compile: bool = option(False, "torch.compile the model")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    dist_timeout_s: float = option(300.0, "collective timeout: a dead rank stops the job after this long instead of hanging")


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
    seed: int = option(1234, "random seed (model init, dropout, data noising)")
