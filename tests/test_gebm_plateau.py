"""The official CIFAR-10 learning-rate schedule (core/gebm/plateau.py, core/gebm/train_images.py): the relative-MMD
plateau test, its state machine, the fixed decays beside it, and an image run that evaluates, decays and resumes."""

import io
import signal
import statistics

import pytest
import torch

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import merge
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.plateau import PlateauSchedule, fixed_decays, mmd_sums, p_value, relative_mmd_test
from lmlab.core.gebm.train import train
from lmlab.core.reporting import NullReporter
from lmlab.core.rundir import RunDir

from reporters import StopAt
from test_gebm_train import tiny_image_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _mmd2_unbiased(x, y):
    """MMD²_u with the cubic kernel, from the full kernel matrices."""
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * k(x, y).mean())


def test_the_difference_is_that_of_the_two_unbiased_mmds():
    g = torch.Generator().manual_seed(0)
    x, y, z = (torch.randn(60, 5, generator=g, dtype=torch.float64) * s + s for s in (1.0, 1.1, 1.5))
    diff, _ = relative_mmd_test(mmd_sums(x, y), mmd_sums(x, z))
    # the X-X term cancels: only the sums over Y and Z are kept
    assert diff == pytest.approx(float(_mmd2_unbiased(x, y) - _mmd2_unbiased(x, z)), rel=1e-12, abs=1e-12)


