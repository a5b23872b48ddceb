"""Generation quality without human raters: n-gram diversity, repetition and a real-vs-generated classifier.

All work on token-id sequences (rows of equal length C, e.g. continuations of the same prefixes):

- distinct-n: distinct n-grams / all n-grams over the whole set of continuations (Li et al., 2016); low = the
  system says the same things to every prefix.
- seq-rep-n: per continuation, 1 - distinct n-grams / n-grams inside it, averaged (Welleck et al., 2020); high =
  the system loops. Real text gives the reference level of both.
- classifier accuracy: a logistic regression on hashed unigram + bigram counts, trained to tell real continuations
  from generated ones on one half of the prefixes and scored on the other half. 0.5 = indistinguishable to it; the
  closer a system's samples bring it to 0.5, the more they look like the real text (to a bag-of-n-grams reader).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def ngrams(row: np.ndarray, n: int) -> list[tuple[int, ...]]:
    return [tuple(row[i:i + n].tolist()) for i in range(len(row) - n + 1)]


def distinct_n(rows: np.ndarray, n: int) -> float:
    """Distinct n-grams over all rows / n-grams in all rows."""
    grams = [g for row in rows for g in ngrams(row, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def seq_rep_n(rows: np.ndarray, n: int) -> float:
    """Mean over rows of 1 - distinct n-grams / n-grams within the row."""
    reps = [1.0 - len(set(g)) / len(g) for g in (ngrams(row, n) for row in rows) if g]
    return float(np.mean(reps)) if reps else float("nan")


def hashed_features(rows: np.ndarray, buckets: int = 4096) -> torch.Tensor:
    """(N, C) token ids -> (N, 2 * buckets) float: unigram counts then hashed bigram counts, each row / its length."""
    rows = np.asarray(rows, dtype=np.int64)
    n, c = rows.shape
    feats = np.zeros((n, 2 * buckets), dtype=np.float32)
    r = np.repeat(np.arange(n), c)
    np.add.at(feats, (r, rows.reshape(-1) % buckets), 1.0)
    if c > 1:
        big = (rows[:, :-1] * 1_000_003 + rows[:, 1:]) % buckets  # a fixed hash of the bigram
        np.add.at(feats, (np.repeat(np.arange(n), c - 1), buckets + big.reshape(-1)), 1.0)
    return torch.from_numpy(feats / c)


def classifier_accuracy(real: np.ndarray, generated: np.ndarray, *, held_out: np.ndarray, l2: float = 1e-3,
                        buckets: int = 4096) -> dict[str, float]:
    """Held-out accuracy of a logistic regression telling `real` (label 1) from `generated` (label 0) rows.

    Row i of both comes from prefix i; `held_out` (bool per prefix) marks the prefixes whose rows are scored, the
    others train it, so no prefix is on both sides. Full-batch L-BFGS on the L2-penalised mean log-loss:
    deterministic for given inputs."""
    held_out = np.asarray(held_out, dtype=bool)
    x = hashed_features(np.concatenate([real, generated]), buckets)
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(generated))])
    test = torch.from_numpy(np.concatenate([held_out, held_out]))
    x_train, y_train = x[~test], y[~test]
    w = torch.zeros(x.size(1), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    scale = x_train.std(0).clamp_min(1e-3)  # features on one scale, so one L2 weight suits all
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x_train / scale @ w + b, y_train) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (x[test] / scale @ w + b) > 0
        acc = (pred == y[test].bool()).float()
    held = int(test.sum()) // 2
    return {"accuracy": float(acc.mean()), "accuracy_real": float(acc[:held].mean()),
            "accuracy_generated": float(acc[held:].mean()), "held_out_pairs": held,
            "train_pairs": int((~test).sum()) // 2}


def quality(rows: np.ndarray, real: np.ndarray | None = None, held_out: np.ndarray | None = None) -> dict[str, float]:
    """distinct-1/2/3, seq-rep-2/4, and with `real` the classifier's held-out accuracy against the real rows."""
    out = {f"distinct_{n}": distinct_n(rows, n) for n in (1, 2, 3)}
    out.update({f"seq_rep_{n}": seq_rep_n(rows, n) for n in (2, 4)})
    if real is not None:
        out["classifier"] = classifier_accuracy(real, rows, held_out=held_out)
    return out
