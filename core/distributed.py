"""Process-group setup that honours torchrun and SLURM, and uses one device unless launched distributed.

- torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT: used as they are.
- Under `srun` without torchrun, SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS give rank, local rank
  and world size (MASTER_ADDR/PORT must then be exported by the batch script). SLURM_NTASKS > 1 without
  MASTER_ADDR is refused: srun would start that many copies that each train alone into one run dir.
- Otherwise: a single process on one device (never all GPUs of a shared node).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

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


_stopping = False  # every rank agreed to stop on a signal (agreed_signal): rank 0 is writing the last checkpoint


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


def agreed_signal(signum: int, device: torch.device) -> int:
    """The stop signal every rank agrees on: the highest signal number any rank received (0: none), on every rank.
    A rank that the signal has not reached yet (srun delivers it to each task separately) learns its name here."""
    if not dist.is_initialized():
        return signum
    global _stopping
    t = torch.tensor([float(signum)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    agreed = int(t.item())
    _stopping = _stopping or agreed > 0
    return agreed


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Average `.grad` over the ranks in one all-reduce. Every rank sends every parameter: an adaptive-softmax band
    with no target in this rank's batch has no .grad here (zeros sent) but may have one on another rank. A presence
    count rides along, so a parameter no rank touched stays without a gradient, as in one process over the global batch."""
    present = [p.grad is not None for p in params]
    flat = torch.cat([(p.grad if has else torch.zeros_like(p)).reshape(-1) for p, has in zip(params, present)]
                     + [torch.tensor(present, dtype=params[0].dtype, device=params[0].device)])
    dist.all_reduce(flat)
    flat /= world_size
    offset, touched = 0, flat[-len(params):] > 0
    for p, has, anyone in zip(params, present, touched.tolist()):
        part = flat[offset: offset + p.numel()].view_as(p)
        offset += p.numel()
        if has:
            p.grad.copy_(part)
        elif anyone:
            p.grad = part.clone()


def gather_columns(state):
    """A carried LSTM state [(h, c) per layer], each (layers, B / world, hidden), as the whole batch's on CPU: the
    ranks' column shares concatenated in rank order (every rank takes part; None or a non-list state passes through)."""
    if state is None or not isinstance(state, list):
        return None
    out = []
    for h, c in state:
        if dist.is_initialized():
            hs = [torch.empty_like(h) for _ in range(dist.get_world_size())]
            cs = [torch.empty_like(c) for _ in range(dist.get_world_size())]
            dist.all_gather(hs, h.contiguous())
            dist.all_gather(cs, c.contiguous())
            h, c = torch.cat(hs, 1), torch.cat(cs, 1)
        out.append([h.detach().cpu(), c.detach().cpu()])
    return out


def lost_process_error(rank: int, exc: RuntimeError, last_checkpoint) -> LmlabError:
    """The one error line for a collective that failed because another process of the job died or timed out."""
    first = " ".join(str(exc).split())[:200]
    return LmlabError(f"rank {rank}: lost another process of the job ({first}){_resume_from(last_checkpoint)}")


def _resume_from(last_checkpoint) -> str:
    """The end of an error line: where a rerun resumes from, if the run has saved a checkpoint yet."""
    if not Path(last_checkpoint).is_file():
        return ""
    return f"; the last complete checkpoint is {last_checkpoint}: rerun the same command to resume"


@contextlib.contextmanager
def job(last_checkpoint: Path | str, smaller_batch: str) -> Iterator[None]:
    """Around a trainer's whole run, launched alone or by torchrun/srun: what ends it in error leaves as one line
    naming the checkpoint to resume from, not a traceback (per rank). Device memory running out is said as such; in a
    job of several processes any other RuntimeError is a collective that failed because another process died or timed
    out. The process group is shut down on the way out, whatever ended the run. smaller_batch: the trainer's advice
    for memory, e.g. "lower data.batch_size"."""
    rank, _, world = detect()
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise out_of_memory_error(rank, world, exc, last_checkpoint, smaller_batch) from exc
    except RuntimeError as exc:
        if world <= 1:
            raise
        raise lost_process_error(rank, exc, last_checkpoint) from exc
    finally:
        if world > 1:
            shutdown()


def out_of_memory_error(rank: int, world: int, exc: RuntimeError, last_checkpoint, smaller_batch: str) -> LmlabError:
    """The one error line for a training process whose device ran out of memory."""
    where = f"rank {rank}: " if world > 1 else ""
    return LmlabError(f"{where}{out_of_memory_message(exc, smaller_batch)}{_resume_from(last_checkpoint)}")


def out_of_memory_message(exc: RuntimeError, advice: str) -> str:
    """Every command's wording for a device out of memory: the first line of torch's message (it says how much), then
    what to do."""
    first = " ".join(str(exc).split("\n")[0].split())[:200]
    return f"out of device memory ({first}); {advice}"
