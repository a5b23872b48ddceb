"""The official CIFAR-10 trainer's learning-rate schedule (GeneralizedEBM trainer.py with configs/training.yaml,
`use_scheduler: True`, `eval_fid: True`; utils/fid_scheduler.py MMDScheduler).

Two kinds of x`lr_decay` events on both learning rates:

- **a plateau test** at every evaluation: a relative-MMD test (Bounliphone et al., ICLR 2016) of whether the base's
  samples now are closer to the data than those of `window` base steps earlier, with the cubic-kernel KID features
  of m real images (X), m current samples (Y) and m earlier samples (Z). The test statistic is
  (MMD²_u(X, Y) − MMD²_u(X, Z)) / sqrt(Var), its p-value Φ(statistic); three evaluations in a row with p > 0.1
  (no significant improvement) decay the rates, and the next three evaluations only refill the buffer;
- **a fixed decay** at every multiple of `decay_every` base steps that is not an evaluation step (the official
  trainer's `counter % 5000` branch, taken only where no FID evaluation runs: 5000, 15000, 25000, ... beside
  evaluations every 2000).

Only the sums of kernel values over Y (or Z) are kept per evaluation (`mmd_sums`), as the official scheduler keeps
them, so an old sample's features need not be stored. The arithmetic is float64 here (the official runs it in the
features' float32).
"""

from __future__ import annotations

import math
from typing import Any

import torch

P_NO_IMPROVEMENT = 0.1  # p-value above which an evaluation counts as no improvement
FAILURES_TO_DECAY = 3
VAR_FLOOR = 1e-5  # the official _eps under the variance estimate


