"""IMM through the trainer against the official code's update (uicdice/imm-language-modeling, lm.py), which
these tests recompute from scratch on a tiny LSTM:

    main  = Σ_t (1/B) Σ_b NLL_bt                                  (defaultLoss: sum over time, mean over batch)
    IMM   = λ Σ_i (1/B) Σ_b CE(P̂(·|x_bi), Q̄_bi)                   (sampled batch: k dropout-free histories, the
            last i+1 tokens of each, from row b's carried state;   every one of the 35 positions)
          | λ Σ_t (1/B) Σ_b CE((1-γ)onehot(y) + γ p_cont, Q_bt)    (other batches: own forward, own dropout masks)
    step  = p - lr · (clip(∇main) + ∇IMM), the input embedding getting 2·clip(∇main) (+ ∇IMM on the other batches)

and the plateau schedule's switch-on (lr -> 0.5) and best-weight reload. Each check is also shown to
distinguish the rule from the departure it replaces (clipping the sum, a mean-token IMM term, ...)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_train_config
from lmlab.core.config import merge, resolve, to_dict
from lmlab.core.errors import LmlabError
from lmlab.core.models.builders import build_language_model
from lmlab.core.models.config import ModelConfig
from lmlab.core.train.config import TrainConfig
from lmlab.core.train.lm_trainer import LMTrainer

B, T, K, LAM = 4, 6, 3, 0.2


def _preset(names: str) -> TrainConfig:
    return resolve(TrainConfig, "train-lm", [names])


OFFICIAL_IMM = to_dict(_preset("ptb-lstm-large,ptb-lstm-imm").imm)  # the options under test are the preset's own


def _trainer(tmp_path, data, *, imm: dict, clip=0.05, grad_accum=1, dropout=0.3, reduction="sum_time",
             schedule: dict | None = None) -> LMTrainer:
    cfg = tiny_train_config(data, tmp_path / "run")
    cfg = merge(cfg, {"data": {"batch_size": B, "bptt": T},
                      "model": {"n_layers": 2, "lstm": {"hidden_size": 16, "dropout": dropout, "forget_bias": 1.0}},
                      "optim": {"name": "sgd", "lr": 1.0, "clip": clip, "loss_reduction": reduction, "grad_accum": grad_accum},
                      "objective": "imm", "schedule": schedule or {},
                      # which batch is sampled and which pass draws its masks first are tested on their own
                      # (test_sample_phase_*, test_smoothed_first_*); the rest fix them to lmlab's defaults
                      "imm": {**OFFICIAL_IMM, "sample_phase": "switch_on", "mask_order": "main_first",
                              "k": K, "weight": LAM, "start_below_ppl": 0.0, **imm}})
    return LMTrainer(cfg)


def _rows(state, b):
    return None if state is None else [(h[:, b:b + 1], c[:, b:b + 1]) for h, c in state]


def _sampled_imm(model, kn, x, state, windows, start: str):
    """λ Σ_i (1/B) Σ_b CE(P̂, Q̄), Q̄ the mean of K dropout-free predictions; windows (B, T, K, L)."""
    was = model.training
    model.eval()
    L = windows.shape[-1]
    total = 0.0
    for i in range(x.shape[1]):
        for b in range(x.shape[0]):
            qs = []
            for j in range(K):
                if start == "carried":  # the official: last i+1 tokens, from the row's carried state
                    logits, _ = model(windows[b, i, j, L - (i + 1):][None], None, _rows(state, b))
                else:  # lmlab's default: the whole window from a zero state
                    logits, _ = model(windows[b, i, j][None])
                qs.append(logits[0, -1].softmax(-1))
            qbar = torch.stack(qs).mean(0)
            p = kn.probs(x[b, i:i + 1])[0]
            total = total - (p * qbar.log()).sum()
    model.train(was)
    return LAM * total / x.shape[0]


def _smoothed_imm(model, kn, x, y, state, logits=None):
    """λ Σ_t (1/B) Σ_b CE((1-γ(x)) onehot(y) + γ(x) p_cont, Q); its own forward unless logits are given."""
    if logits is None:
        logits, _ = model(x, None, state)
    g = torch.from_numpy(kn.gamma)[x][..., None]
    target = (1 - g) * F.one_hot(y, logits.shape[-1]) + g * torch.from_numpy(kn.p_cont)
    return LAM * -(target * logits.log_softmax(-1)).sum() / x.shape[0]


def _official_grads(model, kn, windows_of, x, y, state, sampled: bool, start="carried", own_forward=True, seed=None,
                    smoothed_first=False):
    """(∇main, ∇IMM, new state) of one window, the main loss summed over time / batch. smoothed_first: the
    single-sample term's own pass draws its dropout masks before the main pass (the official order)."""
    params = list(model.parameters())
    if smoothed_first:
        g_first = torch.autograd.grad(_smoothed_imm(model, kn, x, y, state), params, allow_unused=True)
    logits, new_state = model(x, None, state)  # dropout masks: this pass first, as in the objective
    nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    g_main = torch.autograd.grad(nll.sum(1).mean(), params, retain_graph=True)
    if smoothed_first:
        g_imm = g_first
    else:
        if sampled:
            imm = _sampled_imm(model, kn, x, state, windows_of(x), start)
        else:
            imm = _smoothed_imm(model, kn, x, y, state, None if own_forward else logits)
        g_imm = torch.autograd.grad(imm, params, allow_unused=True)
    g_imm = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_imm)]
    return list(g_main), g_imm, [(h.detach(), c.detach()) for h, c in new_state]


