"""What ends a training run in error leaves as one line naming the checkpoint to resume from (core/distributed.job):
device memory running out, and under torchrun/srun a collective lost to another process; the process group is shut
down whatever ended the run."""

from __future__ import annotations

import pytest
import torch

from lmlab.core import distributed
from lmlab.core.config import merge
from lmlab.core.errors import LmlabError

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB\nof which 1.2 GiB is free"


@pytest.fixture
def shutdowns(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(distributed, "shutdown", lambda: calls.append(1))
    return calls


@pytest.fixture
def alone(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def rank1_of_2(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")


def _raise(exc):
    raise exc


def test_alone_a_runtime_error_is_not_taken_for_a_lost_process(alone, shutdowns, tmp_path):
    with pytest.raises(RuntimeError, match="^boom$"):
        with distributed.job(tmp_path / "last.pt", "lower data.batch_size"):
            raise RuntimeError("boom")
    assert shutdowns == []  # no process group to shut down


def test_alone_out_of_memory_is_one_line_with_the_advice_and_no_resume_before_a_checkpoint(alone, shutdowns, tmp_path):
    last = tmp_path / "last.pt"
    with pytest.raises(LmlabError) as caught:
        with distributed.job(last, "lower data.batch_size"):
            raise torch.OutOfMemoryError(OOM)
    assert str(caught.value) == ("out of device memory (CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                 "capacity of 79.1 GiB); lower data.batch_size")
    last.write_bytes(b"saved")
    with pytest.raises(LmlabError) as caught:
        with distributed.job(last, "lower data.batch_size"):
            raise torch.OutOfMemoryError(OOM)
    assert str(caught.value).endswith(f"; lower data.batch_size; the last complete checkpoint is {last}: rerun the same "
                                      "command to resume")


def test_in_a_job_a_failed_collective_names_the_rank_and_the_checkpoint(rank1_of_2, shutdowns, tmp_path):
    last = tmp_path / "last.pt"
    last.write_bytes(b"saved")
    with pytest.raises(LmlabError) as caught:
        with distributed.job(last, "lower data.batch_size"):
            raise RuntimeError("[gloo] Connection closed\n by peer")
    assert str(caught.value) == (f"rank 1: lost another process of the job ([gloo] Connection closed by peer); the last "
                                 f"complete checkpoint is {last}: rerun the same command to resume")
    with pytest.raises(LmlabError, match=r"^rank 1: out of device memory \(CUDA out of memory\."):
        with distributed.job(last, "lower data.batch_size"):
            raise torch.OutOfMemoryError(OOM)
    with distributed.job(last, "lower data.batch_size"):
        pass
    assert shutdowns == [1, 1, 1]  # after each error and after the run that ended well


def _trainers(tmp_path):
    """Each trainer's train(), its config with a run dir under tmp_path, and the advice its memory error gives."""
    from lmlab.core.gebm.config import Config as GEBMConfig
    from lmlab.core.gebm.train import train as train_gebm
    from lmlab.core.residual.config import Config as ResidualConfig
    from lmlab.core.residual.train import train as train_residual
    from lmlab.core.seq2seq.config import Config as Seq2SeqConfig
    from lmlab.core.seq2seq.train import train as train_seq2seq
    from lmlab.core.train.config import TrainConfig
    from lmlab.core.train.lm_trainer import train_lm
    run = {"run": {"dir": str(tmp_path / "run")}}
    return {"train-lm": (train_lm, merge(TrainConfig(), run), "optim.grad_accum"),
            "translation": (train_seq2seq, merge(Seq2SeqConfig(), run), "data.max_tokens"),
            "residual": (train_residual, merge(ResidualConfig(), run), "negatives.per_prefix"),
            "gebm": (train_gebm, merge(GEBMConfig(), run), "optim.noise_factor")}


@pytest.mark.parametrize("trainer", ["train-lm", "translation", "residual", "gebm"])
def test_every_trainer_reports_a_device_out_of_memory_in_one_line(trainer, alone, tmp_path, monkeypatch):
    """The device runs out of memory as the trainer starts (distributed.init: the first thing each one does on it)."""
    train, cfg, advice = _trainers(tmp_path)[trainer]
    monkeypatch.setattr(distributed, "init", lambda *a, **k: _raise(torch.OutOfMemoryError(OOM)))
    with pytest.raises(LmlabError, match=r"^out of device memory \(CUDA out of memory\. .*\); lower .*" + advice):
        train(cfg, None)
