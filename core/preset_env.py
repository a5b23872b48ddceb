"""Environment variables in presets: where a dataset lives is the user's, never the preset's.

A preset string may use
  `${VAR}`               VAR's value; unset (or empty) is an error,
  `${VAR:-default}`      `default` when VAR is unset or empty (for paths inside the project, e.g. runs/...),
  `${VAR:?what}`         as `${VAR}`, and the error says VAR must be the path of `what`.
No preset falls back to a path of one machine. The error is one line naming the preset, the variable and
what it must hold, derived from the preset's own strings (`${LMLAB_PTB}/ptb.train.txt` -> "the directory
holding ptb.train.txt"), and the `--set` keys that replace it. While presets are merged an unset variable
stays written as `${VAR}`, so that a flag given later can still replace the value; what is left is refused.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterator

from lmlab.core.errors import LmlabError

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


def env(name: str) -> str | None:
    """$name, or None when it is unset or empty (as the shell's `:-` and `:?` treat it)."""
    return os.environ.get(name) or None


def expand_env(value: Any, keep_unset: bool = False, unset_message: Callable[[str], str] | None = None) -> Any:
    """Expand the `${...}` of every string in `value` (nested dicts and lists included).

    A required variable that is unset raises `unset_message(var)` (a generic line without it), or, with
    `keep_unset`, stays as written for `unset_required` to find after the flags are merged."""
    if isinstance(value, str):
        def repl(m: re.Match) -> str:
            got = env(m.group(1))
            if got is not None:
                return got
            if m.group(2) == ":-":
                return m.group(3)
            if keep_unset:
                return m.group(0)
            raise LmlabError(unset_message(m.group(1)) if unset_message
                             else f"environment variable {m.group(1)} is not set (export it or give the value with --set)")
        return VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: expand_env(v, keep_unset, unset_message) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, keep_unset, unset_message) for v in value]
    return value


def strings(tree: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, string) for every string in a nested value."""
    if isinstance(tree, str):
        yield key, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from strings(v, f"{key}.{k}" if key else k)
    elif isinstance(tree, list):
        for v in tree:
            yield from strings(v, key)


def uses(tree: Any, var: str) -> bool:
    return any(m.group(1) == var for _, s in strings(tree) for m in VAR.finditer(s))


def unset_required(tree: Any) -> list[str]:
    """The variables of the `${VAR}` placeholders left in `tree` that are unset, in order of appearance."""
    return list(dict.fromkeys(m.group(1) for _, s in strings(tree) for m in VAR.finditer(s)
                              if m.group(2) != ":-" and env(m.group(1)) is None))


def unset_env_message(preset: str, values: dict[str, Any], var: str) -> str:
    """One line for preset `preset` (its tables for this command, unexpanded, in `values`) needing `var`:
    `${VAR}/ptb.train.txt` -> the directory holding ptb.train.txt; `${VAR}/train` (a translation split
    prefix, no extension) -> the directory holding train.*; `${VAR:?what}` -> the path of `what`."""
    held, keys, whats = [], [], []
    for key, text in strings(values):
        for m in VAR.finditer(text):
            if m.group(1) != var:
                continue
            keys.append(key)
            rest = text[m.end():]
            if m.group(2) == ":?" and m.group(3):
                whats.append(m.group(3))
            elif m.start() == 0 and rest.startswith("/") and len(rest) > 1:
                name = rest[1:]
                held.append(name if "." in name.rsplit("/", 1)[-1] else name + ".*")
    keys = list(dict.fromkeys(keys))
    if held:
        what = "the directory holding " + ", ".join(dict.fromkeys(held))
    elif whats:
        what = "the path of " + "; ".join(dict.fromkeys(whats))
    else:
        what = "the value of " + ", ".join(keys)
    flags = " ".join(f"--set {k}=PATH" for k in keys)
    return f"preset '{preset}' needs {var}: export it as {what} (or give the {'path' if len(keys) == 1 else 'paths'} with {flags})"