def _clip(grads, clip):
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    return [g * min(1.0, clip / norm) for g in grads], norm


def _windows_of(trainer, rng):
    """The objective's own draws (same sampler, same generator state): (B, T, K, L)."""
    def draw(x):
        w, found = trainer.objective.index.sample(x.reshape(-1).numpy(), K, rng)
        assert found.all()
        return torch.from_numpy(w).view(x.shape[0], x.shape[1], K, -1)
    return draw


def _step(trainer, before) -> list[torch.Tensor]:
    """What the update subtracted from each parameter (lr = 1: the gradient it applied)."""
    return [(a - b).detach() for a, b in zip(before.parameters(), trainer.model.parameters())]


def _same(step, grads, what, rtol=1e-5):
    """Each parameter's step equals the expected gradient, relative to that gradient's norm."""
    for n, (s, g) in enumerate(zip(step, grads)):
        err, size = float((s - g).norm()), float(g.norm())
        assert err <= rtol * size + 1e-12, f"{what}: parameter {n}: |step - expected| = {err:.3g}, |expected| = {size:.3g}"


def _differs(step, grads) -> bool:
    return any(float((s - g).norm()) > 1e-3 * float(g.norm()) for s, g in zip(step, grads))


@pytest.fixture(autouse=True)
def float64():
    """Parameters in float64, so that a step is measured without float32 rounding of the weights."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("batch", ["sampled", "smoothed"])
def test_one_update_is_the_official_update(tmp_path, tiny_data, batch):
    """The preset's IMM options, second update of an epoch (a nonzero carried state), clipping firing."""
    every = 2 if batch == "sampled" else 3
    trainer = _trainer(tmp_path, tiny_data, imm={"every": every})
    trainer.train_update()  # update 1 (a smoothed batch): leaves a carried state
    state, model = trainer.state, copy.deepcopy(trainer.model).train()
    rng = copy.deepcopy(trainer.objective.rng)
    x, y = trainer.batches.window(trainer.window)
    emb = {id(p) for p in model.embed.parameters()}

    torch.manual_seed(3)
    g_main, g_imm, _ = _official_grads(model, trainer.objective.kn, _windows_of(trainer, rng), x, y, state, batch == "sampled")
    clipped, norm = _clip(g_main, 0.05)
    assert norm > 0.05  # the clip fires
    params = list(model.parameters())
    if batch == "sampled":  # the official drops the sampled IMM gradient of the embedding
        g_imm = [torch.zeros_like(g) if id(p) in emb else g for p, g in zip(params, g_imm)]
    official = [2 * c + i if id(p) in emb else c + i for p, c, i in zip(params, clipped, g_imm)]

    torch.manual_seed(3)
    metrics, _ = trainer.train_update()
    assert metrics["imm_active"] == 1 and ("imm_loss_nats" in metrics) == (batch == "sampled")
    assert metrics["grad_norm"] == pytest.approx(norm, rel=1e-6)  # reported: the main gradient's norm
    step = _step(trainer, model)
    _same(step, official, batch)
    # the departures this replaces give another update: the clip on CE + IMM, the IMM term without the
    # factor T (a mean-token IMM under a sum-time CE), the plain embedding gradient
    total, _ = _clip([a + b for a, b in zip(g_main, g_imm)], 0.05)
    assert _differs(step, [t + (c if id(p) in emb else 0) for p, t, c in zip(params, total, clipped)])
    assert _differs(step, [2 * c + i / T if id(p) in emb else c + i / T for p, c, i in zip(params, clipped, g_imm)])
    assert _differs(step, [c + i for c, i in zip(clipped, g_imm)])


