"""Configuration of a GEBM run (Arbel, Zhou & Gretton, ICLR 2021): data, nets, Algorithm 1, evaluation.

Defaults are the paper's CIFAR-10 values (batch 128, Adam 1e-4 with betas (0.5, 0.999), 5 energy
steps per base step, 100 for the first two base steps and after every 500th, gradient penalty 1,
temperature 100). CPU presets shrink sizes (widths, steps, data subset), never the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.config import DEVICE, Check, at_least, between, greater_than, option, section

MILESTONES = Check(lambda v: all(int(x) >= 1 for x in v.split(",") if x.strip()),
                   "a comma list of positive update counts, e.g. 50,500,750", "50,x")
DATASETS = ("cifar10", "redwine", "whitewine", "hepmass", "miniboone", "synthetic-images", "synthetic-density")


@dataclass
class DataConfig:
    kind: str = option("image", "image (32x32 RGB in [-1,1]) or density (tabular UCI data)", choices=("image", "density"))
    dataset: str = option("cifar10", "which loader to use", choices=DATASETS)
    path: str = option("", "dataset path: CIFAR-10 pickle dir / image folder / .tar.gz; UCI .csv/.npy/.npz")
    split: str = option("train", "image split to train on (folder/tarball subdir, or pickle data_batch_*)")
    subset: int = option(0, "use only the first N training images/rows after shuffling (0 = all)", check=at_least(0))
    dequantise: bool = option(True, "density: uniform dequantisation (official code: wine only)")
    permute_columns: bool = option(True, "density: random column permutation as the official loader does")
    ntest: int = option(0, "density: test rows taken from the end (0 = 10%; official HepMass: 174900)", check=at_least(0))
    split_seed: int = option(1, "density: seed of the shuffle/dequantise/permute preprocessing (official default 1)", check=between(0, 2**32 - 1))
    batch_size: int = option(128, "data rows/images per update (the latent batch is optim.noise_factor x this)",
                             check=at_least(1))


@dataclass
class ModelConfig:
    latent_dim: int = option(100, "image: dimension of the latent Gaussian (density: equals the data dimension)", check=at_least(1))
    generator: str = option("dcgan", "image base network: dcgan, or resnet-sn (the official configs/training.yaml)",
                            choices=("dcgan", "resnet-sn"))
    energy: str = option("sn-convnet", "energy network: sn-convnet / dcgan / resnet-sn (image); flow-combined (official UCI "
                         "runs: E = -log p_phi + log b, so Q = p_phi), flow (E = -log p_phi) or mlp (density)",
                         choices=("sn-convnet", "dcgan", "resnet-sn", "flow-combined", "flow", "mlp"))
    energy_floor: float = option(10.0, "image: critic output truncated below at -floor, E = relu(E + floor) - floor "
                                 "(official default max=10; 0 = no truncation)", check=at_least(0))
    width: int = option(64, "image: channel width (dcgan / sn-convnet: a multiplier, 8w channels at 4x4, paper 64; "
                        "resnet-sn: the channels of every block, official 128)", check=at_least(1))
    flow: str = option("nvp", "density: flow family of the base and flow energies: nvp (RealNVP, the official UCI "
                       "runs), maf (flow_transforms MADE blocks, order reversed between them) or made (one MADE layer)",
                       choices=("nvp", "maf", "made"))
    flow_transforms: int = option(5, "density: RealNVP coupling layers or MAF blocks (official: 5)", check=at_least(1))
    flow_hidden: int = option(100, "density: hidden units of each coupling network (official: 100)", check=at_least(1))
    mlp_hidden: int = option(256, "density: hidden units of the MLP energy", check=at_least(1))


@dataclass
class OptimConfig:
    objective: str = option("gebm", "gebm = Algorithm 1; mle = train the flow base alone by maximum likelihood "
                            "(density baseline)", choices=("gebm", "mle"))
    energy_steps: int = option(5, "energy updates per base update", check=at_least(0))
    energy_steps_init: int = option(100, "energy updates before the first two base updates and every init_every-th", check=at_least(0))
    init_every: int = option(500, "base updates between long energy phases", check=at_least(1))
    noise_factor: int = option(1, "latent batch = noise_factor x data.batch_size (official UCI runs: 20)", check=at_least(1))
    lr_energy: float = option(1e-4, "Adam learning rate of the energy and of A", check=greater_than(0))
    lr_base: float = option(1e-4, "Adam learning rate of the base", check=greater_than(0))
    beta1: float = option(0.5, "Adam beta1", check=between(0, 1, hi_open=True))
    beta2: float = option(0.999, "Adam beta2", check=between(0, 1, hi_open=True))
    penalty: float = option(1.0, "weight of the gradient penalty mean ||grad E||^2 at data/fake interpolates", check=at_least(0))
    penalty_type: str = option("gradient", "gradient: mean ||grad_x E||^2; gradient_l2: that plus sum ||w||^2 / "
                               "sum of weight-shape dims (official default and UCI configs)",
                               choices=("gradient", "gradient_l2"))
    grad_transform: bool = option(False, "official grad_clip: energy grads g -> 2g/(1+g^2), A's grad g -> g/(1-g) "
                                  "before Adam (official UCI runs)")
    lr_milestones: str = option("", "comma list of update counts (energy+base) where both learning rates are "
                                "multiplied by lr_decay (official UCI: 50,500,750)", check=MILESTONES)
    lr_decay: float = option(0.8, "learning-rate factor at each milestone, fixed decay or plateau (official 0.8)",
                             check=greater_than(0))
    lr_decay_every: int = option(0, "multiply both learning rates by lr_decay at every multiple of this many base "
                                 "steps, except evaluation steps when lr_plateau is on (official images trainer: "
                                 "5000, giving 5000, 15000, 25000, ... beside evaluations every 2000); 0 = never",
                                 check=at_least(0))
    lr_plateau: bool = option(False, "images: at every evaluation, test whether the base's samples are significantly "
                              "closer to the data than lr_plateau_window base steps earlier (relative MMD on the "
                              "eval.fid_samples features); 3 evaluations in a row without (p > 0.1) multiply both "
                              "learning rates by lr_decay (official utils/fid_scheduler.py MMDScheduler)")
    lr_plateau_window: int = option(20000, "base steps between the samples the plateau test compares (official "
                                    "oldest_fid_iter); the ring holds window / run.eval_interval + 1 evaluations",
                                    check=at_least(1))
    init_log_partition_batches: int = option(100, "batches used to initialise A = log mean exp(-E(G(z)))", check=at_least(1))


@dataclass
class ScheduleConfig:
    """Run length. The learning rates step at absolute update counts (optim.lr_milestones), not at a fraction of
    the run, so a run dir may be resumed with a larger max_steps to train longer."""
    max_steps: int = option(150000, "base (generator) updates to train, each after its energy updates (Algorithm 1); "
                            "for optim.objective=mle the number of MLE updates", check=at_least(1))


@dataclass
class EvalConfig:
    is_samples: int = option(20000, "density: base samples for the importance-sampling estimate of log Z", check=at_least(1))
    test_each_eval: bool = option(False, "density: also score the test split at every evaluation (test_nll_* in "
                                  "metrics.jsonl): the official UCI tables take the minimum test NLL over training, "
                                  "reported beside the validation-selected one; never used for selection")
    fid_samples: int = option(0, "images: base samples (the generator alone, fixed latents) scored at every "
                              "evaluation: FID and KID against the training images, and the plateau test's "
                              "features (official: 50000); 0 = no image evaluation", check=at_least(0))
    inception: str = option("", "images: Inception-v3 FID weights (a pytorch-fid pt_inception-2015-12-05 state "
                            "dict; never downloaded); empty = a small seeded random conv net, for development only")
    real_stats: str = option("", "images: .npz cache of the training images' features (FID statistics and KID "
                             "pool), computed at the first evaluation when absent; empty = recomputed each run")
    # FID/KID and sampling after training are separate steps (python -m lmlab.core.gebm.evaluate, lmlab sample:
    # SamplerConfig), so a training run has no sampler keys to get out of step with them.


SAMPLERS = ("kla", "ula", "none")


@dataclass
class SamplerConfig:
    """Latent Langevin sampling of a trained GEBM (Algorithms 2-3): the one set of sampler defaults.

    Used by `lmlab sample` (GEBM checkpoints; a preset's `[sample]` table fills it, flags override),
    `python -m lmlab.core.gebm.evaluate` (FID/KID), bench/gebm_images.py and pipelines/gebm.mk.
    Defaults are the official CIFAR-10 sampling run (GeneralizedEBM scripts.sh + configs/sampling.yaml:
    `--lmc_gamma=0.0001`, `lmc_kappa: 100`, `num_sampler_steps: 1000`, temperature 100, λ ×0.1 every 200 steps).
    """
    sampler: str = option("kla", "kla (Algorithm 3), ula (Algorithm 2) or none (the generator alone on the same z0)",
                          choices=SAMPLERS)
    steps: int = option(1000, "Langevin steps", check=at_least(0))
    step_size: float = option(1e-4, "lambda, the official --lmc_gamma: ULA step lambda; KLA time step h = 2 sqrt(lambda)",
                             check=greater_than(0))
    beta: float = option(100.0, "inverse temperature of the energy in U(z) = |z|^2/2 + beta E(G(z))", check=at_least(0))
    friction: float = option(100.0, "KLA friction kappa (official lmc_kappa)", check=greater_than(0))
    mass: float = option(1.0, "KLA mass u (official: 1)", check=greater_than(0))
    decay_every: int = option(200, "multiply lambda by `decay` every this many steps (0 = never)", check=at_least(0))
    decay: float = option(0.1, "factor on lambda (KLA's h shrinks by its square root)", check=at_least(0))
    num_samples: int = option(64, "samples drawn by `lmlab sample` when -n is not given", check=at_least(1))


@dataclass
class RunConfig:
    dir: str = option("runs/gebm", "run directory (config.json, metrics.jsonl, checkpoints/)")
    resume: str = option("auto", "auto: continue a run dir's checkpoint; never: refuse a non-empty dir; must",
                         choices=("auto", "never", "must"))
    force: bool = option(False, "with resume=never, move an existing run dir aside")
    eval_interval: int = option(1000, "evaluate and checkpoint every N base steps (0: 10 times per run)", check=at_least(0))
    keep: int = option(2, "keep the last N step checkpoints beside last.pt and best.pt", check=at_least(0))
    log_every: int = option(50, "base steps between metrics lines (metrics.jsonl)", check=at_least(1))
    log_interval_s: float = option(10.0, "seconds between plain progress lines (batch jobs): a base step of many "
                                   "energy updates is not silent until the next metrics line", check=at_least(0))


FP32_ONLY = "GEBM trains in fp32 without torch.compile"


@dataclass
class HardwareConfig:
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps (auto picks cuda when available)", check=DEVICE)
    precision: str = option("fp32", f"train-lm's key; {FP32_ONLY}, so only fp32 is accepted",
                            choices=("fp32", "bf16", "fp16"))
    compile: bool = option(False, f"train-lm's key; {FP32_ONLY}, so only false is accepted")
    threads: int = option(0, "torch CPU threads (0 = torch default)", check=at_least(0))
    dist_timeout_s: float = option(300.0, "collective timeout under torchrun/srun: a dead rank stops the job after this long instead of hanging",
                                   check=greater_than(0))

    def problems(self):
        if self.precision != "fp32":
            yield "precision", f"{self.precision!r}: {FP32_ONLY} (use hardware.precision=fp32)"
        if self.compile:
            yield "compile", f"true: {FP32_ONLY} (use hardware.compile=false)"


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "dataset and preprocessing")
    model: ModelConfig = section(ModelConfig, "base and energy networks")
    optim: OptimConfig = section(OptimConfig, "Algorithm 1 schedule and optimisers")
    schedule: ScheduleConfig = section(ScheduleConfig, "run length")
    eval: EvalConfig = section(EvalConfig, "evaluation during training")
    run: RunConfig = section(RunConfig, "run directory, resumption, evaluation and checkpoint cadence")
    hardware: HardwareConfig = section(HardwareConfig, "device")
    seed: int = option(0, "seed of weights, latents, batches and penalties", check=between(0, 2**32 - 1))

    RENAMED = {"optim.base_steps": "schedule.max_steps", "optim.batch_size": "data.batch_size",
               "eval.every": "run.eval_interval", "eval.keep": "run.keep"}  # issue #13: train-lm's names
