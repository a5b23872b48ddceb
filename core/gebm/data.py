"""Datasets of the GEBM experiments: CIFAR-10 (pickle batches, image folders, .tar.gz) and UCI tables.

Images come back as uint8 arrays (N, 3, 32, 32); `to_float` maps them to [-1, 1].
CIFAR-10 pickles are read with a restricted unpickler that only rebuilds numpy arrays (the batches
are pickled dicts of arrays): any other global (os.system, builtins.eval, ...) is refused.
UCI preprocessing follows the official GeneralizedEBM loader: drop the quality column (wine),
shuffle rows, uniform dequantisation, random column permutation, PCA whitening fitted on the first
10^4 rows, test = last 10% (HepMass: last 174,900), validation = last min(10% of the rest, 1000).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from lmlab.core.errors import LmlabError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")

# ------------------------------------------------------------------------------------------ CIFAR pickles

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # protocol-2 pickles store byte strings through codecs.encode
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def load_cifar_pickle(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 (N, 3, 32, 32), int64 labels (N,)), refusing anything but arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise LmlabError(f"{path}: not a safe CIFAR-10 batch ({exc}); use the official python batches") from exc
    if not isinstance(batch, dict):
        raise LmlabError(f"{path}: expected a dict with 'data' and 'labels'")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise LmlabError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(batch.get("labels", np.zeros(len(data))), dtype=np.int64)
    return data.reshape(-1, 3, 32, 32), labels


def _pickle_names(split: str) -> list[str]:
    return ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]


# ------------------------------------------------------------------------------------------ image files


def _decode(raw: bytes, name: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:
        raise LmlabError(f"decoding {name} needs Pillow: pip install 'lmlab[images]' (or pip install pillow)") from exc
    try:
        img = Image.open(io.BytesIO(raw)).convert("RGB")
    except Exception as exc:  # PIL raises many types on bad files
        raise LmlabError(f"{name}: cannot decode image ({exc})") from exc
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)  # (3, 32, 32)


def _split_of(name: str, split: str) -> str | None:
    """'x/train/cat/1.jpg' -> 'cat' when it lies under the split folder; None otherwise."""
    parts = Path(name).parts
    if split in parts[:-2]:
        i = len(parts) - 1 - parts[::-1].index(split)
        rest = parts[i + 1:]
        return rest[0] if len(rest) == 2 else None
    return None


def _select(names: list[str], subset: int, seed: int) -> set[str]:
    names = sorted(names)
    if subset and subset < len(names):
        idx = np.random.RandomState(seed).permutation(len(names))[:subset]
        return {names[i] for i in idx}
    return set(names)


def load_image_files(path: str | Path, split: str = "train", subset: int = 0, seed: int = 0):
    """Images in `<path>/<split>/<class>/*` (folder or .tar.gz) -> (uint8 (N,3,32,32), labels, class names)."""
    path = Path(path)
    items: list[tuple[str, str, bytes]] = []
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXT and _split_of(str(p.relative_to(path)), split)]
        if not files:  # a folder of class folders with no split level
            files = [p for p in path.glob("*/*") if p.suffix.lower() in IMAGE_EXT]
            cls_of = {str(p): p.parent.name for p in files}
        else:
            cls_of = {str(p): _split_of(str(p.relative_to(path)), split) for p in files}
        keep = _select(list(cls_of), subset, seed)
        items = [(n, cls_of[n], Path(n).read_bytes()) for n in sorted(keep)]
    elif path.is_file() and (path.name.endswith(".tar.gz") or path.name.endswith(".tgz") or path.suffix == ".tar"):
        try:
            with tarfile.open(path, "r:*") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_EXT
                           and _split_of(m.name, split)]
                keep = _select([m.name for m in members], subset, seed)
                for m in members:
                    if m.name in keep:
                        items.append((m.name, _split_of(m.name, split), tar.extractfile(m).read()))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise LmlabError(f"{path}: cannot read the tarball ({exc})") from exc
    else:
        raise LmlabError(f"data.path {path} is neither a folder nor a .tar.gz of images")
    if not items:
        raise LmlabError(f"data.path {path}: no images under '{split}/<class>/' (expected {', '.join(IMAGE_EXT)})")
    items.sort(key=lambda t: t[0])
    classes = sorted({c for _, c, _ in items})
    images = np.stack([_decode(raw, name) for name, _, raw in items])
    labels = np.array([classes.index(c) for _, c, _ in items], dtype=np.int64)
    return images, labels, classes


def load_cifar10(path: str | Path, split: str = "train", subset: int = 0, seed: int = 0) -> np.ndarray:
    """CIFAR-10 from the python batches dir, an image folder or a .tar.gz; uint8 (N, 3, 32, 32)."""
    return load_cifar10_labelled(path, split, subset, seed)[0]


def load_cifar10_labelled(path: str | Path, split: str = "train", subset: int = 0,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """load_cifar10's images and their int64 class labels (N,): 0..9 in CIFAR-10's order, which is the class
    folders' alphabetical order."""
    if not str(path):
        raise LmlabError("data.path is empty: point it to CIFAR-10 (export LMLAB_CIFAR10=... or --set data.path=...)")
    path = Path(path)
    if not path.exists():
        raise LmlabError(f"data.path {path} does not exist (export LMLAB_CIFAR10=... or --set data.path=...)")
    batch_dir = path if path.is_dir() else None
    if batch_dir is not None and not (batch_dir / "data_batch_1").exists() and (batch_dir / "cifar-10-batches-py").is_dir():
        batch_dir = batch_dir / "cifar-10-batches-py"
    if batch_dir is not None and (batch_dir / _pickle_names(split)[0]).exists():
        parts = [load_cifar_pickle(batch_dir / n) for n in _pickle_names(split) if (batch_dir / n).exists()]
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if subset and subset < len(images):
            keep = np.sort(np.random.RandomState(seed).permutation(len(images))[:subset])
            images, labels = images[keep], labels[keep]
        return images, labels
    return load_image_files(path, split, subset, seed)[:2]


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """Coloured squares on a dark background: a stand-in dataset for tests and smoke runs."""
    rng = np.random.RandomState(seed)
    out = np.full((n, 3, 32, 32), 20, dtype=np.uint8)
    for i in range(n):
        s = rng.randint(8, 16)
        x, y = rng.randint(0, 32 - s, size=2)
        out[i, :, y:y + s, x:x + s] = rng.randint(80, 255, size=(3, 1, 1))
    return out


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float in [-1, 1]."""
    return torch.as_tensor(images).float().div(127.5).sub(1.0)


# ------------------------------------------------------------------------------------------ UCI tables


def _read_table(path: str | Path, what: str) -> np.ndarray:
    path = Path(path)
    if not str(path) or not path.is_file():
        raise LmlabError(f"data.path {path!s} for {what} is not a file (pass it with --set data.path=...)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "data" not in z:
                    raise LmlabError(f"{path}: .npz without a 'data' array")
                return np.asarray(z["data"], dtype=np.float64)
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LmlabError(f"{path}: cannot read {what} ({exc})") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    delim = ";" if ";" in lines[0] else ("," if "," in lines[0] else None)
    rows = []
    for i, ln in enumerate(lines):
        try:
            rows.append([float(v) for v in ln.replace('"', "").split(delim)])
        except ValueError:
            if i == 0:  # header line
                continue
            raise LmlabError(f"{path}: line {i + 1} is not numeric: {ln[:60]!r}") from None
    if what == "miniboone" and rows and len(rows[0]) == 2 and len(rows) > 1 and len(rows[1]) != 2:
        rows = rows[1:]  # raw MiniBooNE_PID.txt starts with the signal/background counts
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise LmlabError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    return np.array(rows, dtype=np.float64)


def load_uci_raw(dataset: str, path: str | Path) -> np.ndarray:
    """Raw table of a UCI dataset with the official column selection (float64 (N, D))."""
    data = _read_table(path, dataset)
    if dataset in ("redwine", "whitewine"):
        if data.shape[1] != 12:
            raise LmlabError(f"{path}: wine quality CSV must have 12 columns (11 features + quality), got {data.shape[1]}")
        return data[:, :-1]  # drop 'quality'
    if dataset == "hepmass":
        return _hepmass(data, path)
    if dataset == "miniboone":
        return _miniboone(data, path)
    raise LmlabError(f"data.dataset {dataset!r} is not a UCI dataset")


def _hepmass(data: np.ndarray, path) -> np.ndarray:
    """22 features, as the official loader makes them from its 28-column hepmass.npz (label + 27 features): signal
    rows (label 1), then the label and 5 features with few distinct values (f5, f9, f13, f17, f21) deleted. The UCI
    CSVs (1000_train.csv / 1000_test.csv: label, f0..f26, mass) have a 29th column, the mass, which is dropped first."""
    if data.shape[1] == 29:
        data = data[:, :-1]  # the UCI file's mass column: not among the official file's 28
    if data.shape[1] != 28:
        raise LmlabError(f"{path}: HepMass must have 29 columns (the UCI CSV: label, f0..f26, mass) or 28 (the "
                         f"official hepmass.npz: label, f0..f26), got {data.shape[1]}")
    data = data[data[:, 0] == 1]
    return np.delete(data, [0, 6, 10, 14, 18, 22], axis=1)


def _miniboone(data: np.ndarray, path) -> np.ndarray:
    """43 features. The official loader reads a prepared miniboone.npy: MAF's preprocessing (Papamakarios et al.,
    2017) of the UCI MiniBooNE_PID.txt, which is applied here to a raw 50-column table: rows whose first feature is
    below -100 (the -999 placeholder rows) removed, then every feature whose smallest value occurs more than 5 times
    removed. (MAF meant "too many re-occurring values" but counted the smallest value's repeats; the prepared file,
    hence the paper's 43 dimensions, comes from that rule as written.) A prepared 43-column table passes unchanged."""
    if data.shape[1] == 43:
        return data
    if data.shape[1] != 50:
        raise LmlabError(f"{path}: MiniBooNE must have 50 columns (the UCI MiniBooNE_PID.txt) or 43 (the prepared "
                         f"miniboone.npy), got {data.shape[1]}")
    data = data[~(data[:, 0] < -100)]
    smallest_repeats = np.array([int((column == column.min()).sum()) for column in data.T])
    return data[:, smallest_repeats <= 5]


def synthetic_density(n: int = 4000, seed: int = 0) -> np.ndarray:
    """A 4-D two-moons x Gaussian table for smoke runs."""
    rng = np.random.RandomState(seed)
    t = rng.rand(n) * np.pi
    moon = rng.rand(n) < 0.5
    x = np.where(moon, np.cos(t), 1 - np.cos(t))
    y = np.where(moon, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y, rng.randn(n) * 0.3, x * y + 0.1 * rng.randn(n)], 1) + 0.05 * rng.randn(n, 4)