@pytest.mark.parametrize("clip", ["main", "total"])
def test_smoothed_first_is_the_official_mask_order(tmp_path, tiny_data, clip):
    """imm.mask_order = smoothed_first (departure 7): the single-sample term's own pass draws its dropout masks
    before the CE pass, as the official code builds the IMM gradients first; the default order gives another update."""
    imm = {"every": 3, "mask_order": "smoothed_first", "clip": clip}
    if clip == "total":
        imm["embedding_grad"] = "plain"
    trainer = _trainer(tmp_path, tiny_data, imm=imm)
    trainer.train_update()  # a nonzero carried state
    state, model = trainer.state, copy.deepcopy(trainer.model).train()
    x, y = trainer.batches.window(trainer.window)
    emb = {id(p) for p in model.embed.parameters()}
    params = list(model.parameters())

    def expected(smoothed_first):
        torch.manual_seed(3)
        g_main, g_imm, _ = _official_grads(model, trainer.objective.kn, None, x, y, state, False, smoothed_first=smoothed_first)
        if clip == "main":
            clipped, _ = _clip(g_main, 0.05)
            return [2 * c + i if id(p) in emb else c + i for p, c, i in zip(params, clipped, g_imm)]
        return _clip([a + b for a, b in zip(g_main, g_imm)], 0.05)[0]

    official = expected(True)
    torch.manual_seed(3)
    metrics, _ = trainer.train_update()
    assert "imm_smoothed_nats" in metrics
    step = _step(trainer, model)
    _same(step, official, f"smoothed first, clip={clip}")
    assert _differs(step, expected(False))


def test_mask_order_needs_the_separate_forward(tmp_path, tiny_data):
    with pytest.raises(LmlabError, match="smoothed_forward=separate"):
        _trainer(tmp_path, tiny_data, imm={"mask_order": "smoothed_first", "smoothed_forward": "shared"})


@pytest.mark.parametrize("phase", ["epoch", "switch_on"])
def test_sample_phase_picks_the_official_batches(tmp_path, tiny_data, phase):
    """imm.sample_phase = epoch (departure 1): window w of epoch e (from 0) gets the sampled term when
    w mod every = e mod every, the official code's phase; switch_on counts IMM-on batches across epochs."""
    every = 3
    trainer = _trainer(tmp_path, tiny_data, imm={"every": every, "sample_phase": phase}, dropout=0.0)
    n = trainer.batches.windows_per_epoch
    assert n % every != 0  # so that the two rules part in the second epoch
    sampled = set()
    for _ in range(2 * n + every):
        epoch, window = trainer.epoch, trainer.window
        metrics, _ = trainer.train_update()
        if "imm_loss_nats" in metrics:
            sampled.add((epoch, window))
    seen = [(e, w) for e in range(2) for w in range(n)] + [(2, w) for w in range(every)]
    official = {(e, w) for e, w in seen if w % every == e % every}
    counted = {(e, w) for i, (e, w) in enumerate(seen) if (i + 1) % every == 0}
    assert sampled == (official if phase == "epoch" else counted)
    assert official != counted


@pytest.mark.parametrize("phase", ["epoch", "switch_on"])
def test_imm_bench_times_a_sampled_and_a_smoothed_batch_under_either_phase(tmp_path, tiny_data, phase):
    """bench/imm_overhead.py positions the objective's next batch; under both sample phases its 'sampled' kind runs
    the sampled term and its 'smoothed' kind the single-sample one."""
    from conftest import load_bench
    bench = load_bench("imm_overhead")
    every = 3
    trainer = _trainer(tmp_path, tiny_data, imm={"every": every, "sample_phase": phase}, dropout=0.0)
    x, y = trainer.batches.window(0)
    for calls_mod, kind in ((every - 1, "imm_loss_nats"), (0, "imm_smoothed_nats")):
        bench.position(trainer.objective, calls_mod)
        _, _, metrics = trainer.objective(trainer.model, x, y, None, 0)
        trainer.objective.after_clip(trainer.model)
        assert kind in metrics, (calls_mod, metrics)


@pytest.mark.parametrize("clip", ["main", "total"])
def test_shared_forward_smoothed_update(tmp_path, tiny_data, clip):
    """smoothed_forward = shared: the smoothed term on the CE's own pass (same dropout masks), taken as CE + δ
    without a second output projection, gives the update of the official expression on that pass's logits."""
    imm = {"every": 3, "smoothed_forward": "shared", "clip": clip}
    if clip == "total":
        imm["embedding_grad"] = "plain"
    trainer = _trainer(tmp_path, tiny_data, imm=imm)
    trainer.train_update()
    state, model = trainer.state, copy.deepcopy(trainer.model).train()
    x, y = trainer.batches.window(trainer.window)
    emb = {id(p) for p in model.embed.parameters()}
    params = list(model.parameters())
    torch.manual_seed(3)
    g_main, g_imm, _ = _official_grads(model, trainer.objective.kn, None, x, y, state, False, own_forward=False)
    if clip == "main":
        clipped, norm = _clip(g_main, 0.05)
        official = [2 * c + i if id(p) in emb else c + i for p, c, i in zip(params, clipped, g_imm)]
    else:
        official, norm = _clip([a + b for a, b in zip(g_main, g_imm)], 0.05)
    assert norm > 0.05  # the clip fires
    torch.manual_seed(3)
    metrics, _ = trainer.train_update()
    assert "imm_smoothed_nats" in metrics
    step = _step(trainer, model)
    _same(step, official, f"shared, clip={clip}")
    if clip == "main":  # without the CE part of the IMM gradient (the hooks) the update differs
        delta_only = [2 * c + i - a * LAM if id(p) in emb else c + i - a * LAM
                      for p, c, i, a in zip(params, clipped, g_imm, g_main)]
        assert _differs(step, delta_only)
        assert not trainer.objective._ce_hooks  # removed once the update is done
    m, _ = trainer.train_update()  # the next (sampled) batch gets no CE copy from stale hooks
    assert "imm_loss_nats" in m or "imm_smoothed_nats" in m


