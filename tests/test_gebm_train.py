"""GEBM training loop, resume, sampling, FID/KID and presets, on tiny synthetic data."""

import os
import signal

import numpy as np
import pytest
import torch

from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.config import merge, preset_names, resolve
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.evaluate import evaluate_density, evaluate_images
from lmlab.core.gebm.fid import InceptionV3, SmallExtractor, features, frechet_distance, kernel_inception_distance
from lmlab.core.gebm.sample import sample, write_samples
from lmlab.core.gebm.train import Config, train
from lmlab.core.reporting import NullReporter
from reporters import StopAt

pytestmark = pytest.mark.usefixtures("one_thread")



def tiny_image_cfg(run_dir, max_steps=1, **optim):
    return merge(Config(), {
        "data": {"kind": "image", "dataset": "synthetic-images", "subset": 32, "batch_size": 4},
        "model": {"width": 2, "latent_dim": 4},
        "optim": {"energy_steps": 1, "energy_steps_init": 1, "init_log_partition_batches": 1, **optim},
        "schedule": {"max_steps": max_steps},
        "run": {"dir": str(run_dir), "log_every": 1, "eval_interval": 1}, "hardware": {"device": "cpu"}})


def tiny_density_cfg(run_dir, max_steps=6, **optim):
    """The official UCI recipe in miniature: combined flow energy, latent batch x2, gradient_l2, grad transform,
    lr milestones (crossed at update 3 and 9, so a resume must restore the update count)."""
    return merge(Config(), {
        "data": {"kind": "density", "dataset": "synthetic-density", "batch_size": 16},
        "model": {"energy": "flow-combined", "flow_transforms": 2, "flow_hidden": 8},
        "optim": {"energy_steps": 1, "energy_steps_init": 3, "noise_factor": 2,
                  "penalty": 0.1, "penalty_type": "gradient_l2", "grad_transform": True, "lr_milestones": "3,9",
                  "init_log_partition_batches": 1, **optim},
        "schedule": {"max_steps": max_steps}, "eval": {"is_samples": 200},
        "run": {"dir": str(run_dir), "log_every": 1, "eval_interval": 3}, "hardware": {"device": "cpu"}})


def _weights(path):
    st = load_checkpoint(path, "gebm")
    return st, {**{f"b.{k}": v for k, v in st["base"].items()}, **{f"e.{k}": v for k, v in st["energy"].items()}}


