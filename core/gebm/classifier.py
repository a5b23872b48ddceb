"""A CIFAR-10 classifier trained on the training set, whose penultimate layer is the feature extractor of the CPU image
tier (issue #19, 4b). The CPU tier has no Inception-v3 weights, and a random network's features are not
semantic. FID/KID computed on these features are on another scale than Inception FIDs and are never compared with
the paper's. They compare the generator alone, ULA and KLA with one another, as the paper's claim needs.

The network is a plain VGG-style CNN: three stages of two 3x3 conv + batch-norm + ReLU layers (width w, 2w, 4w),
each stage followed by a 2x2 max pool, then a global average pool to 4w features and a linear classifier. It is trained by
SGD with Nesterov momentum 0.9, weight decay 5e-4, a one-cycle learning rate (linear up over the first 15% of
updates, then linearly down to 0), and random crops (4-pixel reflect padding) with horizontal flips.

    python -m lmlab.core.gebm.classifier --data $LMLAB_CIFAR10 --out runs/cifar10-classifier.pt [--epochs 10]

Width 32 (128 features, ~0.29M parameters) trains for 10 epochs in about an hour on 2 CPU cores (make cifar10-classifier).
A stopped run leaves OUT.partial (the state after its last whole epoch); the same command continues from it.

prints {"test_accuracy", ...} as JSON; `python -m lmlab.core.gebm.evaluate --classifier FILE` then scores with it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.core.checkpoint import load_checkpoint, save_checkpoint
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.data import to_float

KIND = "lmlab-cifar10-classifier"
PARTIAL_KIND = KIND + "-partial"  # the state after each epoch of a run in progress (train_classifier's resume)


def _stage(cin: int, cout: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)]


class CifarClassifier(nn.Module):
    def __init__(self, width: int = 64, classes: int = 10):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(*_stage(3, width), *_stage(width, 2 * width), *_stage(2 * width, 4 * width),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (N, 3, 32, 32) -> (N, 4 * width) penultimate features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ClassifierFeatures(nn.Module):
    """The extractor FID/KID use: a trained classifier's penultimate layer (eval mode)."""

    def __init__(self, classifier: CifarClassifier):
        super().__init__()
        self.classifier = classifier.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops of the 4-pixel reflect-padded batch, half of them mirrored."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(32))[:, :, None]  # (n, 32, 1)
    cols = (dx[:, None] + torch.arange(32))[:, None, :]  # (n, 1, 32)
    crops = padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (n, 3, 32, 32)
    flip = torch.rand(n, generator=gen) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