def test_shared_forward_with_gradient_accumulation(tmp_path, tiny_data):
    """Two smoothed windows in one update, shared forward, clip = main: each window's CE gradient joins the IMM
    gradient once (unclipped, × λ), the CE gradients summed then clipped."""
    trainer = _trainer(tmp_path, tiny_data, imm={"every": 5, "smoothed_forward": "shared"}, grad_accum=2)
    model = copy.deepcopy(trainer.model).train()
    kn, params = trainer.objective.kn, list(model.parameters())
    emb = {id(p) for p in model.embed.parameters()}
    torch.manual_seed(4)
    x1, y1 = trainer.batches.window(0)
    m1, i1, state = _official_grads(model, kn, None, x1, y1, None, False, own_forward=False)
    x2, y2 = trainer.batches.window(1)
    m2, i2, _ = _official_grads(model, kn, None, x2, y2, state, False, own_forward=False)
    clipped, _ = _clip([(a + b) / 2 for a, b in zip(m1, m2)], 0.05)
    official = [2 * c + (a + b) / 2 if id(p) in emb else c + (a + b) / 2 for p, c, a, b in zip(params, clipped, i1, i2)]
    torch.manual_seed(4)
    trainer.train_update()
    _same(_step(trainer, model), official, "shared, grad_accum=2")


@pytest.mark.parametrize("algorithm", ["sampled", "serialized"])
def test_sum_time_scales_every_imm_part(tmp_path, tiny_data, algorithm):
    """lmlab's own variant (zero-start windows, one clip on the sum): under sum_time the IMM term gets the
    same factor T as the CE, also when Algorithm 2 back-propagates it itself."""
    imm = {"every": 2, "sampled_start": "zero", "clip": "total", "embedding_grad": "plain", "smoothed_forward": "shared",
           "algorithm": algorithm}
    trainer = _trainer(tmp_path, tiny_data, imm=imm, clip=0.0, dropout=0.0)
    trainer.train_update()
    state, model = trainer.state, copy.deepcopy(trainer.model).train()
    rng = copy.deepcopy(trainer.objective.rng)
    x, y = trainer.batches.window(trainer.window)
    g_main, g_imm, _ = _official_grads(model, trainer.objective.kn, _windows_of(trainer, rng), x, y, state, True, start="zero")
    trainer.train_update()
    step = _step(trainer, model)
    _same(step, [a + b for a, b in zip(g_main, g_imm)], algorithm)
    assert _differs(step, [a + b / T for a, b in zip(g_main, g_imm)])


def test_gradient_accumulation_with_imm(tmp_path, tiny_data):
    """Two windows in one update (a smoothed one, then a sampled one): the mean of their official losses,
    the CE gradients summed then clipped, the IMM gradients of both windows added unclipped."""
    trainer = _trainer(tmp_path, tiny_data, imm={"every": 2}, grad_accum=2)
    model = copy.deepcopy(trainer.model).train()
    rng = copy.deepcopy(trainer.objective.rng)
    kn, params = trainer.objective.kn, list(model.parameters())
    emb = {id(p) for p in model.embed.parameters()}
    torch.manual_seed(4)
    x1, y1 = trainer.batches.window(0)
    m1, i1, state = _official_grads(model, kn, None, x1, y1, None, False)
    x2, y2 = trainer.batches.window(1)
    m2, i2, _ = _official_grads(model, kn, _windows_of(trainer, rng), x2, y2, state, True)
    clipped, _ = _clip([(a + b) / 2 for a, b in zip(m1, m2)], 0.05)
    official = [2 * c + a / 2 if id(p) in emb else c + (a + b) / 2 for p, c, a, b in zip(params, clipped, i1, i2)]
    torch.manual_seed(4)
    trainer.train_update()
    step = _step(trainer, model)
    _same(step, official, "grad_accum=2")
    assert _differs(step, [2 * c if id(p) in emb else c + b / 2 for p, c, b in zip(params, clipped, i2)])  # window 1's IMM lost


