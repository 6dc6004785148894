"""Whole files or nothing: every file the product writes goes to a temporary beside it, then ``os.replace``."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shared, read-only data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries a killed writer left behind. Call only under the registry lock (no live writer)."""
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