def train_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 10, batch_size: int = 128,
                     lr: float = 0.1, width: int = 32, seed: int = 0,
                     log: Callable[[str], None] = lambda s: None,
                     resume: str | Path | None = None) -> tuple[CifarClassifier, float]:
    """The trained model (in eval mode) and its training seconds, summed over the processes of a resumed run.

    resume: a file that holds the state after each epoch (written atomically); a rerun with the same settings
    continues from it and ends bitwise as an uninterrupted run. It is deleted when training ends."""
    t0 = time.monotonic()
    torch.manual_seed(seed)
    model = CifarClassifier(width)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = to_float(images), torch.as_tensor(labels, dtype=torch.long)
    n = len(x_all)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    warm = max(1, int(0.15 * total))
    step = first_epoch = 0
    seconds_before = 0.0  # training time of the earlier processes of a resumed run
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width, "seed": seed, "images": n}
    partial = Path(resume) if resume else None
    if partial is not None and partial.exists():
        try:
            state = load_checkpoint(partial, PARTIAL_KIND)
        except LmlabError:  # truncated, corrupt, unsafe or another kind of file (load_checkpoint's checks)
            raise LmlabError(f"{partial} is not a readable classifier state (a truncated copy or another file); "
                             f"delete it to start again") from None
        if state.get("settings") != settings:
            raise LmlabError(f"{partial} holds a classifier run with other settings ({state.get('settings')}); "
                             f"delete it to start again")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first_epoch, step = int(state["epoch"]), int(state["step"])
        seconds_before = float(state["train_s"])
        log(f"classifier: resumed from {partial} after epoch {first_epoch}/{epochs}")
    for epoch in range(first_epoch, epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        seen = correct = 0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x, y = _augment(x_all[idx], gen), y_all[idx]
            for group in opt.param_groups:  # one-cycle: up to lr over the first 15%, then down to 0
                group["lr"] = lr * (step + 1) / warm if step < warm else lr * (total - step) / (total - warm)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
        if partial is not None and epoch + 1 < epochs:
            save_checkpoint(partial, {"settings": settings, "epoch": epoch + 1, "step": step,
                                      "train_s": seconds_before + time.monotonic() - t0,
                                      "model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}, PARTIAL_KIND)
        log(f"classifier epoch {epoch + 1}/{epochs}: train accuracy {correct / seen:.3f} (augmented)")
    if partial is not None:
        partial.unlink(missing_ok=True)
    return model.eval(), seconds_before + time.monotonic() - t0


@torch.no_grad()
def accuracy(model: CifarClassifier, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(to_float(images[i:i + batch_size]))
        correct += int((logits.argmax(1) == torch.as_tensor(labels[i:i + batch_size])).sum())
    return correct / len(images)


def save_classifier(path: str | Path, model: CifarClassifier, meta: dict) -> None:
    import io

    from lmlab.core.checkpoint import atomic_write_bytes
    buf = io.BytesIO()
    torch.save({"kind": KIND, "width": model.width, "state_dict": model.state_dict(), "meta": meta}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_classifier(path: str | Path) -> ClassifierFeatures:
    """The feature extractor of a file written by this module (loaded with weights_only=True)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LmlabError(f"--classifier {path}: no such file (train one with python -m lmlab.core.gebm.classifier)") from None
    except Exception as exc:  # unpickling errors come in many types
        raise LmlabError(f"--classifier {path}: not a classifier file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise LmlabError(f"--classifier {path}: not a classifier written by python -m lmlab.core.gebm.classifier")
    model = CifarClassifier(int(state["width"]))
    model.load_state_dict(state["state_dict"])
    return ClassifierFeatures(model)


def main(argv: list[str] | None = None) -> dict:
    import argparse
    import json
    import os
    import sys

    from lmlab.core.gebm.data import load_cifar10_labelled

    ap = argparse.ArgumentParser(prog="python -m lmlab.core.gebm.classifier", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("LMLAB_CIFAR10", ""),
                    help="CIFAR-10: python batches dir, image folder or .tar.gz (default: $LMLAB_CIFAR10)")
    ap.add_argument("--out", required=True, help="the classifier file to write (atomically)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--width", type=int, default=32, help="channels of the first stage (features: 4 x width)")
    ap.add_argument("--train-subset", type=int, default=0, help="train on N training images (0 = all 50,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        t0 = time.monotonic()
        x_train, y_train = load_cifar10_labelled(args.data, "train", args.train_subset, seed=args.seed)
        x_test, y_test = load_cifar10_labelled(args.data, "test")
        log = lambda s: print(f"[lmlab {time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)  # noqa: E731
        t_train = time.monotonic()
        model, train_s = train_classifier(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                                          lr=args.lr, width=args.width, seed=args.seed, log=log,
                                          resume=f"{args.out}.partial")
        earlier_s = train_s - (time.monotonic() - t_train)  # training time of the processes before a resume
        test_accuracy = accuracy(model, x_test, y_test)
        this_process_s = time.monotonic() - t0
        result = {"test_accuracy": test_accuracy, "train_images": len(x_train),
                  "test_images": len(x_test), "epochs": args.epochs, "width": args.width,
                  "features": 4 * args.width, "params": sum(p.numel() for p in model.parameters()),
                  "seed": args.seed, "data": str(Path(args.data).resolve()), "train_s": round(train_s, 1),
                  "wall_s": round(earlier_s + this_process_s, 1), "wall_s_this_process": round(this_process_s, 1)}
        save_classifier(args.out, model, result)
    except LmlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
