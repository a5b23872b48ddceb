"""What every command shares: one-line errors, the progress reporter, preset + override resolution."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import typer

from lmlab.core.config import describe, parse_overrides, resolve, set_dotted, to_dict
from lmlab.core.errors import LmlabError
# imported with the command, not when a run ends: a training that outlives an upgrade of the code on disk (hours; a
# `git pull` or `pip install -e` beside it) must still print its summary with the modules it started with
from lmlab.core.records import strict
from lmlab.core.reporting import Reporter
from lmlab.core.runstatus import SUMMARY_NAME

DEBUG_ENV = "LMLAB_DEBUG"


def fail(message: str, code: int = 2) -> None:
    print(f"lmlab: error: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def finish_run(summary: dict, run_dir: str) -> None:
    """The end of a training command: rank 0 prints the summary (one JSON line on stdout) and keeps it as
    RUN_DIR/summary.json, which `lmlab runs` reads; then exit 130 if Ctrl-C stopped the run."""
    from lmlab.core import distributed  # both loaded by the trainer already: no read of code that changed since
    from lmlab.core.checkpoint import atomic_write_text
    if distributed.detect()[0] == 0:  # one summary per job: ranks sharing a pipe could interleave theirs
        text = strict_json(summary, default=str)  # null, never a bare Infinity/NaN
        print(text, flush=True)
        try:
            atomic_write_text(Path(run_dir) / SUMMARY_NAME, text + "\n")
        except OSError as exc:
            print(f"lmlab: warning: could not write {Path(run_dir) / SUMMARY_NAME} ({exc.strerror}); the checkpoints "
                  "are saved", file=sys.stderr, flush=True)
    exit_if_interrupted(summary)


def exit_if_interrupted(summary: dict) -> None:
    """A training run that a Ctrl-C stopped saved its checkpoint and printed its summary; it still exits 130, as
    an interrupted command does, so a shell `&&` or a make rule does not carry on (SIGTERM/SIGUSR1 exit 0)."""
    if (summary.get("stopped_by") or summary.get("stopped")) == "SIGINT":
        print("lmlab: interrupted: the checkpoint is saved; rerun the same command to resume", file=sys.stderr, flush=True)
        raise typer.Exit(130)


def handle_errors(fn: Callable) -> Callable:
    """Turn LmlabError (and common OS errors, and a device out of memory) into one stderr line and a non-zero exit;
    with LMLAB_DEBUG=1 the traceback is printed before it. Ctrl-C outside a training loop (KeyboardInterrupt) exits 130 with one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except LmlabError as exc:
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            raise typer.Exit(0)
        except RuntimeError as exc:
            torch = sys.modules.get("torch")  # not imported (e.g. --help): the error cannot be torch's
            if torch is None or not isinstance(exc, torch.OutOfMemoryError):
                raise
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            from lmlab.core.distributed import out_of_memory_message  # torch is imported by now
            advice = "run on a device with more memory"
            if "batch_size" in inspect.signature(fn).parameters:
                advice = f"lower --batch-size, or {advice}"
            fail(out_of_memory_message(exc, advice))
        except OSError as exc:
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            hint = " (disk full: free space and rerun the same command; files already complete are kept)" if exc.errno == 28 else ""
            fail(f"{exc.strerror or exc}{':' + where if where else ''}{hint}")

    return wrapper


def given(ctx: typer.Context | None, *params: str) -> list[str]:
    """Of `params` (parameter names), those the user set (command line or environment), not left at defaults.

    Compared by name: typer vendors its own click, whose ParameterSource is not click.core's."""
    if ctx is None:
        return []
    sources = {p: ctx.get_parameter_source(p) for p in params}
    return [p for p, src in sources.items() if src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")]


def flag_name(ctx: typer.Context | None, param: str) -> str:
    """The long spelling of a parameter's flag (`top_p` -> `--top-p`)."""
    for p in (ctx.command.params if ctx is not None else []):
        if p.name == param:
            return max(p.opts, key=len)
    return "--" + param.rstrip("_").replace("_", "-")


def refuse(ctx: typer.Context | None, params: tuple[str, ...] | list[str], why: str) -> None:
    """A flag the user set that this invocation would ignore is an error (never silently dropped):
    `lmlab: error: --beam does not apply here: <why>`."""
    hit = given(ctx, *params)
    if hit:
        names = ", ".join(flag_name(ctx, p) for p in hit)
        raise LmlabError(f"{names} {'does' if len(hit) == 1 else 'do'} not apply: {why}")


def check_flag(flag: str, value: Any, check) -> Any:
    """Range-check a flag's value with a config Check (`at_least(1)`, ...): one line naming the flag."""
    problem = check.problem(value)
    if problem:
        raise LmlabError(f"{flag} {problem}")
    return value


def strict_json(value: Any, **kwargs) -> str:
    """Strict JSON: non-finite floats become null (never the bare Infinity/NaN Python's json writes)."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


def make_reporter(quiet: bool = False, interval_s: float = 10.0) -> Reporter:
    """A rich progress bar on an interactive terminal, plain log lines otherwise (batch jobs, pipes), at most one
    progress line every `interval_s` seconds (a training config's run.log_interval_s)."""
    if quiet:
        return Reporter(quiet=True)
    if sys.stderr.isatty() and not os.environ.get("SLURM_JOB_ID") and not os.environ.get("CI"):
        from lmlab.cli.progress import RichReporter
        return RichReporter()
    return Reporter(interval_s=interval_s)


def resolve_config(cls: type, command: str, presets: list[str] | None, overrides: list[str] | None,
                   extra: dict[str, Any] | None = None) -> Any:
    """defaults <- presets (in order) <- explicit flags (`extra`) <- --set overrides; then the config's rules
    about this machine (e.g. no bf16 LSTM on a CPU). A preset path whose variable is unset is an error only
    if no flag replaced it."""
    cfg = resolve(cls, command, presets, None, check_env=False)
    merged: dict[str, Any] = {}
    if extra:
        merged.update(extra)
    from lmlab.core.config import _deep_update, check_unset_env, environment_problems, merge
    _deep_update(merged, parse_overrides(overrides))
    cfg = merge(cfg, merged, "flags") if merged else cfg
    check_unset_env(cfg, command, presets)
    environment_problems(cfg)
    return cfg


def nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"run.dir": x} -> {"run": {"dir": x}}, skipping None values (flags not given)."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is not None:
            set_dotted(out, key, value)
    return out


def print_config(cfg: Any) -> None:
    print(json.dumps(to_dict(cfg), indent=2, sort_keys=False))


def config_epilog(cls: type, title: str = "Config keys (set with --set KEY=VALUE; presets fill them)") -> str:
    rows = describe(cls)
    lines = [title + ":", ""]
    from rich.markup import escape  # typer renders the epilog as rich markup: "[a|b]" would vanish as a tag
    for key, default, help_text in rows:
        lines.append(escape(f"  {key} = {default}  —  {help_text}"))
    return "\n\n".join(["\b\n" + "\n".join(lines)])


PRESET_HELP = ("Presets to apply in order, comma-separated or repeated: a dataset/paper preset and a hardware "
               "preset (cpu, gpu, dgx8, slurm), e.g. --preset ptb,zaremba-medium,gpu. `lmlab presets` lists them.")
SET_HELP = "Override one config key, e.g. --set optim.lr=0.5 (repeatable). Applied after presets and flags."
