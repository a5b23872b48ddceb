"""Process-group setup that honours torchrun and SLURM, and uses one device unless launched distributed.

- torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT: used as they are.
- Under `srun` without torchrun, SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS give rank, local rank
  and world size (MASTER_ADDR/PORT must then be exported by the batch script). SLURM_NTASKS > 1 without
  MASTER_ADDR is refused: srun would start that many copies that each train alone into one run dir.
- Otherwise: a single process on one device (never all GPUs of a shared node).
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from lmlab.core.errors import LmlabError


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(*names: str) -> int | None:
    for name in names:
        if name in os.environ and os.environ[name].strip():
            return int(os.environ[name])
    return None


def detect() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's variables, else SLURM's, else one process."""
    world = _env_int("WORLD_SIZE")
    if world is not None:
        return _env_int("RANK") or 0, _env_int("LOCAL_RANK") or 0, world
    world = _env_int("SLURM_NTASKS")
    if world is not None and world > 1:
        if not os.environ.get("MASTER_ADDR"):
            raise LmlabError(f"SLURM_NTASKS={world} but no MASTER_ADDR: this would be {world} copies each training alone into "
                             "the same run dir; submit pipelines/slurm.sbatch (srun + torchrun), launch with torchrun, or "
                             "export MASTER_ADDR and MASTER_PORT before srun")
        return _env_int("SLURM_PROCID") or 0, _env_int("SLURM_LOCALID") or 0, world
    return 0, 0, 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` = the GPU of this local rank if CUDA exists, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LmlabError(f"--device {name}: CUDA is not available on this machine (use --device cpu or the 'cpu' preset)")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        index, count = torch.device(name).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise LmlabError(f"--device {name}: this machine shows {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        torch.cuda.set_device(torch.device(name))
    if name == "mps" and not torch.backends.mps.is_available():
        raise LmlabError("--device mps: MPS is not available on this machine")
    return torch.device(name)


def init(device: str = "auto", timeout_s: float = 300.0) -> DistInfo:
    rank, local_rank, world = detect()
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if "RANK" not in os.environ:
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


_stopping = False  # every rank agreed to stop on a signal (any_true): rank 0 is writing the last checkpoint


def shutdown() -> None:
    global _stopping
    if dist.is_initialized():
        if _stopping:
            # After a signal every rank leaves together: a rank that exits first ends its node's torchrun with a
            # non-zero status, and `srun --kill-on-bad-exit` would then kill rank 0 while it writes the checkpoint.
            try:
                dist.barrier()
            except RuntimeError:
                pass  # a lost rank: nothing to wait for
        dist.destroy_process_group()
    _stopping = False


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one (e.g. a stop signal reached one rank)."""
    if not dist.is_initialized():
        return flag
    global _stopping
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    _stopping = _stopping or bool(t.item() > 0)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
