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


def test_nt_asgd_trigger_counts_nonmono_as_the_reference_code():
    """AWD-LSTM checks `len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono])` *before*
    appending val_loss: the `nonmono` evaluations just before the newest are left out of the minimum."""
    from lmlab.core.train.optim import should_trigger_asgd
    assert not should_trigger_asgd([1.0, 0.5, 0.9, 0.8], nonmono=2)  # 0.8 < 1.0 (0.5 is within the window)
    assert should_trigger_asgd([1.0, 0.5, 0.9, 1.1], nonmono=2)
    assert not should_trigger_asgd([1.0, 0.5, 2.0], nonmono=2)  # only 2 earlier evaluations: not more than 2
    assert should_trigger_asgd([1.0, 0.5, 0.4, 2.0], nonmono=2)
