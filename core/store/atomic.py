"""Whole files or nothing: every file the product writes goes to a temporary beside it, then ``os.replace``."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes 0600; a file is as readable as its folder: shipped checkpoints are shared, read-only data,
        # the private site folder's versions (core.store.lock) stay private
        os.chmod(tmp, 0o644 if stat.S_IMODE(path.parent.stat().st_mode) & 0o044 else 0o600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def keep_private(folder: Path, what: str) -> None:
    """Narrow ``folder`` to 0700 when it is ours and wider (another owner's is theirs to set), so an install upgraded
    with a 0755 folder is narrowed without waiting for a new file. Tried, not required: on a mount that keeps no
    modes (vfat, some shares) the work still goes on, said once in the log."""
    try:
        found = folder.stat()
        if found.st_uid == os.getuid() and stat.S_IMODE(found.st_mode) & 0o077:
            os.chmod(folder, 0o700)
    except OSError as exc:
        if folder not in _WARNED:
            _WARNED.add(folder)
            logging.getLogger(__name__).warning("%s cannot be made private: %s", what, exc.strerror)


_WARNED: set[Path] = set()


def json_bytes(data: dict) -> bytes:
    """How every record file is written: indented, keys sorted, one newline at the end."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json_bytes(data))


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries a killed writer left behind. Call only under the registry lock (no live writer)."""
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


@contextmanager
def restored_on_failure(path: Path) -> Iterator[None]:
    """``path`` as it was (or absent, as it was) when the block fails: a file replaced before the description
    that names its hash, which then could not be written (a full disk), would leave a model refused for a file
    its description no longer matches. Call under the registry lock (the kept copy is a temporary)."""
    kept = path.with_name(f".{path.name}.kept.tmp")  # a killed writer's goes with the other temporaries
    kept.unlink(missing_ok=True)
    existed = path.exists()
    if existed:
        try:
            os.link(path, kept)  # the old bytes, kept without writing them again: a full disk cannot refuse it
        except OSError:  # a filesystem without hard links
            shutil.copyfile(path, kept)
    try:
        yield
    except BaseException:
        if existed:
            os.replace(kept, path)
        else:
            path.unlink(missing_ok=True)
        raise
    finally:
        kept.unlink(missing_ok=True)
