"""One config system: dataclasses whose field docs are the `--help` text, presets that fill them.

- A field's help is `field(metadata={"help": "..."})`; `describe(cls)` lists every key with it.
- A preset is a TOML file in `presets/` (or a path): top-level keys apply to every command,
  a table named after a command (`[train-lm]`, `[prep]`) applies to that command only. Strings may
  use `${VAR}` / `${VAR:-default}` / `${VAR:?what}` so dataset paths come from the environment
  (core/preset_env.py); a variable still unset once the flags are merged is a one-line error.
- Overrides are `key.sub=value` strings (the `--set` flag), parsed as TOML values where they parse
  and as plain strings otherwise.
- Every value is validated where its field is defined: type, `choices=`, and `check=` (a range such as
  `at_least(1)` or `between(0, 1, hi_open=True)`); a dataclass may add cross-field rules in a
  `problems()` method yielding (key, message). A bad value is one LmlabError line naming the full key.
- A command's root config may list keys it renamed (`RENAMED`, core/config_renamed.py): an old key in a preset
  or `--set` is the one-line error naming the new key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from lmlab.core.config_renamed import check_renamed_file, renamed_keys, upgrade  # noqa: F401 (API)
from lmlab.core.errors import LmlabError
from lmlab.core.preset_env import expand_env, unset_env_message, unset_required, uses  # noqa: F401 (expand_env: API)


@dataclasses.dataclass(frozen=True)
class Check:
    """A rule on a value: `ok(value)` is True when it holds; `text` completes "must be ..."."""
    ok: Callable[[Any], bool]
    text: str
    bad: Any = None  # a value the check refuses (tests use it to prove every checked key names itself)

    def problem(self, value: Any) -> str | None:
        try:
            good = bool(self.ok(value))
        except (TypeError, ValueError):
            good = False
        if good:
            return None
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f"{value!r} is {'out of range' if numeric else 'not valid'} (must be {self.text})"


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def at_least(lo: float) -> Check:
    return Check(lambda v: _finite(v) and v >= lo, f">= {lo}", lo - 1)


def greater_than(lo: float) -> Check:
    return Check(lambda v: _finite(v) and v > lo, f"> {lo}", lo)


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """lo <= v <= hi, with either end open; the text is interval notation, e.g. "in [0, 1)"."""
    def ok(v):
        return _finite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return Check(ok, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}", hi + 1)


def either(value: Any, check: Check) -> Check:
    """A sentinel `value` (e.g. -1 = "same as dropout", 0 = "off") or a value passing `check`."""
    return Check(lambda v: v == value or check.ok(v), f"{value!r} or {check.text}", check.bad)


def each(check: Check) -> Check:
    """Every element of a list passes `check`."""
    return Check(lambda v: all(check.ok(x) for x in v), f"a list of values {check.text}", [check.bad])


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")
DEVICE = Check(lambda v: isinstance(v, str) and _DEVICE.fullmatch(v) is not None, "auto, cpu, mps, cuda or cuda:N", "bogus")


def _codec(name: Any) -> bool:
    import codecs
    try:
        return isinstance(name, str) and bool(codecs.lookup(name))
    except LookupError:
        return False


ENCODING = Check(_codec, "a text encoding Python knows, e.g. utf-8 or latin-1", "bogus")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, choices: tuple | None = None,
           check: Check | None = None):
    """A config field with its help text (shown by `--help`) and, optionally, allowed choices and a range check."""
    metadata = {"help": help, "choices": choices, "check": check}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, help: str = ""):
    """A nested config dataclass field."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "choices": None, "check": None})


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], where: str = "config", prefix: str = "") -> Any:
    """Build `cls` from a (possibly partial) nested dict, checking keys, types, choices and ranges.

    `where` says where the values came from (a preset, --set) and is named in errors that are not about
    one key; `prefix` is the dotted path of `cls` inside the root config (a bare dotted `where` such as
    "model" is taken as the prefix, as callers that build a sub-config pass it)."""
    if not prefix and where not in ("config", "flags") and re.fullmatch(r"[A-Za-z_][\w.]*", where):
        prefix, where = where + ".", "config"
    if not isinstance(data, dict):
        raise LmlabError(f"{prefix.rstrip('.') or where}: expected a table, got {data!r}")
    if not prefix:
        check_renamed(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        place = prefix.rstrip(".") or (where if where not in ("flags",) else "config")
        raise LmlabError(f"{place}: unknown key '{unknown[0]}' (valid: {', '.join(sorted(names))}){_origin(where) if prefix else ''}")
    kwargs = {}
    for name, value in data.items():
        meta = names[name].metadata
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}", meta.get("choices"), meta.get("check"), where)
    obj = cls(**kwargs)
    for key, message in _problems(obj):
        raise LmlabError(f"{prefix}{key}: {message}{_origin(where)}")
    return obj