def test_switch_on_and_best_reload_through_the_trainer(tmp_path, tiny_data):
    """Official schedule: IMM off until validation ppl < threshold, then lr 0.5 once; a validation
    plateau halves the lr and reloads the best weights, IMM staying on and the lr not reset."""
    trainer = _trainer(tmp_path, tiny_data, imm={"start_below_ppl": 1e9, "lr_at_start": 0.5, "every": 2}, clip=5.0,
                       schedule={"name": "plateau", "decay": 2.0, "patience": 0, "reload_best": True})
    trainer.run.prepare(trainer.config_record(), "auto", False)
    m, _ = trainer.train_update()
    assert m["imm_active"] == 0 and "imm_smoothed_nats" not in m and m["lr"] == 1.0
    trainer._log_eval()  # first evaluation: best, and ppl < threshold switches IMM on
    assert trainer.objective.active and trainer.schedule.lr == 0.5
    best = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    m, _ = trainer.train_update()
    assert m["imm_active"] == 1 and "imm_smoothed_nats" in m and m["lr"] == 0.5
    with torch.no_grad():  # make the next evaluation worse than the best one
        trainer.model.output.weight.mul_(-3.0)
    trainer._log_eval()
    assert trainer.schedule.lr == 0.25 and trainer.objective.active  # halved, not set back to 0.5
    for k, v in trainer.raw_model.state_dict().items():
        torch.testing.assert_close(v, best[k], rtol=0, atol=0)
    m, _ = trainer.train_update()
    assert m["lr"] == 0.25 and "imm_loss_nats" in m


def test_presets_carry_the_official_settings():
    base, imm = _preset("ptb-lstm-large"), _preset("ptb-lstm-large,ptb-lstm-imm")
    for cfg in (base, imm):
        assert (cfg.optim.lr, cfg.optim.clip, cfg.optim.loss_reduction) == (1.0, 5.0, "sum_time")
        assert cfg.data.eval_batch_size == 20 and cfg.model.lstm.forget_bias == 1.0
        assert (cfg.schedule.name, cfg.schedule.decay, cfg.schedule.patience, cfg.schedule.reload_best) == ("plateau", 2.0, 0, True)
        assert (cfg.schedule.max_decays, cfg.schedule.min_lr) == (21, 0.0)  # decay_count > max_decays = 20, in all
        assert cfg.model.lstm.bias_init == "tensorflow"
    i = imm.imm
    assert (imm.objective, i.weight, i.k, i.j, i.every, i.start_below_ppl, i.lr_at_start) == ("imm", 0.2, 10, 0, 5, 90.0, 0.5)
    assert (i.sampled_start, i.clip, i.embedding_grad, i.smoothed_forward, i.algorithm) == \
        ("carried", "main", "official", "separate", "sampled")
    assert (i.sample_phase, i.mask_order) == ("epoch", "smoothed_first")
    # the pair differs by IMM alone
    assert {k: v for k, v in to_dict(base).items() if k not in ("objective", "imm", "run")} == \
        {k: v for k, v in to_dict(imm).items() if k not in ("objective", "imm", "run")}


def test_max_decays_counts_every_decay_across_the_switch_on_reset():
    """The official stop: after the 21st decay in all, IMM's lr reset to 0.5 not restarting the count (an lr floor
    would stop the IMM arm at another count: the departure the old min_lr = 5e-7 made)."""
    from lmlab.core.train.config import ScheduleConfig
    from lmlab.core.train.optim import LRSchedule
    s = LRSchedule(ScheduleConfig(name="plateau", decay=2.0, patience=0, max_decays=21), 1.0, 1)
    s.on_eval(5.0)
    for _ in range(3):  # three decays before IMM switches on
        s.on_eval(6.0)
    s.set_lr(0.5)  # imm.lr_at_start
    n = 3
    while not s.finished():
        s.on_eval(6.0)
        n += 1
    assert n == s.decays == 21 and s.lr == 0.5 / 2 ** 18
    floor = LRSchedule(ScheduleConfig(name="plateau", decay=2.0, patience=0, min_lr=5e-7), 1.0, 1)
    floor.on_eval(5.0)
    for _ in range(3):
        floor.on_eval(6.0)
    floor.set_lr(0.5)
    while not floor.finished():
        floor.on_eval(6.0)
    assert floor.decays == 23  # 3 + the 20 that take 0.5 under 5e-7


