"""bench/imm_departures.py's departure-2 row: the official validation reads windows 1 .. n-1 from a zero state."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from imm_departures import official_windows_ppl  # noqa: E402
from lmlab.core.evaluate import batchify, eval_recurrent  # noqa: E402
from lmlab.core.models.builders import build_language_model  # noqa: E402
from lmlab.core.models.config import ModelConfig  # noqa: E402


def test_official_windows_are_windows_one_to_n_minus_one_from_a_zero_state():
    cfg = ModelConfig(kind="lstm", d_model=8, n_layers=1)
    cfg.lstm.hidden_size = 8
    torch.manual_seed(0)
    model = build_language_model(cfg, 30).eval()
    stream = np.random.default_rng(0).integers(0, 30, 4 * 53)  # rows of 53: n = 52 // 5 = 10 full windows of 5
    rows = batchify(stream, 4)
    state, total, count = None, 0.0, 0  # the official loop: windows 1..9 of 5 steps, from a zero state at window 1
    with torch.no_grad():
        for w in range(1, 10):
            nll, state = model(rows[:, w * 5:(w + 1) * 5], rows[:, w * 5 + 1:(w + 1) * 5 + 1], state)
            total, count = total + nll.double().sum().item(), count + nll.numel()
    want = math.exp(total / count)
    got = official_windows_ppl(model, stream, columns=4, bptt=5)
    assert abs(got - want) < 1e-9 * want
    assert abs(got - eval_recurrent(model, stream, columns=4, bptt=5)["ppl"]) > 1e-5  # lmlab's reading differs
