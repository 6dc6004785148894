"""The lock every writer of a model folder's registry takes (core.store.registry, core.training.shipping)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from core.config import settings
from core.errors import CheckpointError
from core.store.atomic import keep_private


@contextmanager
def registry_lock(directory: Path | None = None) -> Iterator[None]:
    """The folder's registry, to this process alone while the block runs. CheckpointError, naming no path,
    when the folder cannot hold the lock or another process keeps it for 30 s (filelock's own errors name it)."""
    directory = directory or settings().models  # the site folder
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if directory == settings().models:  # its versions come from the site's patient films, as its saved runs
            keep_private(directory, "the site models folder")  # and jobs do: private like them (a review)
        lock = FileLock(str(directory / ".registry.lock"), timeout=30)
        lock.acquire()
    except Timeout:
        raise CheckpointError("The model registry is busy: another process has held it for 30 s (a model being "
                              "saved on a slow disk, or a stuck process). Try again in a moment.") from None
    except OSError as exc:
        raise CheckpointError(f"The model folder cannot be locked ({exc.strerror or type(exc).__name__}); "
                              "an administrator should check that it exists and is writable.") from None
    try:
        yield
    finally:
        lock.release()