def preprocess_uci(data: np.ndarray, *, seed: int = 1, dequantise: bool = True, permute: bool = True,
                   ntest: int = 0) -> dict[str, np.ndarray]:
    """Official GEBM preprocessing -> {'train','valid','test'} float32 plus the whitening 'W', 'mean'."""
    data = np.array(data, dtype=np.float64)
    if data.ndim != 2 or len(data) < 20:
        raise LmlabError(f"UCI data must be a table with at least 20 rows, got shape {data.shape}")
    rng = np.random.RandomState(seed)
    rng.shuffle(data)
    n, d = data.shape
    if dequantise:  # add U(-δ, δ), δ the median gap between distinct values of the column
        for j in range(d):
            uniq = np.unique(data[:, j])
            gap = np.median(np.diff(uniq)) if len(uniq) > 1 else 0.0
            data[:, j] += (rng.rand(n) * 2 - 1) * gap
    if permute:
        data = data[:, rng.permutation(d)]
    mean = data.mean(0)
    data = data - mean
    _, s, vt = np.linalg.svd(data[:10 ** 4], full_matrices=False)
    if s.min() <= 1e-12 * max(s.max(), 1e-300):
        raise LmlabError("UCI data has a constant or linearly dependent column; PCA whitening is undefined")
    w = vt.T / s * np.sqrt(min(n, 10 ** 4))
    data = data @ w
    ntest = ntest or int(n * 0.1)
    if ntest >= n - 2:
        raise LmlabError(f"data.ntest={ntest} leaves no training rows out of {n}")
    test, rest = data[-ntest:], data[:-ntest]
    nvalid = min(int(len(rest) * 0.1), 1000)
    valid, train = rest[-nvalid:], rest[:-nvalid]
    f = np.float32
    return {"train": train.astype(f), "valid": valid.astype(f), "test": test.astype(f), "W": w, "mean": mean}


def load_for_config(data_cfg, split: str | None = None):
    """What a run trains on: uint8 images (N, 3, 32, 32), or the preprocessed UCI splits dict."""
    d = data_cfg
    if d.kind == "image":
        if d.dataset == "synthetic-images":
            return synthetic_images(d.subset or 512, seed=d.split_seed if split != "test" else d.split_seed + 1)
        if d.dataset != "cifar10":
            raise LmlabError(f"data.dataset={d.dataset!r} is not an image dataset (use cifar10 or synthetic-images)")
        return load_cifar10(d.path, split or d.split, d.subset, d.split_seed)
    if d.dataset == "synthetic-density":
        raw = synthetic_density(seed=0)
    elif d.dataset in ("cifar10", "synthetic-images"):
        raise LmlabError(f"data.dataset={d.dataset!r} is an image dataset; set data.kind=image")
    else:
        raw = load_uci_raw(d.dataset, d.path)
    splits = preprocess_uci(raw, seed=d.split_seed, dequantise=d.dequantise, permute=d.permute_columns, ntest=d.ntest)
    if d.subset:
        splits["train"] = splits["train"][: d.subset]
    return splits
