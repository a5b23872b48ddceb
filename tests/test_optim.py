import math

import pytest

from lmlab.core.train.config import ScheduleConfig
from lmlab.core.train.optim import LRSchedule


def _epochs(cfg, lr=1.0, n=10):
    s = LRSchedule(cfg, lr, 100)
    out = []
    for epoch in range(1, n + 1):
        out.append(s.lr)  # lr used during this epoch
        s.on_epoch_end(epoch)
    return out


def test_zaremba_step_schedule_divides_after_decay_start():
    lrs = _epochs(ScheduleConfig(name="step", decay=1.2, decay_start=6), n=9)
    assert lrs[:6] == [1.0] * 6  # epochs 1-6 at lr 1
    assert lrs[6:] == pytest.approx([1 / 1.2, 1 / 1.2 ** 2, 1 / 1.2 ** 3])


def test_multistep_divides_once_at_each_milestone():
    lrs = _epochs(ScheduleConfig(name="multistep", decay=10.0, milestones=[15]), lr=20.0, n=20)
    assert lrs[:15] == [20.0] * 15 and lrs[15:] == [2.0] * 5


def test_cosine_warmup_then_decay_to_floor():
    s = LRSchedule(ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1), 1.0, 110)
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(60) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert s.lr_at(110) == pytest.approx(0.1)


def test_plateau_decays_after_patience_and_reports_it():
    s = LRSchedule(ScheduleConfig(name="plateau", decay=4.0, patience=1), 1.0, 100)
    assert [s.on_eval(v) for v in (5.0, 4.0, 4.5, 4.6, 3.0)] == [False, False, False, True, False]
    assert s.lr == 0.25 and s.decays == 1


