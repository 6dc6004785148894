"""Whether the site models folder can take a new file, asked before minutes of training or scoring whose
result would be written there, so they are not spent for nothing."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from core.config import ENVIRONMENT, settings
from core.errors import CheckpointError


def ensure_models_writable(directory: Path | None = None) -> None:
    """CheckpointError now when ``directory`` (default: the site folder) cannot take a new file: called before
    minutes of training or scoring whose result would be written there, so they are not spent for nothing."""
    directory = directory or settings().models
    setting = ENVIRONMENT["checkpoints" if directory.resolve() == settings().checkpoints.resolve() else "models"]
    try:
        if directory.is_dir():
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-"):
                pass
            return
        # Not made yet: nothing is made here (a refused run leaves no folder behind); its nearest existing
        # folder must let it be made.
        parent = next(folder for folder in directory.parents if folder.exists())
        if not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        raise CheckpointError(f"The models folder cannot be written ({exc.strerror or type(exc).__name__}): ask an "
                              "administrator to let this server write it, or to name another one "
                              f"({setting}). Nothing was changed.") from None