def test_the_statistic_is_standard_under_no_change_and_far_below_zero_for_a_real_improvement():
    """Y and Z from the same distribution: over repetitions the statistic has mean ~0 and sd ~1 (its variance
    estimate is right); Y from the data's distribution and Z not: p is tiny."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    stats = [relative_mmd_test(mmd_sums(x, torch.randn(200, 8, generator=g) * 1.2),
                               mmd_sums(x, torch.randn(200, 8, generator=g) * 1.2))[1] for _ in range(150)]
    assert abs(statistics.fmean(stats)) < 0.25 and 0.8 < statistics.stdev(stats) < 1.2
    better = relative_mmd_test(mmd_sums(x, torch.randn(200, 8, generator=g)), mmd_sums(x, torch.randn(200, 8, generator=g) * 2))
    assert better[0] < 0 and p_value(better[1]) < 1e-3


def _sums(g, scale):
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))  # the same real features every time
    return mmd_sums(x, torch.randn(50, 4, generator=g) * scale)


def test_the_schedule_fills_its_ring_decays_after_three_failures_then_refills():
    """slots = 2: evaluations 1-2 fill the ring; from the 3rd each compares with 2 evaluations earlier. A base that
    stops improving fails 3 tests -> decay at evaluation 5; evaluations 6-8 only refill; 9-11 fail -> decay at 11.
    A base that keeps improving never decays."""
    g = torch.Generator().manual_seed(0)
    stuck = PlateauSchedule(2)
    decayed = [stuck.observe(_sums(g, 3.0))[0] for _ in range(11)]
    assert [i + 1 for i, d in enumerate(decayed) if d] == [5, 11] and stuck.decays == 2
    improving = PlateauSchedule(2)
    for scale in [6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0]:
        decayed, info = improving.observe(_sums(g, scale))
        assert not decayed
    assert improving.decays == 0 and info["plateau_p"] < 0.1
    # the state survives a weights_only checkpoint round trip and continues the same
    buf = io.BytesIO()
    torch.save(stuck.state_dict(), buf)
    buf.seek(0)
    copy = PlateauSchedule(2)
    copy.load_state_dict(torch.load(buf, weights_only=True))
    probe = _sums(torch.Generator().manual_seed(5), 3.0)
    assert copy.observe(probe) == stuck.observe(probe)
    with pytest.raises(ValueError, match="ring of 2 slots"):
        PlateauSchedule(3).load_state_dict(stuck.state_dict())


def test_fixed_decays_fall_between_the_evaluations_as_in_the_official_trainer():
    """counter % 5000 == 0 decays only where no FID evaluation (every 2000) runs: 5000, 15000, 25000, ..."""
    official = [fixed_decays(s, 5000, 2000) for s in (4999, 5000, 9999, 10000, 14999, 15000, 150000)]
    assert official == [0, 1, 1, 1, 1, 2, 15]
    assert fixed_decays(10000, 5000, None) == 2 and fixed_decays(10**6, 0, 2000) == 0


def _plateau_cfg(run_dir, max_steps=10):
    """Evaluations every 2 base steps with 8 samples; a fixed decay every 3 base steps (at 3 and 9, not at 6, an
    evaluation step); the plateau ring of 2 evaluations."""
    return merge(tiny_image_cfg(run_dir, max_steps=max_steps, lr_decay_every=3, lr_plateau=True, lr_plateau_window=2),
                 {"eval": {"fid_samples": 8}, "run": {"eval_interval": 2}})


def test_an_image_run_evaluates_decays_and_resumes_bitwise(tmp_path, monkeypatch):
    """Every test counts as no improvement here (the threshold patched), so the 3rd test (evaluation 5, step 10)
    decays: with the fixed decays at steps 3 and 9 the rates end at 0.8^3 of their start."""
    monkeypatch.setattr("lmlab.core.gebm.plateau.P_NO_IMPROVEMENT", -1.0)
    full = train(_plateau_cfg(tmp_path / "full"), NullReporter())
    assert full["completed"]
    rows = [r for r in RunDir(tmp_path / "full").read_metrics() if "fid_base" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10] and all(r["fid_base"] >= 0 for r in rows)
    assert "plateau_p" not in rows[1] and "plateau_p" in rows[2]  # the ring of 2 fills first
    assert [r["lr_plateau_decay"] for r in rows[2:]] == [0, 0, 1]
    assert [r["lr_factor"] for r in rows] == pytest.approx([1.0, 0.8, 0.8, 0.8, 0.8 ** 3])  # 6 is an evaluation
    st = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt", "gebm")
    assert st["plateau"]["decays"] == 1
    for key in ("opt_energy", "opt_base"):  # the last update (step 10) ran before its evaluation decayed
        assert st[key]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 0.8 ** 2)

    assert train(_plateau_cfg(tmp_path / "cut"), StopAt(5, signal.SIGUSR1))["stopped_by"] == "SIGUSR1"
    assert train(_plateau_cfg(tmp_path / "cut"), NullReporter())["completed"]
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt", "gebm")
    for part in ("base", "energy"):
        for k, v in st[part].items():
            assert torch.equal(v, cut[part][k]), (part, k)
    assert cut["plateau"]["cursor"] == st["plateau"]["cursor"] and cut["plateau"]["decays"] == 1
    assert [r for r in RunDir(tmp_path / "cut").read_metrics() if "fid_base" in r] == rows


def test_the_plateau_schedule_is_refused_without_image_samples(tmp_path):
    with pytest.raises(LmlabError, match="optim.lr_plateau tests image samples"):
        train(tiny_image_cfg(tmp_path / "a", lr_plateau=True), NullReporter())


def test_building_the_feature_network_leaves_the_runs_random_stream_alone(tmp_path, monkeypatch):
    """A resumed run builds the extractor at another step than an uninterrupted one: building it must not draw from
    the global stream the training reads (Inception's constructor initialises its layers from it)."""
    import numpy as np

    import lmlab.core.gebm.train_images as ti
    monkeypatch.setattr(ti, "make_extractor", lambda inception, device: torch.nn.Conv2d(3, 4, 3))  # draws on init
    cfg = _plateau_cfg(tmp_path / "r")
    evaluation = ti.ImageEvaluation(cfg, np.zeros((8, 3, 32, 32), dtype=np.uint8), torch.device("cpu"), None)
    monkeypatch.setattr(ti, "real_features", lambda *a, **k: None)
    before = torch.get_rng_state()
    evaluation._prepare()
    assert torch.equal(torch.get_rng_state(), before)
