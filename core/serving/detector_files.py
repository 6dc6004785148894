"""Where the chest-film detector's files are, and their stamp: what changes when they are written again. Apart from
core.serving.chest_check so that a page can key a cache on the detector's state without importing torch (Compare
kept a folder's reading, made while the detector could not be loaded, for twelve hours: a re-read)."""
from __future__ import annotations

import os
from pathlib import Path

from core.config import settings
from core.store import manifest

DETECTOR_NAME = "chest-film-detector"


def detector_dir() -> Path:
    """Where the shipped detector lives (``CXR_DETECTOR_DIR``, see core.config); independent of the model
    registry: the check belongs to the app, not to one set of models."""
    return settings().detector


def detector_stamps(directory: Path | None = None) -> tuple:
    """What changes when the detector's files are written again: each file's inode, size and time, or None; in
    the shipped folder its checksum manifest's too, signed just after each file (a review of the day's change: a
    film read between the JSON and its signature failed the load, and nothing watched changed again after it)."""
    directory = directory or detector_dir()
    stamps = []
    paths = [directory / f"{DETECTOR_NAME}{suffix}" for suffix in (".pt", ".json")]
    if manifest.is_shipped(paths[0]):
        paths.append(manifest.shipped_dir() / manifest.MANIFEST_FILE)
    for path in paths:
        try:
            info = os.stat(path)
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)
