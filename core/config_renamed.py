"""Config keys a command renamed (issue #13: one vocabulary across commands).

A command's root config lists them as a plain class attribute (not a field), old dotted key -> new one:

    RENAMED = {"optim.base_steps": "schedule.max_steps", "eval.every": "run.eval_interval"}

User input (a preset, `--set`, a run dir's config.json) with an old key is a one-line error naming the new key
(`config.check_renamed`, `check_renamed_file`); never a silent translation, so a preset or script gets fixed once.
A config lmlab stored itself (a checkpoint's) is `upgrade`d, so a model trained before the rename still loads.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from lmlab.core.errors import LmlabError


def _has(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def renamed_keys(cls: type, data: dict[str, Any]) -> list[tuple[str, str]]:
    """(old, new) for each key of `cls.RENAMED` that the nested `data` still uses."""
    return [(old, new) for old, new in getattr(cls, "RENAMED", {}).items() if _has(data, old)]


def check_renamed_file(cls: type, path: str | Path) -> None:
    """A run dir's config.json written before a rename: one line saying how to resume it. A missing or unreadable
    file is left to the run dir's own checks."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for old, new in renamed_keys(cls, data) if isinstance(data, dict) else []:
        raise LmlabError(f"{path}: {old} was renamed {new} (issue #13); rename the key in that file to resume "
                         "the run, or choose another --run-dir")


def upgrade(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored config (a checkpoint's) with each old key moved to its new name."""
    out = copy.deepcopy(data)
    for old, new in renamed_keys(cls, out):
        *path, leaf = old.split(".")
        node = out
        for part in path:
            node = node[part]
        value = node.pop(leaf)
        if not _has(out, new):
            *path, leaf = new.split(".")
            node = out
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
    return out