def test_plateau_warms_up_then_follows_its_decays():
    s = LRSchedule(ScheduleConfig(name="plateau", warmup_steps=4, decay=2.0), 1e-3, 100)
    assert [s.lr_at(t) for t in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    s.on_eval(5.0), s.on_eval(6.0)  # a plateau halves the lr the warmup hands over to
    assert s.lr_at(10) == pytest.approx(5e-4)
    assert LRSchedule(ScheduleConfig(name="plateau"), 1e-3, 100).lr_at(0) == 1e-3  # no warmup: unchanged


def test_the_lr_event_fires_once_below_its_perplexity_after_the_plateau_rule():
    """schedule.set_lr_below_ppl (the IMM pair's control arm): lr -> set_lr_to the first time validation ppl < X,
    after that evaluation's plateau decision (as IMM's switch-on follows it), never again; resumable."""
    import math as m
    cfg = ScheduleConfig(name="plateau", decay=2.0, set_lr_below_ppl=194.0, set_lr_to=0.5)
    s = LRSchedule(cfg, 1.0, 100)
    s.on_eval(m.log(300.0))
    assert s.lr == 1.0 and not s.lr_set
    s.on_eval(m.log(190.0))
    assert s.lr == 0.5 and s.lr_set
    s.on_eval(m.log(195.0))  # a plateau halves the set lr; the event does not fire again
    s.on_eval(m.log(150.0))
    assert s.lr == 0.25
    again = LRSchedule(cfg, 1.0, 100)
    again.load_state_dict(s.state_dict())
    again.on_eval(m.log(100.0))
    assert again.lr == 0.25 and again.lr_set
    old = {k: v for k, v in s.state_dict().items() if k != "lr_set"}  # a checkpoint from before the option
    LRSchedule(ScheduleConfig(name="plateau"), 1.0, 100).load_state_dict(old)


def test_control_arm_preset_copies_the_imm_arms_lr_event():
    from lmlab.core.config import resolve
    from lmlab.core.train.config import TrainConfig
    imm = resolve(TrainConfig, "train-lm", ["ptb", "ptb-lstm-small-dropout", "ptb-lstm-small-imm"], {})
    control = resolve(TrainConfig, "train-lm", ["ptb", "ptb-lstm-small-dropout", "ptb-lstm-small-lrcontrol"], {})
    assert control.objective == "ce" and control.schedule.set_lr_below_ppl == imm.imm.start_below_ppl
    assert control.schedule.set_lr_to == imm.imm.lr_at_start


def test_nt_asgd_trigger_counts_nonmono_as_the_reference_code():
    """AWD-LSTM checks `len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono])` *before*
    appending val_loss: the `nonmono` evaluations just before the newest are left out of the minimum."""
    from lmlab.core.train.optim import should_trigger_asgd
    assert not should_trigger_asgd([1.0, 0.5, 0.9, 0.8], nonmono=2)  # 0.8 < 1.0 (0.5 is within the window)
    assert should_trigger_asgd([1.0, 0.5, 0.9, 1.1], nonmono=2)
    assert not should_trigger_asgd([1.0, 0.5, 2.0], nonmono=2)  # only 2 earlier evaluations: not more than 2
    assert should_trigger_asgd([1.0, 0.5, 0.4, 2.0], nonmono=2)


def test_awd_lstm_activation_regularisers_are_in_the_update_not_in_the_logged_loss():
    """AR = alpha * mean(dropped last-layer output^2), TAR = beta * mean((raw_t - raw_{t-1})^2), as AWD-LSTM's
    main.py; each one changes the loss by exactly its term (dropout 0, so dropped == raw here)."""
    import torch
    from lmlab.core.models.builders import build_language_model
    from lmlab.core.models.config import ModelConfig
    from lmlab.core.train.objectives import CrossEntropy
    cfg = ModelConfig(kind="lstm", d_model=8, n_layers=2)
    cfg.lstm.hidden_size, cfg.lstm.dropout = 12, 0.0
    torch.manual_seed(0)
    model = build_language_model(cfg, 30)
    x, y = torch.randint(0, 30, (3, 7)), torch.randint(0, 30, (3, 7))
    plain, _, m0 = CrossEntropy()(model, x, y, None, 0)
    with torch.no_grad():
        h, _ = model.hidden(x)
    ar_term, tar_term = h.pow(2).mean(), (h[:, 1:] - h[:, :-1]).pow(2).mean()
    ar, _, m1 = CrossEntropy(ar=2.0)(model, x, y, None, 0)
    tar, _, m2 = CrossEntropy(tar=1.0)(model, x, y, None, 0)
    both, _, _ = CrossEntropy(ar=2.0, tar=1.0)(model, x, y, None, 0)
    torch.testing.assert_close(ar - plain, 2.0 * ar_term)
    torch.testing.assert_close(tar - plain, 1.0 * tar_term)
    torch.testing.assert_close(both - plain, 2.0 * ar_term + tar_term)
    assert m0["loss_nats"] == m1["loss_nats"] == m2["loss_nats"]  # the logged loss is the NLL alone
    both.backward()
    assert all(p.grad is not None for p in model.body.parameters())


def test_activation_regularisers_train_through_the_trainer_and_need_an_lstm(tmp_path, tiny_data):
    import json

    import pytest
    from conftest import tiny_train_config
    from lmlab.core.config import merge
    from lmlab.core.errors import LmlabError
    from lmlab.core.reporting import NullReporter
    from lmlab.core.train.lm_trainer import train_lm
    awd = {"optim": {"activation_reg": 2.0, "temporal_reg": 1.0}, "schedule": {"max_steps": 2}}
    train_lm(merge(tiny_train_config(tiny_data, tmp_path / "r"), awd), NullReporter())
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["activation_reg"] > 0 for r in rows if "train_loss_nats" in r)
    with pytest.raises(LmlabError, match="model.kind = lstm"):
        train_lm(merge(tiny_train_config(tiny_data, tmp_path / "t"), {**awd, "model": {"kind": "transformer"}}), NullReporter())


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_optimizer_is_torchs_fused_kernel_and_the_same_update(name):
    """hardware.fused_optimizer: torch's fused SGD / AdamW (its param groups say fused=True), the same update as the
    default to float rounding over a few steps; off, torch keeps its own choice (fused=None, not a forced loop)."""
    import torch

    from lmlab.core.train.config import OptimConfig
    from lmlab.core.train.optim import build_optimizer
    cfg = OptimConfig(name=name, lr=0.1 if name == "sgd" else 1e-2, momentum=0.9 if name == "sgd" else 0.0, weight_decay=0.01)
    weights = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
        opt = build_optimizer(cfg, model, fused=fused)
        assert all(g["fused"] is (True if fused else None) for g in opt.param_groups)
        x = torch.randn(16, 5)
        for _ in range(5):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_trainer_and_gpu_presets_take_the_fused_optimizer(tiny_data, tmp_path):
    from conftest import tiny_train_config

    from lmlab.core.config import merge, read_preset
    from lmlab.core.train.lm_trainer import LMTrainer
    trainer = LMTrainer(merge(tiny_train_config(tiny_data, tmp_path / "run"), {"hardware": {"fused_optimizer": True}}))
    assert all(g["fused"] for g in trainer.optimizer.param_groups)
    for hardware in ("gpu", "dgx8", "slurm"):
        assert read_preset(hardware)["train-lm"]["hardware"]["fused_optimizer"] is True


def test_translation_optimizer_takes_the_fused_kernel_too():
    import torch

    from lmlab.core.config import merge
    from lmlab.core.seq2seq.config import Config
    from lmlab.core.seq2seq.train import build_optimizer
    model = torch.nn.Linear(3, 2)
    for name in ("adamw", "sgd"):
        cfg = merge(Config(), {"optim": {"name": name}, "hardware": {"fused_optimizer": True}})
        assert all(g["fused"] for g in build_optimizer(cfg, model).param_groups)
        assert all(g["fused"] is None for g in build_optimizer(merge(cfg, {"hardware": {"fused_optimizer": False}}), model).param_groups)