def check_renamed(cls: type, data: dict[str, Any], where: str = "config") -> None:
    """An old key is one line naming its new one, e.g. `optim.base_steps was renamed schedule.max_steps (issue #13)`."""
    for old, new in renamed_keys(cls, data):
        raise LmlabError(f"{old} was renamed {new} (issue #13){_origin(where)}")


def _problems(obj: Any) -> Iterator[tuple[str, str]]:
    rule = getattr(obj, "problems", None)
    return iter(rule()) if callable(rule) else iter(())


def _origin(where: str) -> str:
    return "" if where in ("config", "flags", "--set") else f" (from {where})"


def validate(cfg: Any, prefix: str = "") -> None:
    """Check an already-built config (e.g. defaults changed in code) as from_dict would."""
    from_dict(type(cfg), to_dict(cfg), "config", prefix)


def merge(cfg: Any, data: dict[str, Any], where: str = "config") -> Any:
    """Return a copy of `cfg` with the (partial, nested) `data` applied on top."""
    base = to_dict(cfg)
    _deep_update(base, data)
    return from_dict(type(cfg), base, where)


def _deep_update(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _coerce(tp: Any, value: Any, key: str, choices: tuple | None, check: Check | None = None, where: str = "config") -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(args[0], value, key, choices, check, where)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise LmlabError(f"{key}: expected a list, got {value!r}{_origin(where)}")
        value = [_coerce(item, v, key, None, None, where) for v in value]
    elif origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise LmlabError(f"{key}: expected a table, got {value!r}{_origin(where)}")
        value = dict(value)
    elif tp is not Any:
        value = _scalar(tp, value, key, where)
    if choices is not None and value not in choices:
        raise LmlabError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{_origin(where)}")
    if check is not None and (problem := check.problem(value)):
        raise LmlabError(f"{key}: {problem}{_origin(where)}")
    return value


def _scalar(tp: Any, value: Any, key: str, where: str) -> Any:
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    value = True
                elif value.lower() in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError
            elif not isinstance(value, bool):
                raise ValueError
        elif tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        elif tp is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            value = str(value)
    except (TypeError, ValueError, OverflowError):
        raise LmlabError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}{_origin(where)}") from None
    return value


