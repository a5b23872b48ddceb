"""GEBM data loaders: CIFAR-10 pickles (safely), image folders/tarballs, UCI preprocessing."""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lmlab.core.errors import LmlabError
from lmlab.core.gebm import data as gd

from conftest import needs_shared


def _write_batch(path, n, seed):
    rng = np.random.RandomState(seed)
    batch = {b"batch_label": b"test", b"labels": list(rng.randint(0, 10, n)),
             b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), b"filenames": [b"x.png"] * n}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


def test_cifar_pickle_batches(tmp_path):
    batches = [_write_batch(tmp_path / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    _write_batch(tmp_path / "test_batch", 3, 9)
    x = gd.load_cifar10(tmp_path, "train")
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[0].reshape(-1), batches[0][b"data"][0])
    assert gd.load_cifar10(tmp_path, "test").shape == (3, 3, 32, 32)
    assert gd.load_cifar10(tmp_path, "train", subset=5).shape == (5, 3, 32, 32)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/lmlab_gebm_pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil()}, f)
    with pytest.raises(LmlabError, match="not allowed|not a safe"):
        gd.load_cifar10(tmp_path, "train")
    assert not Path("/tmp/lmlab_gebm_pwned").exists()


def _png(rgb):
    from lmlab.core.gebm.sample import png_bytes
    return png_bytes(rgb)


def test_image_folder_and_tarball(tmp_path):
    pytest.importorskip("PIL", reason="Pillow decodes image files (pip install 'lmlab[images]')")
    root = tmp_path / "imgs"
    rng = np.random.RandomState(0)
    expected = {}
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                rgb = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
                (root / split / cls / f"{i}.png").write_bytes(_png(rgb))
                expected[f"{split}/{cls}/{i}.png"] = rgb
    x, labels, classes = gd.load_image_files(root, "train")
    assert x.shape == (6, 3, 32, 32) and classes == ["cat", "dog"] and list(labels) == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(x[0].transpose(1, 2, 0), expected["train/cat/0.png"])  # PNG is lossless
    tgz = tmp_path / "imgs.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(root, arcname="CIFAR-10-images")
    y = gd.load_cifar10(tgz, "test")
    assert y.shape == (6, 3, 32, 32)
    assert gd.load_cifar10(tgz, "train", subset=4).shape == (4, 3, 32, 32)
    with pytest.raises(LmlabError, match="no images"):
        gd.load_image_files(root, "valid")


@pytest.mark.slow
def test_shared_cifar_jpeg_tarball():
    path = needs_shared("cifar10", "CIFAR-10-images.tar.gz")
    pytest.importorskip("PIL", reason="Pillow decodes JPEG (pip install 'lmlab[images]')")
    x = gd.load_cifar10(path, "test", subset=16)
    assert x.shape == (16, 3, 32, 32) and 20 < x.mean() < 235


def test_uci_split_sizes_and_whitening():
    raw = np.random.RandomState(0).randn(3000, 6) @ np.random.RandomState(1).randn(6, 6)
    s = gd.preprocess_uci(raw, seed=1, dequantise=False, permute=True)
    assert len(s["test"]) == 300                       # last 10%
    assert len(s["valid"]) == 270                      # min(10% of the rest, 1000)
    assert len(s["train"]) == 3000 - 300 - 270
    allx = np.concatenate([s["train"], s["valid"], s["test"]])
    assert np.allclose(np.cov(allx, rowvar=False, bias=True), np.eye(6), atol=1e-4)  # whitened on <1e4 rows
    big = gd.preprocess_uci(np.random.RandomState(2).randn(30000, 3), seed=1, dequantise=False, permute=False)
    assert len(big["valid"]) == 1000 and len(big["test"]) == 3000


def _npz(tmp_path, data):
    path = tmp_path / f"table{data.shape[1]}.npz"
    np.savez(path, data=data)
    return path