def test_cpu_pair_differs_by_imm_alone():
    base, imm = _preset("ptb,ptb-lstm-small-dropout"), _preset("ptb,ptb-lstm-small-dropout,ptb-lstm-small-imm")
    strip = ("objective", "imm", "run")
    assert {k: v for k, v in to_dict(base).items() if k not in strip} == {k: v for k, v in to_dict(imm).items() if k not in strip}
    assert base.objective == "ce" and imm.objective == "imm"
    assert (base.optim.lr, base.optim.clip, base.optim.loss_reduction) == (1.0, 5.0, "sum_time")
    assert (base.schedule.name, base.schedule.decay, base.schedule.reload_best) == ("plateau", 2.0, True)
    assert 0.3 <= base.model.lstm.dropout <= 0.5 and 200 <= base.model.lstm.hidden_size <= 300
    i = imm.imm  # the official options, with 5 restricted positions a row for CPU cost
    assert (i.weight, i.k, i.j, i.every, i.sampled_start, i.clip, i.embedding_grad, i.smoothed_forward) == \
        (0.2, 10, 5, 5, "carried", "main", "official", "separate")
    assert 90 < imm.imm.start_below_ppl < 200 and imm.imm.lr_at_start == 0.5


def test_transformer_cpu_pair_differs_by_imm_alone():
    """make imm-transformer-ptb-cpu: the LSTM pair's protocol on a Transformer; IMM's SGD-only settings are off."""
    base = _preset("ptb,ptb-transformer-small-dropout")
    imm = _preset("ptb,ptb-transformer-small-dropout,ptb-transformer-small-imm")
    strip = ("objective", "imm", "run")
    assert {k: v for k, v in to_dict(base).items() if k not in strip} == {k: v for k, v in to_dict(imm).items() if k not in strip}
    assert (base.objective, imm.objective, base.model.kind) == ("ce", "imm", "transformer")
    # the sampled contexts are windows as long as the training ones, within the model's context
    assert base.data.bptt == base.model.transformer.context == 35 and imm.imm.context in (0, 35)
    assert (base.schedule.name, base.schedule.decay, base.schedule.reload_best, base.optim.loss_reduction) == \
        ("plateau", 2.0, True, "mean_token")
    i = imm.imm
    assert (i.weight, i.k, i.j, i.every, i.sampled_start, i.clip, i.between) == (0.2, 10, 5, 5, "zero", "main", "smoothed")
    assert i.lr_at_start <= 0  # the official 0.5 is an SGD lr; AdamW keeps its schedule
    assert i.embedding_grad == "plain" and base.model.output.tie  # the official rule needs untied embeddings
    assert i.start_below_ppl == 293.0  # 1.1 x the measured dropout-only best (266.7), the LSTM pair's ratio


def test_forget_bias_is_tensorflows_constant():
    """forget_bias = 1 changes only the forget-gate slice of bias_ih (by exactly 1) and computes TF's
    BasicLSTMCell: f = σ(W x + U h + b_f + 1); forget_bias = 0 leaves every parameter bitwise as without it."""
    def build(fb):
        torch.manual_seed(0)
        m = ModelConfig(kind="lstm", d_model=8, n_layers=2)
        m.lstm.hidden_size, m.lstm.init_range, m.lstm.dropout = 8, 0.1, 0.0
        if fb is not None:
            m.lstm.forget_bias = fb
        return build_language_model(m, 11)
    plain, zero, tf = build(None), build(0.0), build(1.0)
    for (n, a), b, c in zip(plain.named_parameters(), zero.parameters(), tf.parameters()):
        assert torch.equal(a, b)
        diff = c - a
        if n.endswith("bias_ih_l0"):
            torch.testing.assert_close(diff[8:16], torch.ones(8), rtol=0, atol=1e-12)  # (a + 1) - a, rounded
            assert not diff[:8].any() and not diff[16:].any()
        else:
            assert not diff.any()
    # one step of the first layer by hand, from a nonzero state, the constant added to the forget gate
    g = torch.Generator().manual_seed(1)
    layer, x, h0, c0 = plain.body.layers[0], *(torch.randn(3, 8, generator=g) for _ in range(3))
    gates = x @ layer.weight_ih_l0.T + h0 @ layer.weight_hh_l0.T + layer.bias_ih_l0 + layer.bias_hh_l0
    i, f, u, o = gates.chunk(4, -1)
    c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f + 1.0) * c0
    out, _ = tf.body.layers[0](x[:, None], (h0[None], c0[None]))
    torch.testing.assert_close(out[:, 0], torch.sigmoid(o) * torch.tanh(c))


def test_tensorflow_bias_init_is_the_official_one():
    """bias_init = tensorflow: BasicLSTMCell's zero gate biases (the forget constant then on top) and the output bias
    U(±init_range) like softmax_b under the official variable scope; the weights are drawn as under uniform."""
    def build(bias_init):
        torch.manual_seed(0)
        m = ModelConfig(kind="lstm", d_model=8, n_layers=2)
        m.lstm.hidden_size, m.lstm.init_range, m.lstm.dropout, m.lstm.forget_bias = 8, 0.1, 0.0, 1.0
        m.lstm.bias_init = bias_init
        m.output.tie = False
        return build_language_model(m, 11)
    uniform, tf = build("uniform"), build("tensorflow")
    for (n, a), b in zip(uniform.named_parameters(), tf.parameters()):
        if "bias_hh" in n:
            assert not b.any() and a.abs().max() > 0.05
        elif "bias_ih" in n:  # 0 + the forget constant on the forget slice
            assert torch.equal(b, torch.cat([torch.zeros(8), torch.ones(8), torch.zeros(16)]))
        elif n == "output.bias":
            assert not a.any() and 0.05 < b.abs().max() <= 0.1
        else:
            assert torch.equal(a, b), n
    assert _preset("ptb-lstm-large").model.lstm.bias_init == "tensorflow"
    assert _preset("ptb,ptb-lstm-small-dropout").model.lstm.bias_init == "uniform"  # the recorded CPU tier's init