# ---------------------------------------------------------------------------------------------
# overrides and presets


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """tree["a"]["b"] = value for dotted_key "a.b", creating the tables on the way."""
    node = tree
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["optim.lr=0.1", "model.kind=lstm"]` -> nested dict; values parsed as TOML where possible."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise LmlabError(f"--set {item!r}: expected KEY=VALUE (e.g. --set optim.lr=0.1)")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        set_dotted(out, key, value)
    return out


def _dotted_to_nested(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _dotted_to_nested(value)
        node = out
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            _deep_update(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("lmlab.presets").iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    """The raw TOML of a preset given by name (shipped) or by path."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise LmlabError(f"preset file {path} does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files("lmlab.presets") / f"{name}.toml"
        if not res.is_file():
            raise LmlabError(f"unknown preset '{name}' (known: {', '.join(preset_names())})")
        text = res.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LmlabError(f"preset '{name}' is not valid TOML: {exc}") from exc


COMMANDS = ("prep", "train-lm", "train-ebm", "sample", "eval-ppl", "bleu")


def preset_values(name: str, command: str, keep_unset: bool = False) -> dict[str, Any]:
    """The part of a preset that applies to `command`: shared top-level keys, then its own table, with
    `${VAR}` expanded (core/preset_env.py; an unset required variable is an error unless `keep_unset`)."""
    values = _applicable(read_preset(name), command)
    return expand_env(values, keep_unset, lambda var: unset_env_message(name, values, var))


def _applicable(raw: dict[str, Any], command: str) -> dict[str, Any]:
    raw = {k: v for k, v in raw.items() if k not in ("description", "paper")}
    values = _dotted_to_nested({k: v for k, v in raw.items() if k not in COMMANDS})
    _deep_update(values, _dotted_to_nested(raw.get(command, {})))
    return values


def check_unset_env(cfg: Any, command: str, presets: list[str] | None) -> None:
    """After presets and flags are merged: a preset path whose variable is unset and that no flag replaced is
    the one-line error naming the first preset that uses it."""
    left = unset_required(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg)
    if not left:
        return
    for part in [p.strip() for name in presets or [] for p in name.split(",") if p.strip()]:
        values = _applicable(read_preset(part), command)
        if uses(values, left[0]):
            raise LmlabError(unset_env_message(part, values, left[0]))
    raise LmlabError(f"environment variable {left[0]} is not set (export it or give the value with --set)")


def resolve(cls: type, command: str, presets: list[str] | None, overrides: dict[str, Any] | None = None,
            base: Any = None, check_env: bool = True) -> Any:
    """defaults (or `base`) <- each preset in order <- explicit overrides. A preset value whose environment
    variable is unset is an error only if no override replaced it (`check_env=False` leaves that check to a
    caller that merges more flags: it calls `check_unset_env` itself)."""
    cfg = base if base is not None else cls()
    for name in presets or []:
        for part in [p for p in name.split(",") if p.strip()]:
            values = preset_values(part.strip(), command, keep_unset=True)
            cfg = _merge_known(cfg, values, f"preset '{part.strip()}'", command)
    if overrides:
        cfg = merge(cfg, overrides, "--set")
    if check_env:
        check_unset_env(cfg, command, presets)
    return cfg


def environment_problems(cfg: Any) -> None:
    """Rules a config states about this machine (its `environment_problems()`), checked when a command starts."""
    rule = getattr(cfg, "environment_problems", None)
    for key, message in (rule() if callable(rule) else ()):
        raise LmlabError(f"{key}: {message}")


def _merge_known(cfg: Any, values: dict[str, Any], where: str, command: str = "") -> Any:
    """Presets may carry keys for other commands' sections (e.g. `hardware`); keep those this config has.
    A preset with nothing at all for this command is refused: it was meant for another one."""
    check_renamed(type(cfg), values, where)  # before sections this config lacks are dropped
    names = {f.name for f in dataclasses.fields(cfg)}
    kept = {k: v for k, v in values.items() if k in names}
    if not kept and command:
        raw = read_preset(where.split("'")[1])
        has = [c for c in COMMANDS if c in raw]
        raise LmlabError(f"{where} has no settings for `{command}`"
                         + (f" (it is for {', '.join(has)}); drop it from --preset" if has else "; drop it from --preset"))
    return merge(cfg, kept, where)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf field, for `--help` epilogs."""
    rows = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows.extend(describe(type(value), key + "."))
        else:
            help_text = f.metadata.get("help", "")
            choices = f.metadata.get("choices")
            if choices:
                help_text += f" [{'|'.join(map(str, choices))}]"
            if f.metadata.get("check") is not None:
                help_text += f" ({f.metadata['check'].text})"
            rows.append((key, repr(value), help_text))
    return rows
