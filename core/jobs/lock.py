"""The one job slot, held as an operating-system lock (``flock``) on ``JOBS/active.lock``.

The starter takes the lock exclusively, writes the new job's id into the file and hands the very same open
file to the runner process (``pass_fds``), which keeps it for its whole life: when the runner ends, however
it ends (finished, cancelled, killed, the machine's power cut), the kernel releases the lock. Nothing is
ever stale, so nothing needs recovering but the status of a job whose runner died.

Anyone may ask "is a job running?" by trying a shared lock on a fresh descriptor: busy means the job named
in the file is alive. A reader that gets the shared lock holds it while it tidies up after a dead job, so a
starter cannot create a new job meanwhile (it retries for about a second). The file is never deleted: a
deleted lock file would let two processes lock two different files of the same name.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.store.atomic import keep_private

LOCK_FILE = "active.lock"
CLAIM_WAIT = 1.0  # seconds a starter retries while readers hold their brief shared lock
RETRY_EVERY = 0.02


def _open(root: Path) -> int:
    return os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # non-inheritable (PEP 446)


def _try(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def claim(root: Path, wait: float = CLAIM_WAIT) -> int | None:
    """An open descriptor holding the exclusive lock, or None when a job holds the slot. The jobs folder is its
    owner's alone (0700, narrowed if wider): job logs and statuses name films, and a site's file names can carry a
    patient's name; its settings hold the server's data folder and who started the job (a review)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    keep_private(root, "the jobs folder")
    fd = _open(root)
    deadline = time.monotonic() + wait
    while not _try(fd, fcntl.LOCK_EX):
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(RETRY_EVERY)
    return fd


def name_holder(fd: int, job_id: str) -> None:
    """Write the job id into the lock file (under the exclusive lock), so readers can say which job holds it."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, job_id.encode(), 0)


def unlock(fd: int) -> None:
    """The runner, its final status written: free the slot now rather than when the process has wound down."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass  # not a lock we hold (a runner started by hand): nothing to free


@contextmanager
def probe(root: Path) -> Iterator[bool]:
    """True (holding a shared lock until the block ends) when no job holds the slot; False when one does."""
    if not root.is_dir():
        yield True  # no jobs folder: no job has ever run here
        return
    fd = _open(root)
    try:
        free = _try(fd, fcntl.LOCK_SH)
        yield free
    finally:
        os.close(fd)  # closing drops our shared lock


SETTLE_FILE = "settle.lock"


@contextmanager
def settling(folder: Path) -> Iterator[None]:
    """One settler of a dead job at a time, across threads and processes (each opens its own descriptor): readers
    probe the slot under a shared lock, so two could settle one job at once, both finding its audit line missing
    and both writing it (a concurrency review)."""
    fd = os.open(folder / SETTLE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def held_by(root: Path) -> str | None:
    """None when the slot is free; otherwise what the lock file names (a job id, or "" while it is written)."""
    with probe(root) as free:
        if free:
            return None
    try:
        return (root / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        return ""
