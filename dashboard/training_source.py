"""A training source as the Retrain page previews it: what a class folder or a manifest would train on, and a stamp
that changes when its films do (read without torch; cached per source and stamp)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import streamlit as st

from core import config
from core.errors import TriageError
from core.films.manifest import load_manifest
from core.films.roots import resolve_label
from dashboard.folder_stamp import folder_stamp
from dashboard.labels import MANIFEST_SUFFIX, PATHS_HASHED


def default_data_dir() -> Path:  # training data the Retrain form suggests (CXR_DATA_DIR, see core.config)
    return config.settings().training_data


@dataclass(frozen=True)
class TrainingPreview:
    """What a training source holds: the task its classes make, films per class and per data source, and the
    films of a ``val/`` folder that join validation."""
    task: str
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    by_source: dict[str, dict[str, int]]  # data source -> class -> films
    validation_only: int = 0


@st.cache_data(max_entries=16, ttl=timedelta(minutes=10), show_spinner="Reading the training films…",
               hash_funcs=PATHS_HASHED)
def training_preview(source: str, stamp: str) -> TrainingPreview:
    """The films a class folder or a manifest would train on (``stamp``: :func:`source_stamp`, so films that
    come or go are seen); DatasetError (core's words) when it cannot train."""
    from core.films.manifest import training_films
    from core.tasks import task_name

    films, extra = training_films(source)
    by_source: dict[str, dict[str, int]] = {}
    for label, origin in zip(films.labels.tolist(), films.sources or (Path(source).name,) * len(films)):
        counts = by_source.setdefault(origin, dict.fromkeys(films.classes, 0))
        counts[films.classes[label]] += 1
    return TrainingPreview(task_name(films.classes), films.classes, tuple(films.class_counts()), by_source,
                           len(extra) if extra is not None else 0)


def source_stamp(source: str | Path) -> str:
    """Changes when a training source changes: a folder's :func:`folder_stamp`; a manifest file's time and the
    stamps of the folders it reads (found by a review: films added to them left the preview's counts as
    they were for as long as it stayed cached)."""
    path = Path(source)
    if path.suffix != MANIFEST_SUFFIX:
        return folder_stamp(path)
    try:
        stamp = str(path.stat().st_mtime_ns)
        folders = [resolve_label(entry.label) for entry in load_manifest(path).folders]
    except OSError:
        return ""
    except TriageError:  # a manifest or folder that cannot be read: the preview says what is wrong
        return stamp
    return hashlib.sha256("\0".join([stamp, *map(folder_stamp, folders)]).encode()).hexdigest()