def mmd_sums(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The sums of k(x, y) = (x·y/d + 1)³ over real features x (m, d) and sample features y (m, d) that the relative
    test needs of y: row sums of K_yy without its diagonal, sum of K_yy² off the diagonal, column and row sums of
    K_xy, and sum of K_xy²."""
    x, y = x.double(), y.double()
    d = x.shape[1]
    k_xy = (x @ y.T / d + 1) ** 3  # (m, m): [i, j] = k(x_i, y_j)
    k_yy = (y @ y.T / d + 1) ** 3
    diag = torch.diagonal(k_yy)
    return {"yy_rows": k_yy.sum(1) - diag, "yy_sq": (k_yy ** 2).sum() - (diag ** 2).sum(),
            "xy_cols": k_xy.sum(0), "xy_rows": k_xy.sum(1), "xy_sq": (k_xy ** 2).sum()}


def _terms(s: dict[str, torch.Tensor], m: float) -> dict[str, torch.Tensor]:
    """One sample set W's estimates: μ_WW, μ_XW, and the second moments the variance combines."""
    return {"ww": s["yy_rows"].sum() / (m * (m - 1)), "xw": s["xy_cols"].sum() / (m * m),
            "w_ww_sq": (s["yy_rows"] @ s["yy_rows"] - s["yy_sq"]) / (m * (m - 1) * (m - 2)),
            "x_xw_sq": (s["xy_rows"] @ s["xy_rows"] - s["xy_sq"]) / (m * m * (m - 1)),
            "w_xw_sq": (s["xy_cols"] @ s["xy_cols"] - s["xy_sq"]) / (m * m * (m - 1)),
            "w_ww_xw": (s["yy_rows"] @ s["xy_cols"]) / (m * m * (m - 1)),
            "k_ww_sq": s["yy_sq"] / (m * (m - 1)), "k_xw_sq": s["xy_sq"] / (m * m)}


def relative_mmd_test(now: dict[str, torch.Tensor], then: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(MMD²_u(X, Y) − MMD²_u(X, Z), that difference over its estimated standard deviation) from mmd_sums of the
    current samples Y and the earlier samples Z against the same real features X."""
    m = float(now["yy_rows"].numel())
    y, z = _terms(now, m), _terms(then, m)
    cross = (now["xy_rows"] @ then["xy_rows"]) / (m ** 3)  # E_x[μ_Y(x) μ_Z(x)]
    diff = (y["ww"] - 2 * y["xw"]) - (z["ww"] - 2 * z["xw"])

    def own(t):  # one set's share of the first- and second-order variance terms
        first = (t["w_ww_sq"] - t["ww"] ** 2 + t["x_xw_sq"] - t["xw"] ** 2 + t["w_xw_sq"] - t["xw"] ** 2
                 - 2 * t["w_ww_xw"] + 2 * t["ww"] * t["xw"])
        second = t["k_ww_sq"] - t["ww"] ** 2 + 2 * t["k_xw_sq"] - 2 * t["xw"] ** 2 - 4 * t["w_ww_xw"] + 4 * t["ww"] * t["xw"]
        return first, second

    (fy, sy), (fz, sz) = own(y), own(z)
    shared = cross - y["xw"] * z["xw"]
    var = (4 * (m - 2) / (m * (m - 1)) * (fy + fz - 2 * shared)
           + 2 / (m * (m - 1)) * (sy + sz - 4 * shared))
    return float(diff), float(diff) / math.sqrt(max(float(var), VAR_FLOOR))


def p_value(statistic: float) -> float:
    """Φ(statistic): small when the current samples are significantly closer to the data."""
    return 0.5 * (1.0 + math.erf(statistic / math.sqrt(2.0)))


class PlateauSchedule:
    """The MMDScheduler's state machine: a ring of `slots` evaluations' sums, a failure counter, and the decays made.
    `observe` returns True when this evaluation decays the learning rates. Its state_dict goes into checkpoints."""

    def __init__(self, slots: int):
        self.slots = slots
        self.ring: list[dict[str, torch.Tensor] | None] = [None] * slots
        self.cursor = -slots  # < 0: the first `slots` evaluations fill the ring
        self.failures = 0
        self.refill = 0  # < 0: evaluations left that only refill the ring after a decay
        self.decays = 0

    def observe(self, sums: dict[str, torch.Tensor]) -> tuple[bool, dict[str, float]]:
        sums = {k: v.detach().double().cpu() for k, v in sums.items()}
        if self.cursor < 0:
            self.ring[self.slots + self.cursor] = sums
            self.cursor += 1
            return False, {}
        old, self.ring[self.cursor] = self.ring[self.cursor], sums
        self.cursor = (self.cursor + 1) % self.slots
        if self.refill < 0:
            self.refill += 1
            return False, {}
        diff, statistic = relative_mmd_test(sums, old)
        p = p_value(statistic)
        info = {"plateau_mmd2_diff": diff, "plateau_statistic": statistic, "plateau_p": p}
        if p <= P_NO_IMPROVEMENT:
            self.failures = 0
            return False, info
        self.failures += 1
        if self.failures < FAILURES_TO_DECAY:
            return False, info
        self.failures, self.refill, self.decays = 0, -FAILURES_TO_DECAY, self.decays + 1
        return True, info

    def state_dict(self) -> dict[str, Any]:
        return {"slots": self.slots, "ring": self.ring, "cursor": self.cursor, "failures": self.failures,
                "refill": self.refill, "decays": self.decays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["slots"]) != self.slots:
            raise ValueError(f"plateau ring of {state['slots']} slots, this run's schedule has {self.slots}")
        self.ring, self.cursor, self.failures = list(state["ring"]), int(state["cursor"]), int(state["failures"])
        self.refill, self.decays = int(state["refill"]), int(state["decays"])


def fixed_decays(step: int, every: int, eval_every: int | None) -> int:
    """Fixed decays made by base step `step`: multiples of `every`, less those that are evaluation steps (multiples
    of `eval_every`, where the plateau test runs instead); eval_every None: every multiple counts."""
    if every <= 0:
        return 0
    made = step // every
    if eval_every:
        made -= step // math.lcm(every, eval_every)
    return made
