"""Checkpoints that never unpickle code.

A checkpoint is a dict of plain types (tensors, numbers, strings, lists, dicts) written with
`torch.save` to a temporary file in the same directory, fsynced and renamed over the target, so a
kill at any moment leaves either the old file or the new one. Loading uses
`torch.load(weights_only=True)`: a pickle that asks for any callable is refused.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from lmlab import __version__
from lmlab.core.errors import LmlabError
from lmlab.core.filemode import umask_mode


class CorruptCheckpointError(LmlabError):
    """The file is damaged (empty, truncated, unreadable), as a crash mid-copy leaves it; not a refused or foreign one."""


FORMAT = "lmlab-checkpoint"
FORMAT_VERSION = 1
# torch.save's zip archive (a local file header), or the legacy pickle format torch.load still reads (protocol >= 2)
_TORCH_SAVE_HEADS = (b"PK\x03\x04", b"\x80")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix. The file gets the
    umask's mode (as open() would), not tempfile's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise LmlabError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any], kind: str) -> None:
    """Atomically save `state` (plain types only) tagged with its model `kind` ("lm", "seq2seq", ...)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
               "lmlab_version": __version__, **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, expected_kind: str | tuple[str, ...] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint saved by `save_checkpoint`, refusing code, foreign files and wrong kinds."""
    path = Path(path)
    if not path.exists():
        raise LmlabError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise LmlabError(f"checkpoint {path} is a directory; pass a .pt file (e.g. {path}/checkpoints/best.pt)")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"checkpoint {path} is empty (0 bytes): a truncated or interrupted copy")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_SAVE_HEADS):
        # a text file, random bytes or a zero-filled block: torch.load's unpickler fails on these with IndexError or
        # a misleading "weights_only" refusal. Damaged rather than foreign, so a resume falls back past it.
        raise CorruptCheckpointError(f"checkpoint {path} is not a checkpoint file (it starts with {head!r}; "
                                     "torch.save writes a zip archive): a text or foreign file, or a damaged copy")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise LmlabError(f"checkpoint {path} refused: it asks to run code or load non-tensor objects "
                             f"({_short(first)}); lmlab only loads plain-data checkpoints") from exc
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {_short(first)}") from exc
    except Exception as exc:  # RuntimeError, EOFError, BadZipFile, ...: a damaged archive fails in many types
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt ({_short(str(exc) or type(exc).__name__)}); "
                         "use another checkpoint (e.g. best.pt or an earlier step)") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LmlabError(f"{path} is not an lmlab checkpoint (no '{FORMAT}' tag)")
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if state.get("kind") not in kinds:
            raise LmlabError(f"checkpoint {path} holds a '{state.get('kind')}' model; "
                             f"this command needs {' or '.join(repr(k) for k in kinds)}")
    return state


def strip_compile_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop torch.compile's `_orig_mod.` and DDP's `module.` prefixes so checkpoints load anywhere."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key.replace("._orig_mod.", ".")] = value
    return out


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
