"""Generation-quality metrics (issue #18): distinct-n, seq-rep-n, the real-vs-generated classifier, and the
residual EBM's base-LM vs Algorithm 1 comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from lmlab.core.residual.joint import ResidualModel
from lmlab.core.residual.quality import generate_rows, generation_quality, main
from lmlab.core.residual.windows import Windows
from lmlab.core.textquality import classifier_accuracy, distinct_n, quality, seq_rep_n
from tests.test_residual_estimators import tiny_lm


def test_distinct_and_repetition_on_hand_counted_rows():
    rows = np.array([[1, 2, 1, 2], [1, 2, 3, 4]])
    assert distinct_n(rows, 1) == pytest.approx(4 / 8)  # {1,2,3,4} of 8 tokens
    assert distinct_n(rows, 2) == pytest.approx(4 / 6)  # {12, 21, 23, 34} of 6 bigrams
    assert seq_rep_n(rows, 2) == pytest.approx(((1 - 2 / 3) + 0.0) / 2)  # row 1: {12, 21} of 3 bigrams
    assert seq_rep_n(np.array([[5, 5, 5, 5, 5]]), 4) == pytest.approx(0.5)  # one distinct 4-gram of 2


def test_classifier_separates_different_texts_and_not_identical_ones():
    rng = np.random.default_rng(0)
    held_out = np.arange(400) % 2 == 1
    real = rng.integers(0, 50, (400, 12))
    other = rng.integers(25, 75, (400, 12))  # half the vocabulary differs
    same = rng.integers(0, 50, (400, 12))  # the same distribution as the real rows
    far = classifier_accuracy(real, other, held_out=held_out)
    near = classifier_accuracy(real, same, held_out=held_out)
    assert far["accuracy"] > 0.95 and far["held_out_pairs"] == 200 and far["train_pairs"] == 200
    assert abs(near["accuracy"] - 0.5) < 0.08
    assert classifier_accuracy(real, other, held_out=held_out) == far  # deterministic


class CountEnergy(nn.Module):
    """E = strength x (number of `token` in the sequence): the joint model avoids that token."""

    def __init__(self, token: int, strength: float):
        super().__init__()
        self.token, self.strength = token, strength

    def forward(self, tokens, mask=None):
        return self.strength * (tokens == self.token).sum(1).float()


def test_algorithm1_samples_differ_from_base_lm_samples_as_the_energy_says():
    torch.manual_seed(0)
    lm = tiny_lm(vocab=5, seed=1, sharpen=3.0)
    windows = Windows(np.random.default_rng(0).integers(0, 5, 4000), 4, 6)
    base_tokens = generation_quality(ResidualModel(lm, CountEnergy(0, 0.0), 4, 6), windows, max_examples=64,
                                     candidates=16, top_k=0, batch_size=16, seed=0)
    out = generation_quality(ResidualModel(lm, CountEnergy(0, 3.0), 4, 6), windows, max_examples=64, candidates=16,
                             top_k=0, batch_size=16, seed=0)
    assert out["windows"] == 64 and out["base_lm"] == base_tokens["base_lm"]  # the base LM's draws: its own stream
    assert set(out["joint"]) >= {"distinct_1", "seq_rep_4", "classifier", "effective_candidates_mean"}
    assert "classifier" not in out["real"]
    # zero energy: Algorithm 1 picks uniformly among LM samples, so every candidate counts
    assert base_tokens["joint"]["effective_candidates_mean"] == pytest.approx(16.0)
    assert out["joint"]["effective_candidates_mean"] < 8.0


def test_fewer_penalised_tokens_in_joint_samples():
    lm = tiny_lm(vocab=5, seed=1, sharpen=3.0)
    windows = Windows(np.random.default_rng(0).integers(0, 5, 4000), 4, 6)
    rows = generate_rows(ResidualModel(lm, CountEnergy(0, 3.0), 4, 6), windows, count=64, candidates=16, top_k=0,
                         batch_size=16, seed=0)
    assert rows["joint"].shape == rows["base_lm"].shape == rows["real"].shape == (64, 6)
    np.testing.assert_array_equal(rows["real"], windows.get(np.arange(64))[1].numpy())
    assert (rows["joint"] == 0).mean() < 0.5 * (rows["base_lm"] == 0).mean()


def test_quality_command_refuses_an_lm_checkpoint_in_one_line(tmp_path, capsys):
    from lmlab.core.checkpoint import save_checkpoint
    path = tmp_path / "lm.pt"
    save_checkpoint(path, {"model": {}}, "lm")
    assert main(["--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert main(["--checkpoint", str(path), "--candidates", "0"]) == 2
    assert quality(np.array([[1, 2, 3]]))["distinct_1"] == 1.0
