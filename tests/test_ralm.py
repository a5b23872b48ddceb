"""RALM (core/models/residual_lm.py), the residual EBM paper's locally normalised baseline: log P = log softmax(base +
residual) with the base LM frozen. It starts exactly at the base LM, trains only the residual through train-lm,
carries both states, reloads from its checkpoint, and refuses what it cannot be."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import invoke, tiny_train_config, train_tiny_lm
from lmlab.core.config import merge
from lmlab.core.errors import LmlabError
from lmlab.core.generate import load_lm
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.lm import parameter_counts
from lmlab.core.models.residual_lm import ResidualLM
from lmlab.core.reporting import NullReporter
from lmlab.core.train.lm_trainer import train_lm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, tiny_data):
    return train_tiny_lm(tiny_data, tmp_path_factory.mktemp("ralm") / "base", steps=12) / "last.pt"


def _ralm_cfg(tiny_data, run_dir, base_ckpt, **model):
    return tiny_train_config(tiny_data, run_dir, model={"ralm_base": str(base_ckpt), **model})


def _tokens(tiny_data, n=40):
    from lmlab.core.data import DataDir
    return torch.from_numpy(np.asarray(DataDir(tiny_data).split("valid")[:n], dtype=np.int64)).view(2, n // 2)


def test_ralm_starts_exactly_at_the_base_lm_and_counts_both(tmp_path, tiny_data, base_ckpt):
    cfg = _ralm_cfg(tiny_data, tmp_path / "r", base_ckpt)
    base, _, _ = load_lm(base_ckpt)
    ralm = build_language_model(cfg.model, base.output.weight.size(0)).eval()
    assert isinstance(ralm, ResidualLM)
    tokens = _tokens(tiny_data)
    # the residual's logits start at exactly zero (the base's own may differ in the last bit: with its parameters
    # frozen, the LSTM may take another kernel)
    assert float(ralm.residual(tokens)[0].detach().abs().max()) == 0.0
    torch.testing.assert_close(ralm(tokens)[0], base(tokens)[0], rtol=0, atol=1e-6)
    # the residual is a copy of the base (same model.*): its body and embedding are the base's
    for mine, theirs in zip(ralm.residual.body.parameters(), base.body.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert all(p.requires_grad for p in ralm.residual.parameters())
    assert not any(p.requires_grad for p in ralm.frozen_base.parameters())
    counts = parameter_counts(ralm)
    assert counts["params_frozen_base"] == sum(p.numel() for p in base.parameters())
    assert counts["params_total"] == counts["params_frozen_base"] + counts["params_embedding"] + \
        counts["params_body"] + counts["params_output"]


def test_train_lm_trains_the_residual_only_and_the_checkpoint_reloads(tmp_path, tiny_data, base_ckpt):
    base, _, _ = load_lm(base_ckpt)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    run = tmp_path / "ralm"
    summary = train_lm(merge(_ralm_cfg(tiny_data, run, base_ckpt), {"schedule": {"max_steps": 8}}), NullReporter())
    assert summary["params_frozen_base"] > 0
    ralm, _, _ = load_lm(run / "checkpoints" / "last.pt")
    for k, v in ralm.frozen_base.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # the base LM never moved
    assert float(ralm.residual.output.weight.detach().abs().sum()) > 0  # the residual did
    tokens = _tokens(tiny_data)
    whole, _ = ralm(tokens[:, :-1], tokens[:, 1:])
    # carried (base, residual) state: two halves read in turn give the whole's NLL
    first, state = ralm(tokens[:, :9], tokens[:, 1:10])
    second, _ = ralm(tokens[:, 9:-1], tokens[:, 10:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    out = json.loads(invoke("eval-ppl", "-c", str(run / "checkpoints" / "last.pt"), "--split", "valid", "-q").stdout)
    assert out["ppl"] > 1


def test_ralm_refusals(tmp_path, tiny_data, base_ckpt):
    with pytest.raises(LmlabError, match="ralm_base"):
        train_lm(_ralm_cfg(tiny_data, tmp_path / "a", base_ckpt, output={"tie": True}), NullReporter())
    cfg = merge(_ralm_cfg(tiny_data, tmp_path / "b", base_ckpt), {"optim": {"activation_reg": 2.0}})
    with pytest.raises(LmlabError, match="RALM"):
        train_lm(cfg, NullReporter())
    # IMM and KN noising score hidden states with the output layer alone, which for a RALM would drop the base's
    # logits: refused
    for objective in ("imm", "kn-noising"):
        cfg = merge(_ralm_cfg(tiny_data, tmp_path / objective, base_ckpt), {"objective": objective})
        with pytest.raises(LmlabError, match=f"objective '{objective}' needs a plain LM"):
            train_lm(cfg, NullReporter())
