"""One writer per run dir: `<run dir>/.lmlab.lock`, flock-ed by the process that trains into it.

Two identical commands started on one run dir used to both train, both exit 0 and write every metrics row
twice. The lock is an advisory `flock` on a file inside the run dir, so the kernel drops it when its holder
dies, however it dies: a lock file left by a killed process (SIGKILL, a lost node) is simply locked again
by the next run. The file holds the holder's host, pid and start time for the refusal message only.

On file systems without `flock` (some cluster mounts answer ENOLCK/EOPNOTSUPP) the recorded pid decides: a
holder on this host that is alive keeps the run dir; any other holder is taken to be gone (a requeued job on
another node is the usual case) and said so on stderr.

On NFS, `flock` is a lock held by the server for the client: a holder whose node died keeps it until the
server's lease expires (about 90 s on NFSv4; NFSv3's lockd waits for the node's status monitor). A requeued job
landing within that window is refused with the holder's host named and that advice; removing the lock file
(a new file is a new lock) is safe once that host is known to be down.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from lmlab.core.errors import LmlabError

try:
    import fcntl
except ImportError:  # not a POSIX system: no locking
    fcntl = None

LOCK_NAME = ".lmlab.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: dict[str, int] = {}  # realpath of a run dir -> fd of the lock this process holds on it


def acquire(run_dir: Path) -> None:
    """Hold the run dir's lock for this process, or raise LmlabError naming who holds it.

    A run dir this process already holds stays held (a second trainer object in one process, as tests and
    notebooks create, takes it over)."""
    key = os.path.realpath(run_dir)
    if key in _held or fcntl is None:
        return
    path = Path(run_dir) / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise LmlabError(f"run dir {run_dir} is not writable") from exc
            raise LmlabError(f"cannot lock run dir {run_dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                elsewhere = holder.get("host") not in (None, socket.gethostname())
                hint = (f"; if {holder['host']} is down, its NFS lock lasts until the server's lease expires (about "
                        f"90 s on NFSv4), or remove {path} once sure" if elsewhere else "")
                raise LmlabError(f"run dir {run_dir} is in use by {_describe(holder)}: wait for that run to end, "
                                 f"or choose another --run-dir{hint}") from None
            if exc.errno not in _NO_FLOCK:
                os.close(fd)
                raise LmlabError(f"cannot lock run dir {run_dir}: {exc.strerror}") from exc
            if _alive_here(holder):
                os.close(fd)
                raise LmlabError(f"run dir {run_dir} is in use by {_describe(holder)}: wait for that run to end, "
                                 "or choose another --run-dir") from None
            if holder:
                print(f"lmlab: the file system of {run_dir} has no flock; taking over the lock of "
                      f"{_describe(holder)}, taken to be gone", file=sys.stderr, flush=True)
        # the holder we waited on may have unlinked the file after we opened it: lock the file that is there
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _write_holder(fd)
    _held[key] = fd


def release(run_dir: Path, moved_to: Path | None = None) -> None:
    """Give the lock up and remove its file (while still holding it, so no one locks a file about to vanish).
    `moved_to`: where the run dir now is (moved aside by --force while locked)."""
    fd = _held.pop(os.path.realpath(run_dir), None)
    if fd is None:
        return
    try:
        os.unlink(Path(moved_to or run_dir) / LOCK_NAME)
    except OSError:
        pass  # already gone: closing releases it all the same
    os.close(fd)


def held(run_dir: Path) -> bool:
    return os.path.realpath(run_dir) in _held


@atexit.register
def _release_all() -> None:
    for key in list(_held):
        release(Path(key))


def _write_holder(fd: int) -> None:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:500]}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds without its note; the run reports the disk when it saves


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"


def _alive_here(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    return holder["pid"] != os.getpid() and pid_alive(holder["pid"])


def pid_alive(pid: int) -> bool:
    """A process with this pid exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