def test_paired_names_the_imm_arms_threshold_and_switch_on(tmp_path, capsys):
    """The full tier's threshold is computed by make (1.1 x seed 1's dropout-only best), so the record's command does
    not show it: bench/imm_paired.py reads it from each IMM run's config and says when each seed switched IMM on."""
    import json
    from conftest import load_bench
    paired = load_bench("imm_paired")
    for arm, objective in (("dropout", "ce"), ("imm", "imm")):
        for seed, on_at in ((1, 3), (2, None)):
            run = tmp_path / f"{arm}-s{seed}"
            run.mkdir()
            (run / "config.json").write_text(json.dumps({"objective": objective, "imm": {"start_below_ppl": 105.0}}))
            rows = [{"step": 2, "epoch": 1, "valid_ppl": 110.0 + seed}]
            rows += [{"step": step, "epoch": 1 + step // 3, "train_loss_nats": 5.0,
                      "imm_active": float(objective == "imm" and on_at is not None and step >= on_at)} for step in (1, 2, 3, 4)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "--json", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    assert "The imm arm switched IMM on below validation perplexity 105: seed 1: from update 3 (2 epochs done); seed 2: never." in text
    assert json.loads((tmp_path / "out.json").read_text())["switch_on"]["1"] == {"start_below_ppl": 105.0, "step": 3, "epoch": 2}
    # seed 1 recorded, its run dirs gone: its switch-on is read from the record with its figures
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"commit": "0" * 40, "metrics": {"paired": json.loads((tmp_path / "out.json").read_text())}}))
    import shutil
    moved = tmp_path / "moved"
    moved.mkdir()
    for arm in ("dropout", "imm"):
        shutil.move(str(tmp_path / f"{arm}-s1"), str(moved / f"{arm}-s1"))
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "--record", str(record), "--recorded-seeds", "1"]) == 0
    assert "below validation perplexity 105: seed 1: from update 3 (2 epochs done); seed 2: never." in capsys.readouterr().out
    for arm in ("dropout", "imm"):
        shutil.move(str(moved / f"{arm}-s1"), str(tmp_path / f"{arm}-s1"))
    # an arm that is not an IMM run (the control, DeFINE, tfinit arms) has no such line
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "--base", "imm", "--arm", "dropout", "--claim", "none"]) == 0
    assert "switched IMM on" not in capsys.readouterr().out


