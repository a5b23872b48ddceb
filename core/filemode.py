"""File modes that honour the umask.

tempfile makes 0600 files and 0700 directories whatever the umask (right for secrets, wrong here): a data dir
or checkpoint written through a temp name and renamed into place would be private to its owner, so a group
sharing prepared data or runs (umask 002, a setgid project dir) could not read them. What is renamed into
place gets the mode open()/mkdir() would have given it instead.
"""

from __future__ import annotations

import os
import stat


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(directory: bool = False) -> int:
    """The mode open()/mkdir() would give a new file (0666) or directory (0777) under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def chmod_as_mkdir(path: str | os.PathLike) -> None:
    """Give a tempfile.mkdtemp directory the mode mkdir() would have, keeping the setgid bit it inherited from
    a group's project dir (so what is created inside keeps the group)."""
    os.chmod(path, umask_mode(directory=True) | (os.stat(path).st_mode & stat.S_ISGID))
