"""Image evaluation inside GEBM training (official trainer.py `eval_fid`): at every evaluation, FID and KID of the
base's samples against the training images, and the plateau test of the official learning-rate schedule
(core/gebm/plateau.py). The samples are the generator alone on fixed latents, as the official `eval_latents`.

The training images' features are computed once (or read from eval.real_stats); the Inception network is loaded
only when the first evaluation runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lmlab.core.gebm.evaluate import extractor_id, make_extractor, real_features
from lmlab.core.gebm.fid import frechet_from_stats, kernel_inception_distance
from lmlab.core.gebm.plateau import PlateauSchedule, mmd_sums

TEST_FEATURES = 2048  # features per set in the plateau test (the official MMDScheduler's bs)
KID_SUBSETS = 10  # the official polynomial_mmd_averages(n_subsets=10)
CHUNK = 500  # images generated and featurised at a time


class ImageEvaluation:
    def __init__(self, cfg, train_images: np.ndarray, device: torch.device, slots: int | None):
        self.cfg, self.device = cfg, device
        self.real = train_images[: cfg.eval.fid_samples]  # uint8 (N, 3, 32, 32): the run's training images
        self.plateau = PlateauSchedule(slots) if slots else None
        self.extractor = self.real_stats = None

    def _prepare(self) -> None:
        e = self.cfg.eval
        with torch.random.fork_rng(devices=[]):  # building a network draws from the global stream: keep the run's
            self.extractor = make_extractor(e.inception or None, self.device)  # (a resume builds it at another step)
        meta = {"extractor": extractor_id(e.inception or None), "source": str(Path(self.cfg.data.path).resolve()),
                "split": self.cfg.data.split, "training_images_of_run": {"subset": self.cfg.data.subset,
                                                                          "count": len(self.real)}}
        self.real_stats = real_features(self.real, self.extractor, self.device, e.real_stats or None, meta)

    @torch.no_grad()
    def __call__(self, base, seed: int, poll: Callable[[int], None]) -> dict[str, Any]:
        """FID/KID of fixed-latent base samples; with the plateau schedule, its test (`lr_plateau_decay` = 1 when this
        evaluation decays the learning rates). `poll(chunk)` raises StopRequested when a stop came."""
        if self.extractor is None:
            self._prepare()
        mu, sigma, real_pool, _ = self.real_stats
        base.eval()
        gen = torch.Generator().manual_seed(seed + 7919)  # the same latents at every evaluation
        n, feats = self.cfg.eval.fid_samples, []
        for chunk, start in enumerate(range(0, n, CHUNK)):
            poll(chunk)
            z = base.sample(min(CHUNK, n - start), gen, self.device)
            feats.append(self.extractor(base(z).float()).double().cpu())
        fake = torch.cat(feats).numpy()
        kid, _ = kernel_inception_distance(real_pool, fake, subsets=KID_SUBSETS)
        out = {"fid_base": frechet_from_stats(mu, sigma, fake), "kid_base": kid}
        if self.plateau is not None:
            m = min(TEST_FEATURES, len(real_pool), len(fake))
            decayed, info = self.plateau.observe(mmd_sums(torch.as_tensor(real_pool[:m]), torch.as_tensor(fake[:m])))
            out.update(info, lr_plateau_decay=int(decayed))
        return out
