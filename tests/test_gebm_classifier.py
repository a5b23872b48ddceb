"""The CPU image tier's feature extractor (core/gebm/classifier.py): labelled CIFAR-10 loading, augmentation, a
classifier that learns, its file, and FID/KID computed on its features."""

import json
import pickle

import numpy as np
import pytest
import torch

from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
from lmlab.core.errors import LmlabError
from lmlab.core.gebm import classifier as clf
from lmlab.core.gebm import data as gd
from lmlab.core.gebm.evaluate import evaluate_images
from lmlab.core.gebm.train import train
from lmlab.core.reporting import NullReporter

from test_gebm_data import _write_batch
from test_gebm_train import tiny_image_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


COLOURS = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 230]], dtype=np.uint8)


def _squares(n, seed):
    """Four classes, kept by crops and mirrors: the colour of a square placed anywhere on a noisy dark image."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 60, (n, 3, 32, 32)).astype(np.uint8)
    labels = rng.randint(0, 4, n)
    for img, label in zip(images, labels):
        y, x = rng.randint(4, 18, size=2)
        img[:, y:y + 10, x:x + 10] = COLOURS[label][:, None, None]
    return images, labels


def test_labels_come_with_their_images(tmp_path):
    batches = [_write_batch(tmp_path / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    _write_batch(tmp_path / "test_batch", 3, 9)
    images, labels = gd.load_cifar10_labelled(tmp_path, "train", subset=7, seed=3)
    assert np.array_equal(images, gd.load_cifar10(tmp_path, "train", subset=7, seed=3))
    every = np.concatenate([b[b"data"] for b in batches])
    every_labels = np.concatenate([b[b"labels"] for b in batches])
    for img, label in zip(images, labels):  # each image's label is its batch row's
        row = int(np.flatnonzero((every == img.reshape(-1)).all(1))[0])
        assert label == every_labels[row]


def test_augmentation_crops_the_padded_image_and_mirrors_half():
    x = torch.randn(64, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    out = clf._augment(x, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    gen = torch.Generator().manual_seed(0)
    dx, dy = torch.randint(0, 9, (2, 64), generator=gen)
    flip = torch.rand(64, generator=gen) < 0.5
    for i in range(64):
        crop = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert 16 < int(flip.sum()) < 48


def test_the_classifier_learns_and_its_file_gives_the_same_features(tmp_path):
    x, y = _squares(600, 0)
    xt, yt = _squares(200, 1)
    model, _ = clf.train_classifier(x, y, epochs=4, batch_size=32, lr=0.05, width=8, seed=0)
    assert clf.accuracy(model, xt, yt) > 0.9  # chance is 0.25
    clf.save_classifier(tmp_path / "c.pt", model, {"test_accuracy": 1.0})
    extractor = clf.load_classifier(tmp_path / "c.pt")
    probe = gd.to_float(xt[:10])
    with torch.no_grad():
        assert torch.equal(extractor(probe), model.features(probe)) and extractor(probe).shape == (10, 32)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LmlabError, match="not a classifier file"):
        clf.load_classifier(tmp_path / "other.pt")
    torch.save({"kind": "something-else"}, tmp_path / "dict.pt")
    with pytest.raises(LmlabError, match="not a classifier written by"):
        clf.load_classifier(tmp_path / "dict.pt")
    with pytest.raises(LmlabError, match="no such file"):
        clf.load_classifier(tmp_path / "absent.pt")


def test_fid_kid_on_classifier_features(tmp_path):
    x, y = _squares(64, 0)
    model, _ = clf.train_classifier(x, y, epochs=1, batch_size=32, width=4)
    clf.save_classifier(tmp_path / "c.pt", model, {})
    train(tiny_image_cfg(tmp_path / "run"), NullReporter())
    from lmlab.core.checkpoint import load_checkpoint
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "gebm")
    real = gd.synthetic_images(40)
    out = evaluate_images(state, real, classifier=str(tmp_path / "c.pt"), num_samples=40, kid_subset=20, steps=2)
    assert out["extractor"] == "cifar10-classifier" and out["fid_generator"] > 0 and "fid_gebm_kla" in out
    with pytest.raises(LmlabError, match="give one"):
        evaluate_images(state, real, classifier=str(tmp_path / "c.pt"), inception=str(tmp_path / "c.pt"))


def test_command_line_trains_saves_and_reports(tmp_path, capsys):
    images, labels = _squares(60, 0)
    for name, lo, hi in [(f"data_batch_{i}", 10 * (i - 1), 10 * i) for i in range(1, 6)] + [("test_batch", 50, 60)]:
        batch = {b"labels": list(labels[lo:hi]), b"data": images[lo:hi].reshape(hi - lo, -1)}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    result = clf.main(["--data", str(tmp_path), "--out", str(tmp_path / "c.pt"), "--epochs", "1", "--width", "4"])
    assert result["train_images"] == 50 and result["test_images"] == 10 and result["features"] == 16
    assert json.loads(capsys.readouterr().out.strip())["test_accuracy"] == result["test_accuracy"]
    assert clf.load_classifier(tmp_path / "c.pt")  # the file is there and loads
    with pytest.raises(SystemExit) as exc:
        clf.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "d.pt")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_real_reference_scores_real_images_against_the_saved_statistics(tmp_path, capsys):
    """--reference-split: the FID/KID floor of a sampler, on the same features and statistics file."""
    from lmlab.core.gebm import evaluate as ev
    images, labels = _squares(120, 0)
    for name, lo, hi in [(f"data_batch_{i}", 20 * (i - 1), 20 * i) for i in range(1, 6)] + [("test_batch", 100, 120)]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"labels": list(labels[lo:hi]), b"data": images[lo:hi].reshape(hi - lo, -1)}, f, protocol=2)
    model, _ = clf.train_classifier(images[:100], labels[:100], epochs=1, batch_size=32, width=4)
    clf.save_classifier(tmp_path / "c.pt", model, {})
    common = ["--real", str(tmp_path), "--real-split", "test", "--real-count", "20", "--classifier", str(tmp_path / "c.pt"),
              "--real-stats", str(tmp_path / "stats.npz"), "--kid-subset", "10"]
    same = ev.main(common + ["--reference-split", "test", "--reference-count", "20"])
    assert same["reference_images"] == 20 and abs(same["fid_real_reference"]) < 1e-9  # the very images: FID 0
    assert (tmp_path / "stats.npz").exists()  # computed once and saved, as for the samplers' scores
    other = ev.main(common + ["--reference-split", "train", "--reference-count", "100", "--out", str(tmp_path / "r.json")])
    assert other["reference_images"] == 100 and other["fid_real_reference"] > 1e-7  # other images (tiny features here)
    assert json.loads((tmp_path / "r.json").read_text())["fid_real_reference"] == other["fid_real_reference"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        ev.main(["--reference-split", "train"])
    assert exc.value.code == 2 and "needs --real" in capsys.readouterr().err


def test_a_stopped_classifier_run_resumes_from_its_last_epoch_bitwise(tmp_path):
    x, y = _squares(96, 0)
    kw = dict(epochs=3, batch_size=32, lr=0.05, width=4, seed=0)
    whole, _ = clf.train_classifier(x, y, **kw)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(line):
        if "epoch 1/3" in line:
            raise Stop

    partial = tmp_path / "c.pt.partial"
    with pytest.raises(Stop):
        clf.train_classifier(x, y, **kw, resume=partial, log=stop_after_first_epoch)
    assert partial.exists()
    lines = []
    resumed, _ = clf.train_classifier(x, y, **kw, resume=partial, log=lines.append)
    assert lines[0].startswith("classifier: resumed") and "epoch 1/3" not in " ".join(lines[1:])
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert not partial.exists()  # removed when training ends
    with pytest.raises(Stop):
        clf.train_classifier(x, y, **kw, resume=partial, log=stop_after_first_epoch)
    with pytest.raises(LmlabError, match="other settings"):
        clf.train_classifier(x, y, **{**kw, "lr": 0.1}, resume=partial)
    state = load_checkpoint(partial, clf.PARTIAL_KIND)
    assert state["train_s"] > 0
    save_checkpoint(partial, {**state, "train_s": 1000.0}, clf.PARTIAL_KIND)  # as if the first process took 1000 s
    _, total_s = clf.train_classifier(x, y, **kw, resume=partial)
    assert 1000.0 < total_s < 1100.0  # summed over both processes, not the last one alone
    clf.save_classifier(partial, whole, {})  # a finished classifier file is not a run's state
    with pytest.raises(LmlabError, match="not a readable classifier state.*delete it"):
        clf.train_classifier(x, y, **kw, resume=partial)
    partial.write_bytes(partial.read_bytes()[:100])  # a truncated copy
    with pytest.raises(LmlabError, match="not a readable classifier state"):
        clf.train_classifier(x, y, **kw, resume=partial)
