"""bench/gebm_tier.py, the #19 CPU image tier's table: per-seed FID/KID of the generator alone, ULA and KLA (read
from the evaluate JSONs the Make target writes), mean ± sd over seeds, the paired difference to the generator with
its standard error, 'yes' only where both FID and KID are below the generator's by more than two SE; the seeds must
share one feature extractor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _seed_dir(root: Path, name: str, gen: float, ula: float, kla: float, extractor: str = "classifier:abc") -> str:
    run = root / name
    run.mkdir()
    common = {"extractor": extractor, "fake_images": 1000, "real_images": 1000}
    for sampler, value in (("ula", ula), ("kla", kla)):
        js = {**common, "fid_generator": gen, "kid_generator": gen / 1000, f"fid_gebm_{sampler}": value,
              f"kid_gebm_{sampler}": value / 1000}
        (run / f"fid-{sampler}.json").write_text(json.dumps(js))
    for which in ("none", "ula", "kla"):
        import matplotlib.image as mpimg
        mpimg.imsave(run / f"samples-{which}.png", np.zeros((8, 8, 3)))
    return f"{name[1:]}={run}"


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gebm_tier.py"), *args], capture_output=True, text=True)


def test_table_pairs_each_sampler_with_its_own_generator(tmp_path):
    # KLA beats the generator by 5 in both seeds although the seeds differ by 20: only pairing sees it
    s1 = _seed_dir(tmp_path, "s1", gen=40.0, ula=39.0, kla=35.0)
    s2 = _seed_dir(tmp_path, "s2", gen=60.0, ula=61.5, kla=55.2)
    out = _run("--seed", s1, "--seed", s2, "--json", str(tmp_path / "s.json"), "--figure", str(tmp_path / "f.png"))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    arms = {a["arm"]: a for a in summary["arms"]}
    assert arms["generator alone"]["fid"] == pytest.approx(50.0)
    assert arms["KLA"]["fid_diff"] == pytest.approx(-4.9) and arms["KLA"]["fid_diff_se"] == pytest.approx(0.1)
    assert arms["ULA"]["fid_diff"] == pytest.approx(0.25)
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert rows["KLA"].rstrip(" |").endswith("yes") and rows["ULA"].rstrip(" |").endswith("no")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_seeds_scored_on_different_extractors_are_refused(tmp_path):
    s1 = _seed_dir(tmp_path, "s1", 40.0, 39.0, 35.0)
    s2 = _seed_dir(tmp_path, "s2", 60.0, 61.5, 55.2, extractor="random-conv")
    out = _run("--seed", s1, "--seed", s2)
    assert out.returncode != 0 and "different feature extractors" in out.stderr


def test_the_real_reference_is_the_tables_floor_row_and_must_match_the_seeds(tmp_path):
    s1 = _seed_dir(tmp_path, "s1", 40.0, 39.0, 35.0)
    ref = {"extractor": "classifier:abc", "real_images": 1000, "reference_images": 500, "reference_split": "train",
           "fid_real_reference": 0.5, "kid_real_reference": 0.0004}
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    out = _run("--seed", s1, "--reference", str(tmp_path / "ref.json"), "--json", str(tmp_path / "s.json"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "s.json").read_text())["reference"] == {"split": "train", "images": 500, "fid": 0.5,
                                                                            "kid": 0.0004}
    assert "| real train images (500): the floor | 0.500 | 0.400 |" in out.stdout
    (tmp_path / "ref.json").write_text(json.dumps({**ref, "extractor": "random-conv"}))
    out = _run("--seed", s1, "--reference", str(tmp_path / "ref.json"))
    assert out.returncode != 0 and "reference was scored on random-conv" in out.stderr
