"""Find the separate interpreter fairseq is installed in (never the main one: its pins would break
lmlab's environment). FAIRSEQ_PYTHON names it; default the repository's .venv-fairseq (`make fairseq-env`
builds it) when present. When fairseq cannot be imported the harness reports the reason and skips the
fairseq column."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

DEFAULT_PYTHON = str(Path(__file__).resolve().parents[1] / ".venv-fairseq" / "bin" / "python")
_PROBE = ("import json, sys, fairseq, torch; "
          "print(json.dumps({'fairseq': fairseq.__version__, 'torch': torch.__version__}))")


@dataclasses.dataclass
class FairseqEnv:
    python: str | None
    version: str | None = None
    torch: str | None = None
    reason: str | None = None  # why fairseq is unavailable (None when available)

    @property
    def available(self) -> bool:
        return self.reason is None

    def script(self, name: str) -> list[str]:
        """Run a fairseq console entry point (fairseq-train ...) with this interpreter."""
        module = {"fairseq-preprocess": "fairseq_cli.preprocess", "fairseq-train": "fairseq_cli.train",
                  "fairseq-eval-lm": "fairseq_cli.eval_lm", "fairseq-generate": "fairseq_cli.generate"}[name]
        return [str(self.python), "-m", module]


def find_fairseq(env: dict | None = None, timeout: float = 180.0) -> FairseqEnv:
    env = os.environ if env is None else env
    python = env.get("FAIRSEQ_PYTHON") or (DEFAULT_PYTHON if Path(DEFAULT_PYTHON).exists() else None)
    if not python:
        return FairseqEnv(None, reason=f"no fairseq interpreter: set FAIRSEQ_PYTHON (default {DEFAULT_PYTHON} is absent); "
                                       "build it with `make fairseq-env` (it compiles fairseq's C++ extensions)")
    if not Path(python).exists():
        return FairseqEnv(python, reason=f"FAIRSEQ_PYTHON={python} does not exist")
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return FairseqEnv(python, reason=f"{python} could not run: {exc}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return FairseqEnv(python, reason=f"`import fairseq` fails in {python}: {last[:200]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return FairseqEnv(python, version=info["fairseq"], torch=info["torch"])