def test_killed_run_resumes_identically(tmp_path):
    full = train(tiny_density_cfg(tmp_path / "full"), NullReporter())
    assert full["completed"] and full["step"] == 6 and full["updates"] == 6 + 3 + 3 + 4  # base + energy updates
    first = train(tiny_density_cfg(tmp_path / "cut"), StopAt(3, signal.SIGUSR1))
    assert not first["completed"] and first["step"] == 3 and first["stopped_by"] == "SIGUSR1"
    second = train(tiny_density_cfg(tmp_path / "cut"), NullReporter())
    assert second["completed"] and second["step"] == 6 and second["updates"] == full["updates"]
    # wall time counts both processes: the first one's is carried in last.pt
    assert first["wall_s"] > 0 and second["wall_s"] == pytest.approx(first["wall_s"] + second["seconds"], abs=0.05)
    sa, wa = _weights(tmp_path / "full" / "checkpoints" / "last.pt")
    sb, wb = _weights(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert not any(k.startswith("e.") and "_base" in k for k in wa)  # the combined energy does not store the base
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert torch.equal(sa["log_partition"], sb["log_partition"])
    assert sa["opt_energy"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 0.8 ** 2)  # both milestones passed
    from lmlab.core.rundir import RunDir
    steps = [r["step"] for r in RunDir(tmp_path / "cut").read_metrics() if "base_loss_nats" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated lines after the resume


def test_a_longer_schedule_max_steps_extends_a_finished_run_as_if_started_with_it(tmp_path):
    """schedule.max_steps is a run-dir volatile key and GEBM's lr milestones count absolute updates: a finished
    3-step run rerun with 6 trains on to the weights of a 6-step run (the cadence divides both ends)."""
    full = train(tiny_density_cfg(tmp_path / "full"), NullReporter())
    short = train(tiny_density_cfg(tmp_path / "grown", max_steps=3), NullReporter())
    assert short["completed"] and short["step"] == 3
    grown = train(tiny_density_cfg(tmp_path / "grown"), NullReporter())
    assert grown["completed"] and grown["step"] == 6 and grown["updates"] == full["updates"]
    _, wa = _weights(tmp_path / "full" / "checkpoints" / "last.pt")
    _, wb = _weights(tmp_path / "grown" / "checkpoints" / "last.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_hardware_precision_and_compile_are_refused_not_ignored(tmp_path):
    """train-lm's hardware keys exist (one vocabulary) but GEBM trains in fp32 without compile: one error line."""
    assert tiny_density_cfg(tmp_path / "r").hardware.precision == "fp32"
    with pytest.raises(LmlabError, match=r"^hardware.precision: 'bf16': GEBM trains in fp32 without torch.compile"):
        merge(tiny_density_cfg(tmp_path / "r"), {"hardware": {"precision": "bf16"}})
    with pytest.raises(LmlabError, match=r"^hardware.compile: true: GEBM trains in fp32 without torch.compile"):
        merge(tiny_density_cfg(tmp_path / "r"), {"hardware": {"compile": True}})


def test_a_checkpoint_written_before_the_rename_still_loads(tmp_path):
    """Checkpoints of runs made before issue #13 hold optim.base_steps, eval.every, ...: sampling and evaluation load
    them (the config is upgraded), while the same keys typed by a user are errors."""
    from lmlab.core.gebm.models import from_state
    train(tiny_density_cfg(tmp_path / "r", max_steps=1), NullReporter())
    st = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt", "gebm")
    c = st["config"]
    c["optim"]["base_steps"], c["optim"]["batch_size"] = c.pop("schedule")["max_steps"], c["data"].pop("batch_size")
    c["eval"]["every"], c["eval"]["keep"] = c["run"].pop("eval_interval"), c["run"].pop("keep")
    del c["hardware"]["precision"], c["hardware"]["compile"]
    cfg, base, energy, _ = from_state(st)
    assert (cfg.schedule.max_steps, cfg.data.batch_size, cfg.run.eval_interval, cfg.run.keep) == (1, 16, 3, 2)


def test_resume_never_refuses_and_nan_raises(tmp_path):
    train(tiny_density_cfg(tmp_path / "r", max_steps=1), NullReporter())
    with pytest.raises(LmlabError, match="holds a run"):
        train(merge(tiny_density_cfg(tmp_path / "r", max_steps=1), {"run": {"resume": "never"}}), NullReporter())
    from lmlab.core.errors import NonFiniteLossError
    with pytest.raises(NonFiniteLossError):
        train(tiny_density_cfg(tmp_path / "nan", lr_energy=1e30, grad_transform=False), NullReporter())
    with pytest.raises(LmlabError, match="lr_milestones"):
        train(tiny_density_cfg(tmp_path / "bad", lr_milestones="50,x"), NullReporter())


def test_image_training_sampling_and_writers(tmp_path):
    out = train(tiny_image_cfg(tmp_path / "s"), NullReporter())
    assert out["completed"] and out["updates"] == 2  # one energy update (init phase of 1) + one base update
    state = load_checkpoint(tmp_path / "s" / "checkpoints" / "best.pt", "gebm")
    kw = dict(num_samples=4, steps=3, step_size=1e-3, beta=100.0, friction=1.0, mass=1.0, decay_every=2,
              decay=0.1, seed=3, device="cpu")
    gen_only = sample(state, sampler="none", **kw)
    for s in ("ula", "kla"):
        x = sample(state, sampler=s, **kw)
        assert x.shape == (4, 3, 32, 32) and x.abs().max() <= 1
        assert not torch.equal(x, gen_only)
    assert torch.equal(sample(state, sampler="kla", **kw), sample(state, sampler="kla", **kw))  # seeded
    write_samples(gen_only, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_samples(gen_only, str(tmp_path / "g.npy"))
    assert np.load(tmp_path / "g.npy").shape == (4, 3, 32, 32)
    with pytest.raises(LmlabError, match="CSV"):
        write_samples(gen_only, str(tmp_path / "g.csv"))
    write_samples(torch.randn(4, 3), str(tmp_path / "d.csv"))
    assert len((tmp_path / "d.csv").read_text().splitlines()) == 4
    real = torch.rand(20, 3, 32, 32) * 2 - 1
    ev = evaluate_images(state, real, num_samples=20, sampler="kla", steps=2, step_size=1e-3, device="cpu",
                         kid_subset=10)
    assert ev["fid_generator"] > 0 and "fid_gebm_kla" in ev and ev["extractor"] == "small-random-conv"
    # real-image statistics computed once and reused: the second evaluation never loads the images
    stats, meta = tmp_path / "real-stats.npz", {"source": "synthetic", "split": "test", "requested": 20}
    kw = dict(num_samples=20, sampler="kla", steps=2, step_size=1e-3, device="cpu", kid_subset=10, real_stats=str(stats))
    first = evaluate_images(state, lambda: real, real_meta=meta, **kw)
    assert stats.exists() and first["real_images"] == 20

    def no_images():
        raise AssertionError("the saved statistics should have been used")

    again = evaluate_images(state, no_images, real_meta=meta, **kw)
    assert again["fid_generator"] == first["fid_generator"] == pytest.approx(ev["fid_generator"], rel=1e-9)
    assert again["real_images"] == 20 and again["kid_generator"] == first["kid_generator"]
    with pytest.raises(LmlabError, match=r"split \('test', now 'train'\)"):
        evaluate_images(state, no_images, real_meta={**meta, "split": "train"}, **kw)
    with pytest.raises(LmlabError, match="extractor"):
        _other_extractor(state, no_images, meta, kw, tmp_path)


def _other_extractor(state, images, meta, kw, tmp_path):
    """An Inception weights file (any bytes: its sha256 names the extractor) other than the saved statistics' one."""
    import lmlab.core.gebm.evaluate as ev_mod
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not the small extractor")
    real_make = ev_mod.make_extractor
    ev_mod.make_extractor = lambda inception, device, classifier=None: SmallExtractor().to(device)  # no real Inception
    try:
        return evaluate_images(state, images, real_meta=meta, inception=str(weights), **kw)
    finally:
        ev_mod.make_extractor = real_make


def test_fid_kid_identical_sets_are_zero():
    x = torch.rand(200, 3, 32, 32) * 2 - 1
    ext = SmallExtractor(dim=16)
    f = features(ext, x)
    assert abs(frechet_distance(f, f)) < 1e-6
    kid, _ = kernel_inception_distance(f, f, subsets=5, subset_size=50)
    assert abs(kid) < 1e-2 * np.abs(f).mean() + 1e-6 or abs(kid) < 5e-3
    g = features(ext, (x + 0.5).clamp(-1, 1))
    assert frechet_distance(f, g) > 1e-3


def test_frechet_distance_of_gaussians():
    rng = np.random.RandomState(0)
    a, b = rng.randn(20000, 2), rng.randn(20000, 2) * 2 + 1
    # closed form: |μ|² + Σ(1 + 4 - 2·2) = 2 + 2
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.1)


def test_inception_architecture_shapes(tmp_path):
    net = InceptionV3().eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 2048)
    torch.save(net.state_dict(), tmp_path / "inc.pth")
    from lmlab.core.gebm.fid import load_inception
    load_inception(tmp_path / "inc.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(LmlabError, match="missing weights"):
        load_inception(tmp_path / "bad.pth")
    (tmp_path / "notes.pth").write_text("root:x:0:0:root:/root:/bin/bash\n")  # a text file: was an IndexError traceback
    with pytest.raises(LmlabError, match="not a plain state dict"):
        load_inception(tmp_path / "notes.pth")


def test_density_gebm_and_mle_nll(tmp_path):
    for objective in ("gebm", "mle"):
        cfg = tiny_density_cfg(tmp_path / objective, max_steps=2, objective=objective)
        train(cfg, NullReporter())
        st = load_checkpoint(tmp_path / objective / "checkpoints" / "best.pt", "gebm")
        r = evaluate_density(st, is_samples=4000, device="cpu")
        assert np.isfinite(r["nll_base_nats"]) and r["rows"] == 400
        if objective == "gebm":
            # combined energy: Q = p_phi, so Z = 1 and IS NLL = exact NLL up to the IS error
            assert abs(r["log_z_is"]) < 5 * r["log_z_se"] + 0.05 and 0 < r["is_ess_frac"] <= 1
            assert r["nll_gebm_nats"] == pytest.approx(r["nll_gebm_exact_nats"] + r["log_z_is"], abs=1e-4)
        else:
            assert r["nll_gebm_nats"] is None
        x = sample(st, num_samples=5, sampler="ula", steps=2, step_size=1e-3, beta=1.0, friction=1.0, mass=1.0,
                   decay_every=0, decay=1.0, seed=0, device="cpu")
        assert x.shape == (5, 4)


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith("gebm-")])
def test_presets_parse(name, preset_env):
    for command in ("train-ebm",):
        cfg = resolve(Config, command, [name])
        assert cfg.data.batch_size > 0 and cfg.schedule.max_steps > 0


def test_stop_inside_the_energy_phase_saves_and_resumes_identically(tmp_path, monkeypatch):
    """A signal during a long energy phase (energy_steps_init) stops after the current energy update, not at
    the end of the base step; the resumed run makes the remaining energy updates and ends bitwise equal."""
    import lmlab.core.gebm.train as gebm_train
    full = train(tiny_density_cfg(tmp_path / "full"), NullReporter())
    real, calls = gebm_train.energy_loss, {"n": 0}

    def loss_then_signal(*args):
        calls["n"] += 1
        if calls["n"] == 5:  # base step 2's 2nd of 3 energy updates (base step 1 made 3)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(gebm_train, "energy_loss", loss_then_signal)
    first = train(tiny_density_cfg(tmp_path / "cut"), NullReporter())
    monkeypatch.setattr(gebm_train, "energy_loss", real)
    assert not first["completed"] and first["step"] == 1 and first["stopped_by"] == "SIGTERM"
    assert first["updates"] == 3 + 1 + 2 and calls["n"] == 5
    saved = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt", "gebm")
    assert saved["step"] == 1 and saved["energy_steps_done"] == 2
    second = train(tiny_density_cfg(tmp_path / "cut"), NullReporter())
    assert second["completed"] and second["updates"] == full["updates"]
    sa, wa = _weights(tmp_path / "full" / "checkpoints" / "last.pt")
    sb, wb = _weights(tmp_path / "cut" / "checkpoints" / "last.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert torch.equal(sa["log_partition"], sb["log_partition"])


def test_resumed_run_logs_the_same_metric_rows_with_log_every_2(tmp_path, monkeypatch):
    """The rows averaged since the last metrics line are in the checkpoint: a run stopped after base step 3
    (of a 2-step logging window) logs the same step-4 row on resume as the uninterrupted run."""
    import lmlab.core.gebm.train as gebm_train
    from lmlab.core.rundir import RunDir

    def cfg(run):
        return merge(tiny_density_cfg(run), {"run": {"log_every": 2}})

    train(cfg(tmp_path / "full"), NullReporter())
    real, calls = gebm_train.energy_loss, {"n": 0}

    def loss_then_signal(*args):
        calls["n"] += 1
        if calls["n"] == 7:  # the energy update of base step 3 (steps 1-2 made 3 each)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(gebm_train, "energy_loss", loss_then_signal)
    first = train(cfg(tmp_path / "cut"), NullReporter())
    monkeypatch.setattr(gebm_train, "energy_loss", real)
    assert first["step"] == 3 and not first["completed"]
    train(cfg(tmp_path / "cut"), NullReporter())

    def rows(run):
        return [{k: v for k, v in r.items() if k != "s_per_step"} for r in RunDir(run).read_metrics() if "base_loss_nats" in r]

    assert [r["step"] for r in rows(tmp_path / "full")] == [2, 4, 6]
    assert rows(tmp_path / "cut") == rows(tmp_path / "full")


@pytest.mark.parametrize("flow", ["maf", "made"])
def test_density_run_with_maf_and_made_flows(tmp_path, flow):
    """model.flow=maf|made trains the miniature UCI recipe end to end and its checkpoint evaluates."""
    out = train(merge(tiny_density_cfg(tmp_path / flow, max_steps=3), {"model": {"flow": flow}}), NullReporter())
    assert out["completed"]
    res = evaluate_density(load_checkpoint(tmp_path / flow / "checkpoints" / "best.pt", "gebm"), split="test",
                           is_samples=100, device="cpu")
    assert np.isfinite(res["nll_gebm_nats"]) and np.isfinite(res["nll_base_nats"])


def test_image_run_with_the_official_resnet_sn_networks(tmp_path):
    """model.generator / model.energy = resnet-sn train an image run and sample from its checkpoint."""
    cfg = merge(tiny_image_cfg(tmp_path / "rn"), {"model": {"generator": "resnet-sn", "energy": "resnet-sn", "width": 4}})
    assert train(cfg, NullReporter())["completed"]
    state = load_checkpoint(tmp_path / "rn" / "checkpoints" / "last.pt", "gebm")
    assert any(k.startswith("g.net.0.main") for k in state["base"])  # the residual generator was saved and reloads
    x = sample(state, sampler="kla", num_samples=2, steps=1, device="cpu")
    assert x.shape == (2, 3, 32, 32)


def test_cifar10_preset_is_the_official_training_yaml(preset_env):
    """GeneralizedEBM configs/training.yaml + main.py defaults: resnet-sn networks of width 128, batch 128, 150k base
    updates, Adam 1e-4 (0.5, 0.999), penalty 1, 5 energy updates (100 at the start), the grad_clip transform on."""
    cfg = resolve(Config, "train-ebm", ["gebm-cifar10"])
    m, o = cfg.model, cfg.optim
    assert (m.generator, m.energy, m.width, m.latent_dim) == ("resnet-sn", "resnet-sn", 128, 100)
    assert (cfg.data.batch_size, cfg.schedule.max_steps) == (128, 150000)
    assert (o.lr_energy, o.lr_base, o.beta1, o.beta2, o.penalty) == (1e-4, 1e-4, 0.5, 0.999, 1.0)
    assert (o.energy_steps, o.energy_steps_init, o.grad_transform) == (5, 100, True)
    # the schedule: FID samples every 2000 base steps, the plateau test against 20000 steps back, x0.8 decays, the
    # fixed decay at multiples of 5000 beside the evaluations; the Inception weights required, not replaced
    assert (o.lr_decay, o.lr_decay_every, o.lr_plateau, o.lr_plateau_window) == (0.8, 5000, True, 20000)
    assert (cfg.run.eval_interval, cfg.eval.fid_samples) == (2000, 50000)
    assert cfg.eval.inception == str(preset_env / "lmlab_inception")


@pytest.mark.parametrize("objective", ["gebm", "mle"])
def test_test_split_scored_at_each_eval_changes_nothing_else(tmp_path, objective):
    """eval.test_each_eval (the official min-over-test rule, reported only): test NLL rows equal to evaluate_density
    on the same checkpoint, and training, selection and weights bitwise those of a run without it."""
    import json
    runs = {}
    for flag in (False, True):
        cfg = tiny_density_cfg(tmp_path / f"{objective}-{flag}", max_steps=6, objective=objective)
        cfg.eval.test_each_eval = flag
        out = train(cfg, NullReporter())
        rows = [json.loads(l) for l in open(tmp_path / f"{objective}-{flag}" / "metrics.jsonl")]
        runs[flag] = (out, rows, _weights(tmp_path / f"{objective}-{flag}" / "checkpoints" / "last.pt")[1])
    (out0, rows0, w0), (out1, rows1, w1) = runs[False], runs[True]
    assert out0["best_metric"] == out1["best_metric"] and w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    evals = [r for r in rows1 if "test_nll_base_nats" in r]
    assert len(evals) == 2 and not any("test_nll_base_nats" in r for r in rows0)
    key = "valid_nll_gebm_nats" if objective == "gebm" else "valid_nll_base_nats"
    assert [r[key] for r in evals] == [r[key] for r in rows0 if key in r]
    # the last row scores the final weights: the exact base NLL on the test split, as the evaluator computes it
    st = load_checkpoint(tmp_path / f"{objective}-True" / "checkpoints" / "last.pt", "gebm")
    r = evaluate_density(st, is_samples=200, device="cpu", split="test")
    assert evals[-1]["test_nll_base_nats"] == pytest.approx(r["nll_base_nats"], rel=1e-6)
    if objective == "gebm":
        assert evals[-1]["test_nll_gebm_nats"] > 0 and "test_nll_gebm_nats" in evals[0]


def test_progress_lines_come_every_log_interval_between_metrics_lines(tmp_path):
    """A base step can be minutes of energy updates (official UCI: 50-100 each), so progress follows
    run.log_interval_s, not only the metrics lines every run.log_every base steps."""
    import io

    from lmlab.core.reporting import Reporter
    out = io.StringIO()
    cfg = merge(tiny_density_cfg(tmp_path / "r", max_steps=3), {"run": {"log_every": 50, "log_interval_s": 0}})
    train(cfg, Reporter(stream=out, interval_s=cfg.run.log_interval_s))
    progress = [line for line in out.getvalue().splitlines() if " gebm " in line]
    assert [line.split(" gebm ")[1].split()[0] for line in progress] == ["1/3", "2/3", "3/3"], out.getvalue()
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2  # one train line (step 3), one eval