def test_paired_seed_statistics_by_hand(tmp_path, capsys):
    """bench/imm_paired.py: best validation ppl per run, mean ± sd per arm, paired difference ± SE."""
    import json
    from conftest import load_bench
    paired = load_bench("imm_paired")
    best = {"dropout": [140.0, 150.0, 145.0], "imm": [138.0, 146.0, 144.0]}  # differences -2, -4, -1
    for arm, values in best.items():
        for seed, v in zip((1, 2, 3), values):
            run = tmp_path / f"{arm}-s{seed}"
            run.mkdir()
            rows = [{"step": 1, "epoch": 1, "valid_ppl": v + 20}, {"step": 2, "train_loss_nats": 5.0},
                    {"step": 3, "epoch": 2, "valid_ppl": v}, {"step": 4, "epoch": 3, "valid_ppl": v + seed}]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "3", "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())["valid_ppl"]
    assert out["dropout"]["mean"] == pytest.approx(145.0) and out["dropout"]["sd"] == pytest.approx(5.0)
    d = out["difference"]  # mean -7/3, sd sqrt(((1/3)^2 + (5/3)^2 + (4/3)^2) / 2) = sqrt(7/3)
    assert d["mean"] == pytest.approx(-7 / 3) and d["sd"] == pytest.approx(math.sqrt(7 / 3))
    assert d["se"] == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3))
    assert "test_ppl" not in json.loads((tmp_path / "out.json").read_text())  # no eval-test.json yet
    assert d["below_by_2se"]  # -2.33 < -2 x 0.88
    # how long each run trained: its best epoch and the last evaluated one
    assert json.loads((tmp_path / "out.json").read_text())["epochs"]["2"] == {"dropout": {"best": 2, "last": 3},
                                                                               "imm": {"best": 2, "last": 3}}
    # an arm that trains past its base arm's last epoch: the cut reads only the epochs the base arm had
    with open(tmp_path / "imm-s1" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "epoch": 4, "valid_ppl": 100.0}) + "\n")
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "3", "--json", str(tmp_path / "long.json")]) == 0
    long = json.loads((tmp_path / "long.json").read_text())
    assert long["valid_ppl"]["per_seed"]["1"]["imm"] == 100.0 and long["epochs"]["1"]["imm"] == {"best": 4, "last": 4}
    cut = long["valid_ppl_arm_cut_at_base_last_epoch"]
    assert cut["per_seed"] == {"1": 138.0, "2": 146.0, "3": 144.0}
    assert cut["difference"]["mean"] == pytest.approx(-7 / 3)
    (tmp_path / "imm-s1" / "metrics.jsonl").write_text("".join(
        line for line in (tmp_path / "imm-s1" / "metrics.jsonl").read_text().splitlines(keepends=True) if '"epoch": 4' not in line))
    # the arms swapped: IMM above by the same amount is not the claim; the paper's figures are printed beside
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "3", "--base", "imm", "--arm", "dropout", "--json",
                        str(tmp_path / "swap.json"), "--paper-base", "81.6", "--paper-arm", "76"]) == 0
    swap = json.loads((tmp_path / "swap.json").read_text())
    assert not swap["valid_ppl"]["difference"]["below_by_2se"] and swap["paper"]["imm"] == 81.6
    # DeFINE's claim (equal or better): +2.33 is not below +2 x 0.88, so "not above" fails when swapped, and holds
    # for the original order; the base arm read from another tier's directory
    other = tmp_path / "other"
    other.mkdir()
    for seed in (1, 2, 3):
        (tmp_path / f"dropout-s{seed}").rename(other / f"dropout-s{seed}")
    assert paired.main([str(tmp_path), "--seeds", "1", "2", "3", "--base-dir", str(other), "--claim", "not-above",
                        "--json", str(tmp_path / "na.json")]) == 0
    na = json.loads((tmp_path / "na.json").read_text())
    assert na["claim"] == "not-above" and na["valid_ppl"]["difference"]["shows_claim"]
    assert na["valid_ppl"]["dropout"]["mean"] == pytest.approx(145.0)
    assert paired.main([str(other), "--seeds", "1", "2", "3", "--base", "imm", "--base-dir", str(tmp_path), "--arm",
                        "dropout", "--claim", "not-above", "--json", str(tmp_path / "na2.json")]) == 0
    assert not json.loads((tmp_path / "na2.json").read_text())["valid_ppl"]["difference"]["shows_claim"]
    # one seed (the full-data tier is recorded a seed at a time): no standard error, so the claim is untested, not failed
    capsys.readouterr()
    assert paired.main([str(other), "--seeds", "1", "--base", "imm", "--base-dir", str(tmp_path), "--arm", "dropout",
                        "--json", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())["valid_ppl"]["difference"]
    assert one["n"] == 1 and one["se"] is None and one["shows_claim"] is None
    assert "(SE, 1 seed): this cannot test (one seed has no standard error) the paper's claim" in capsys.readouterr().out


def test_an_imm_arm_is_its_dropout_arm_bit_for_bit_until_the_switch_on(tmp_path, tiny_data):
    """The pair differs by IMM alone in behaviour, not only in config: until IMM switches on, the IMM arm draws the
    same dropout masks and makes the same updates as the dropout-only arm of its seed (the IMM objective's own random
    stream is separate), so the arms part exactly at the switch-on. Here the threshold is never met."""
    from conftest import invoke
    from lmlab.core.checkpoint import load_checkpoint
    args = ["train-lm", "--device", "cpu", "--steps", "12", "--seed", "5", "--data", str(tiny_data),
            "--set", "data.batch_size=4", "--set", "data.bptt=8", "--set", "data.eval_batch_size=2",
            "--set", "model.d_model=16", "--set", "model.lstm.hidden_size=16", "--set", "run.eval_interval=4",
            "--set", "hardware.threads=1", "-q"]
    runs = {}
    for arm, presets in (("dropout", "ptb-lstm-small-dropout"), ("imm", "ptb-lstm-small-dropout,ptb-lstm-small-imm")):
        runs[arm] = tmp_path / arm
        extra = ["--set", "imm.start_below_ppl=1.0"] if arm == "imm" else []
        assert invoke(*args, "--preset", presets, *extra, "--run-dir", str(runs[arm])).exit_code == 0

    def losses(run):
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("train_loss_nats"), r.get("valid_loss_nats")) for r in rows]
    assert losses(runs["dropout"]) == losses(runs["imm"])
    a, b = (load_checkpoint(runs[arm] / "checkpoints" / "last.pt", "lm")["model"] for arm in ("dropout", "imm"))
    assert all(torch.equal(a[k], b[k]) for k in a)
