"""The lock of one training run (core.training.resume): an exclusive ``flock`` on ``RUNS/<key>.lock`` held by
the process that trains the run, so a job and a command never train one run at once (the second is refused at
once, never made to wait). The kernel drops it however the holder ends; a holder that lets go removes the file
first, and a lock file nobody holds (its process died) is pruned when a run is opened.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

_HELD: dict[Path, int] = {}  # lock file -> the descriptor holding it, in this process


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _is_current(fd: int, path: Path) -> bool:
    """The locked descriptor is still the file at ``path`` (a holder removes the file as it lets go)."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def take(path: Path) -> bool:
    """Hold ``path``'s exclusive lock (True), or False at once when another process holds it."""
    held = _HELD.get(path)
    if held is not None and _is_current(held, path):
        return True  # this process opened the run before and still holds it
    release(path)
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)  # not inherited by subprocesses
        if not _try_lock(fd):
            os.close(fd)
            return False
        if _is_current(fd, path):
            _HELD[path] = fd
            return True
        os.close(fd)  # the holder removed it as we opened it: lock the file now there


def release(path: Path) -> None:
    """Let go of the lock (removing its file first, as its holder), if this process holds it."""
    fd = _HELD.pop(path, None)
    if fd is not None:
        if _is_current(fd, path):
            path.unlink(missing_ok=True)
        os.close(fd)


def release_all() -> None:
    """Let go of every run lock this process holds (its training has ended, however it ended)."""
    for path in list(_HELD):
        release(path)


def prune_locks(folder: Path) -> None:
    """Remove the lock files processes that died left behind (none holds them)."""
    for path in folder.glob("*.lock") if folder.is_dir() else []:
        if path in _HELD or path.is_symlink():
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _try_lock(fd) and _is_current(fd, path):
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
