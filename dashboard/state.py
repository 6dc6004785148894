"""What the pages share: settings, the model list, cached models and cached per-film results.

Models are ``st.cache_resource``: one :class:`~core.serving.predict.Predictor` per model version, shared by
every session (it holds the lock Grad-CAM needs). Results are ``st.cache_data`` keyed on the film's digest
and the model's weights, so moving a slider never runs a model twice. Decoded films stay in the browser
session that uploaded them (capped in bytes), so Grad-CAM reuses the decode prediction made. Uploads stay in
memory.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from core import config
from core.errors import CheckpointError, TriageError
from core.evaluation.folder import evaluate_folder
from core.films.film import Film
from core.films.read import read_film
from core.serving.film_cache import FilmCache
from core.serving.predict import Prediction, Predictor
from core.store.checkpoints import load_checkpoint
from core.store.registry import ModelEntry, list_models
from core.store.reports import Report

CACHE_TTL = "2h"
_SESSION_FILMS = "decoded-films"


def default_data_dir() -> Path:
    """Training data the Retrain form suggests (``CXR_DATA_DIR``, see core.config)."""
    return config.settings().training_data


def default_evaluation_dir() -> str:
    """A folder the Compare page suggests (``CXR_EVAL_DIR``, see core.config), or ""."""
    return config.settings().evaluation_folder


def registered_models() -> tuple[list[ModelEntry], list[str]]:
    """Readable models (default first) and one sentence per model or file that could not be read."""
    try:
        return list_models()
    except CheckpointError as exc:
        return [], [str(exc)]


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def load_predictor(json_path: str, weights_sha256: str) -> Predictor:
    """One shared predictor per model version; the weights' hash in the key reloads a replaced model."""
    return Predictor(load_checkpoint(Path(json_path)))


def predictor_for(entry: ModelEntry) -> Predictor:
    return load_predictor(str(entry.json_path), entry.record.weights_sha256)


def model_key(predictor: Predictor) -> tuple[str, str]:
    return predictor.name, predictor.loaded.record.weights_sha256


@dataclass(frozen=True)
class Upload:
    """One uploaded file, in memory: its name, bytes and content digest."""

    name: str
    data: bytes
    digest: str

    @classmethod
    def of(cls, uploaded) -> "Upload":
        data = uploaded.getvalue()
        return cls(uploaded.name, data, hashlib.sha256(data).hexdigest()[:16])


@dataclass(frozen=True)
class FilmResult:
    """One uploaded film: a small grey copy to show, the model's prediction, or why there is none."""

    file: str
    digest: str
    display: np.ndarray | None = None  # uint8 grey, at most config.DISPLAY_SIDE a side
    size: tuple[int, int] | None = None
    source_format: str = ""
    details: dict | None = None
    prediction: Prediction | None = None
    error: str | None = None


def session_films() -> FilmCache:
    """This browser session's decoded films (never shared with another session)."""
    if _SESSION_FILMS not in st.session_state:
        st.session_state[_SESSION_FILMS] = FilmCache(config.SESSION_FILM_CACHE_BYTES)
    return st.session_state[_SESSION_FILMS]


def decoded(upload: Upload, films: FilmCache) -> Film:
    """The upload's film, decoded at most once per session while it fits the cache."""
    return films.get_or_decode(upload.digest, lambda: read_film(upload.data, name=upload.name))


def triage_uploads(predictor: Predictor, uploads: list[Upload]) -> list[FilmResult]:
    """Every upload read in memory and triaged; a film that fails carries its message instead."""
    films = session_films()
    return [_triage_film(u.digest, u.name, model_key(predictor), u, films, predictor) for u in uploads]


@st.cache_data(max_entries=128, ttl=CACHE_TTL, show_spinner=False)  # ~1 MB each: the display copy
def _triage_film(digest: str, name: str, key: tuple[str, str], _upload: Upload, _films: FilmCache,
                 _predictor: Predictor) -> FilmResult:
    try:
        film = decoded(_upload, _films)
        prediction = _predictor.predict(film)
    except TriageError as exc:
        return FilmResult(name, digest, error=str(exc))
    details = {"format": film.source_format, "size": f"{film.size[0]} × {film.size[1]} px",
               "bit depth": film.bit_depth, **film.metadata}  # Film.metadata is core's non-identifying whitelist
    return FilmResult(name, digest, _display_copy(film), film.size, film.source_format, details, prediction)


@st.cache_data(max_entries=256, ttl=CACHE_TTL, show_spinner="Computing the explanation…")
def heat_map(digest: str, key: tuple[str, str], class_name: str, method: str, _upload: Upload,
             _predictor: Predictor) -> np.ndarray:
    """Where the model looked for ``class_name``; raises TriageError / ValueError for the page to show."""
    return _predictor.explain(decoded(_upload, session_films()), class_name, method).heat_map


def _display_copy(film: Film) -> np.ndarray:
    image = Image.fromarray((film.pixels * 255.0).round().astype(np.uint8))
    image.thumbnail((config.DISPLAY_SIDE, config.DISPLAY_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(image)


def folder_stamp(folder: str | Path) -> float:
    """Newest modification time of a dataset folder and its class folders: changes when films come or go."""
    root = Path(folder).expanduser()
    try:
        stamps = [root.stat().st_mtime]
        for child in (c for c in root.iterdir() if c.is_dir()):
            stamps.append(child.stat().st_mtime)
            stamps += [grand.stat().st_mtime for grand in child.iterdir() if grand.is_dir()]
    except OSError:
        return 0.0  # missing or unreadable: evaluate_folder says so in words
    return max(stamps)


@st.cache_data(max_entries=32, ttl="12h", show_spinner=False)
def folder_report(name: str, weights_sha256: str, json_path: str, folder: str, stamp: float) -> Report:
    """Metrics of one model on a user's folder, with a progress bar; the same request again is instant.

    The model is loaded privately here, so a long evaluation never holds the lock of the shared predictor.
    """
    bar = st.progress(0.0, text=f"Evaluating {name} on {folder}…")

    def on_progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 50) == 0:  # ~50 updates, however large the folder
            bar.progress(done / total, text=f"Evaluating {name}: {done} of {total} films")

    try:
        return evaluate_folder(load_checkpoint(Path(json_path)), folder, on_progress=on_progress)
    finally:
        bar.empty()