def test_wine_and_hepmass_and_miniboone_files(tmp_path):
    rng = np.random.RandomState(0)
    rows = np.c_[rng.randint(0, 50, (200, 11)) / 10, rng.randint(3, 9, 200)]
    wine = tmp_path / "winequality-red.csv"
    wine.write_text('"a";"b";"c";"d";"e";"f";"g";"h";"i";"j";"k";"quality"\n'
                    + "\n".join(";".join(f"{v:g}" for v in r) for r in rows) + "\n")
    assert gd.load_uci_raw("redwine", wine).shape == (200, 11)
    s = gd.preprocess_uci(gd.load_uci_raw("redwine", wine), dequantise=True)
    assert len(s["test"]) == 20 and len(s["valid"]) == 18 and s["train"].shape == (162, 11)
    # HepMass, the UCI CSV's layout: label, f0..f26, mass (29 columns) -> the official 22 features of signal rows
    hep = np.c_[rng.randint(0, 2, 100), 100 + np.arange(27)[None, :] + rng.rand(100, 27) / 10, rng.randn(100)]
    (tmp_path / "1000_train.csv").write_text("# label," + ",".join(f"f{i}" for i in range(27)) + ",mass\n"
                                             + "\n".join(",".join(f"{v:.6f}" for v in r) for r in hep) + "\n")
    h = gd.load_uci_raw("hepmass", tmp_path / "1000_train.csv")
    assert h.shape == ((hep[:, 0] == 1).sum(), 22)
    kept = [i for i in range(27) if i not in (5, 9, 13, 17, 21)]  # f5, f9, f13, f17, f21 and the mass go
    assert np.array_equal(np.floor(h[0]) - 100, kept)
    np.savez(tmp_path / "hepmass.npz", data=hep[:, :28])  # the official file: no mass column
    assert np.allclose(gd.load_uci_raw("hepmass", tmp_path / "hepmass.npz"), h, atol=1e-5)
    with pytest.raises(LmlabError, match="29 columns"):
        gd.load_uci_raw("hepmass", _npz(tmp_path, hep[:, :27]))
    # MiniBooNE, the UCI file's layout: a counts line, 50 columns, -999 placeholder rows, features whose smallest
    # value repeats -> MAF's 43 features of the real rows
    mini = rng.randn(60, 50)
    mini[[3, 17], :] = -999.0
    repeated = [2, 9, 20, 31, 40, 44, 49]
    mini[:8, repeated] = -50.0  # smallest value, 6 times among the 58 real rows -> dropped
    mini[10:20, 5] = 7.0  # a value repeated 10 times that is not the smallest: MAF's rule keeps the feature
    (tmp_path / "MiniBooNE_PID.txt").write_text("36 24\n" + "\n".join(" ".join(f"{v:.6f}" for v in r)
                                                                     for r in mini) + "\n")
    m = gd.load_uci_raw("miniboone", tmp_path / "MiniBooNE_PID.txt")
    real = np.delete(mini, [3, 17], axis=0)
    assert m.shape == (58, 43)
    assert np.allclose(m, np.delete(real, repeated, axis=1), atol=1e-5)
    np.save(tmp_path / "miniboone.npy", m)
    assert np.array_equal(gd.load_uci_raw("miniboone", tmp_path / "miniboone.npy"), m)
    with pytest.raises(LmlabError, match="50 columns"):
        gd.load_uci_raw("miniboone", _npz(tmp_path, mini[:, :44]))
    with pytest.raises(LmlabError, match="12 columns"):
        gd.load_uci_raw("whitewine", tmp_path / "1000_train.csv")
    with pytest.raises(LmlabError, match="not a file"):
        gd.load_uci_raw("miniboone", tmp_path / "missing.npy")


def test_shared_wine_sizes():
    path = needs_shared("uci-wine", "winequality-red.csv")
    s = gd.preprocess_uci(gd.load_uci_raw("redwine", path))
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == (1296, 144, 159)


# The official recipe for both (GeneralizedEBM f24a688: configs/uci/minibone.yaml + main.py defaults, used for
# --dataset=minibone and --dataset=hepmass with nvp/nvp and KALE).
MINIBONE_YAML = dict(batch=2048, noise_factor=1, energy_steps=50, energy_steps_init=100, lr_energy=1e-3, lr_base=1e-4,
                     betas=(0.5, 0.9), penalty=0.1, penalty_type="gradient_l2", milestones="10,50,70", decay=0.8)


@pytest.mark.parametrize("preset", ["gebm-hepmass", "gebm-miniboone"])
def test_hepmass_and_miniboone_presets_are_the_official_uci_recipe(preset, monkeypatch):
    from lmlab.core.config import resolve
    from lmlab.core.gebm.config import Config

    monkeypatch.setenv("LMLAB_HEPMASS", "h.csv")
    monkeypatch.setenv("LMLAB_MINIBOONE", "m.txt")
    cfg, o, want = resolve(Config, "train-ebm", [preset]), None, MINIBONE_YAML
    o = cfg.optim
    assert cfg.data.batch_size == want["batch"] and cfg.model.energy == "flow-combined"
    assert (o.noise_factor, o.energy_steps, o.energy_steps_init) == (want["noise_factor"], want["energy_steps"],
                                                                     want["energy_steps_init"])
    assert (o.lr_energy, o.lr_base, (o.beta1, o.beta2)) == (want["lr_energy"], want["lr_base"], want["betas"])
    assert (o.penalty, o.penalty_type, o.grad_transform) == (want["penalty"], want["penalty_type"], True)
    assert (o.lr_milestones, o.lr_decay) == (want["milestones"], want["decay"])
    assert cfg.data.ntest == (174900 if preset == "gebm-hepmass" else 0)
