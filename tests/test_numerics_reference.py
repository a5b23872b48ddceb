"""Numerics unchanged (issue #13): a short seeded run of every trainer gives, bit for bit, the per-update losses
and final parameters recorded from the code at the commit named in tests/data/numerics_reference.json.

The cases (LSTM / Transformer / DeFINE-LSTM LM, translation, residual EBM with BiT and UniT energies, GEBM on
images, on UCI-style density data and its MLE baseline) are defined in tests/make_numerics_reference.py, which
also recorded the references; its docstring says how to record them again from another commit. A change that
is meant to move the numbers updates the references in the same commit and says why.
"""

from __future__ import annotations

import json

import pytest

from make_numerics_reference import CASES, REFERENCE, environment, run_case

# one reference file per torch build / CPU kernel set; each names the commit of every case's code
REFERENCES = {path.name: json.loads(path.read_text(encoding="utf-8"))
              for path in sorted(REFERENCE.parent.glob("numerics_reference*.json"))}


def _key(env: dict) -> tuple[str, str, str]:
    return env["torch"], env["cpu_capability"], env["machine"]


def _reference_here() -> dict | None:
    here = _key(environment())
    return next((ref for ref in REFERENCES.values() if _key(ref["environment"]) == here), None)


REF = _reference_here()


def _first_difference(want: list, got: list, unit: str) -> str | None:
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return f"first differs at {unit} {i + 1} of {len(want)}: recorded {a!r}, now {b!r}"
    if len(want) != len(got):
        return f"recorded {len(want)} entries, now {len(got)}"
    return None


def _digests(label: str, want: dict[str, str], got: dict[str, str]) -> list[str]:
    differ = [k for k in want if k in got and want[k] != got[k]]
    out = [f"{label}: {k} differs ({want[k]} -> {got[k]})" for k in differ[:5]]
    if len(differ) > 5:
        out.append(f"{label}: ... {len(differ)} of {len(want)} tensors differ")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing:
        out.append(f"{label}: recorded tensors missing now: {missing}")
    if extra:
        out.append(f"{label}: tensors not in the recording: {extra}")
    return out


def differences(want: dict, got: dict) -> list[str]:
    """Every way `got` departs from the recording, the inputs first (a changed data dir explains the rest)."""
    out = []
    for file in sorted(set(want.get("data", {})) | set(got.get("data", {}))):
        if want.get("data", {}).get(file) != got.get("data", {}).get(file):
            out.append(f"data file {file} differs from the recording (prep or the fixture changed, not the trainer)")
    if "base_lm" in want:
        out += _digests("base LM (built before training)", want["base_lm"], got.get("base_lm", {}))
    for part, unit in (("train", "update"), ("valid", "evaluation")):
        for key, values in want[part].items():  # series added since the recording are not compared
            diff = _first_difference(values, got[part].get(key, []), unit)
            if diff:
                out.append(f"{part} {key}: {diff}")
    out += _digests("final parameters", want["params"], got["params"])
    return out


@pytest.mark.parametrize("file", sorted(REFERENCES))
def test_references_cover_every_case(file):
    assert sorted(REFERENCES[file]["cases"]) == sorted(CASES), f"{file}: rerun tests/make_numerics_reference.py for new or removed cases"


@pytest.mark.parametrize("name", sorted(CASES))
def test_numerics_unchanged(name):
    if REF is None:
        pytest.skip(f"no reference in tests/data/ was recorded with {environment()}: bitwise equality is only defined on "
                    "the same torch build and CPU kernels (record one here with tests/make_numerics_reference.py --out)")
    problems = differences(REF["cases"][name], run_case(name))
    commit = REF.get("case_commits", {}).get(name, REF["commit"])  # a case re-recorded after a deliberate change
    assert not problems, (f"{name}: numerics differ from commit {commit[:10]}'s:\n  " + "\n  ".join(problems))
