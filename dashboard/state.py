"""What the pages share: settings, the model list, models loaded in the background, cached per-film results.

Nothing here imports torch when the module loads, so a page draws (its upload box first) in a second or two.
Models come up in a background thread, one :class:`~core.serving.predict.Predictor` per model version, shared by
every session in the process (it holds the lock Grad-CAM needs): see dashboard.model_loads. Only models are
shared: what is made from an upload (decoded film, result, heat maps) stays in byte-capped caches in the session's
``st.session_state`` (not ``st.cache_data``, which sessions share), and goes with the session or when the film
leaves the upload box. Uploads stay in memory.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import streamlit as st
from PIL import Image

from core import config, limits
from core.errors import CheckpointError, DecodingTimedOut, TriageError, TryAgainLater
from core.films.film import Film
from core.films.read import read_film
from core.serving.explain import load_cam_library
from core.serving.film_cache import BoundedCache, FilmCache, SharedBudget
from core.serving.in_flight import Patience, film_in_flight
from core.store.registry import ModelEntry, list_models
from core.wording import in_its_own_order
from dashboard.components.no_models import Unlisted
from dashboard.model_loads import model_key

if TYPE_CHECKING:
    from core.serving.predict import Prediction, Predictor

_SESSION_FILMS, _SESSION_RESULTS, _SESSION_HEAT_MAPS = "decoded-films", "triage-results", "heat-maps"


def default_evaluation_dir() -> str:  # a folder the Compare page suggests (CXR_EVAL_DIR), or ""
    return config.settings().evaluation_folder


def registered_models() -> tuple[list[ModelEntry], list[str]]:
    """Readable models (default first) and one sentence per model or file that could not be read."""
    try:
        return list_models()
    except CheckpointError as exc:
        return [], [Unlisted(exc)]  # the list itself, not one model: said as such (dashboard.components.no_models)


@dataclass(frozen=True)
class Upload:
    """One uploaded file, in memory: its name, bytes and content digest."""
    name: str
    data: bytes
    digest: str

    @classmethod
    def of(cls, uploaded, digest: str | None = None) -> "Upload":
        data = uploaded.getvalue()
        # every card, worklist row and CSV line gives the name in its own order (a review: U+202E reversed it)
        return cls(in_its_own_order(uploaded.name), data, digest or hashlib.sha256(data).hexdigest()[:16])


_DIGESTS = "upload-digests"  # Streamlit's file_id of each file in the upload box -> its content digest


def uploads_of(files: list) -> list[Upload]:
    """The upload box's files, each hashed once per upload rather than at every run of the page (a review: a
    250 MB batch took 0.26 s of SHA-256 at each slider move). A file Streamlit gives no id is hashed each time."""
    known, now, uploads = st.session_state.get(_DIGESTS, {}), {}, []
    for file in files:
        file_id = getattr(file, "file_id", None)
        uploads.append(Upload.of(file, known.get(file_id) if file_id else None))
        if file_id:
            now[file_id] = uploads[-1].digest
    st.session_state[_DIGESTS] = now  # the files in the box now, no others
    return uploads


@dataclass(frozen=True)
class FilmResult:
    """One uploaded film: a small grey copy to show, the model's prediction, or why there is none."""

    file: str
    digest: str
    display: np.ndarray | None = None  # uint8 grey, at most limits.DISPLAY_SIDE a side
    size: tuple[int, int] | None = None
    source_format: str = ""
    details: dict | None = None
    prediction: Prediction | None = None
    error: str | None = None
    retry: bool = False  # not read yet (the server busy, or its decoding time limit reached): it may be read again


# What every session's caches hold together, in this server process (modules load once per process).
SESSION_CACHES = SharedBudget(limits.ALL_SESSION_CACHES_BYTES)


def session_films() -> FilmCache:
    """This browser session's decoded films (never shared with another session)."""
    if _SESSION_FILMS not in st.session_state:
        st.session_state[_SESSION_FILMS] = FilmCache(limits.SESSION_FILM_CACHE_BYTES, SESSION_CACHES)
    return st.session_state[_SESSION_FILMS]


# Results (by film digest, hashed name, model key) and heat maps (digest, model key, class, method): cap, entry size.
_CAPS = {_SESSION_RESULTS: (limits.SESSION_RESULT_CACHE_BYTES,
                            lambda result: limits.RESULT_OVERHEAD + getattr(result.display, "nbytes", 0)),
         _SESSION_HEAT_MAPS: (limits.SESSION_HEAT_MAP_CACHE_BYTES, lambda heat: heat.nbytes)}


def session_cache(kind: str) -> BoundedCache:
    """This browser session's ``"triage-results"`` (a whole batch's at least: 128 MB held about 120, so a batch of
    300 read the rest again at each rerun, a resource review) or ``"heat-maps"``; never shared with another session."""
    if kind not in st.session_state:
        (cap, size_of), batch = _CAPS[kind], config.settings().batch_max_films * limits.RESULT_BYTES
        cap = max(cap, batch) if kind == _SESSION_RESULTS else cap
        st.session_state[kind] = BoundedCache(cap, size_of, budget=SESSION_CACHES, takes_room_from=(session_films(),))
    return st.session_state[kind]


def name_key(name: str) -> str:
    """A file name as it may appear in a cache key: hashed (names are often a patient's)."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def distinct_names(uploads: list[Upload]) -> list[Upload]:
    """The uploads in order, a repeated name made distinct with " (2)", " (3)"…, so each worklist row, card
    and CSV line names one upload (two files called image.jpeg from two folders are two films)."""
    taken, named = {u.name for u in uploads}, []
    counts: dict[str, int] = {}
    for upload in uploads:
        if upload.name not in counts:
            counts[upload.name] = 1
            named.append(upload)
            continue
        while True:
            counts[upload.name] += 1
            name = f"{upload.name} ({counts[upload.name]})"
            if name not in taken:
                break
        taken.add(name)
        named.append(replace(upload, name=name))
    return named


def repeated_uploads(uploads: list[Upload]) -> list[tuple[str, str]]:
    """(upload, the earlier upload it is a byte-for-byte copy of) for every upload whose content came before
    in the batch: listed and counted once per upload, which a reader should know."""
    first: dict[str, str] = {}
    repeats = []
    for upload in uploads:
        if upload.digest in first:
            repeats.append((upload.name, first[upload.digest]))
        else:
            first[upload.digest] = upload.name
    return repeats


def forget_other_films(uploads: list[Upload]) -> None:
    """Drop what this session keeps about films no longer in its upload box: removed means gone."""
    digests = {u.digest for u in uploads}
    session_films().keep_only(lambda digest: digest in digests)
    for kind in _CAPS:
        session_cache(kind).keep_only(lambda key: key[0] in digests)


def decoded(upload: Upload, films: FilmCache) -> Film:
    """The upload's film, decoded at most once per session while it fits the cache."""
    return films.get_or_decode(upload.digest, lambda: read_film(upload.data, name=upload.name))


def triage_uploads(predictor: Predictor, uploads: list[Upload],
                   on_film: Callable[[int, int], None] = lambda done, total: None,
                   on_result: Callable[[list[FilmResult]], None] = lambda so_far: None) -> list[FilmResult]:
    """Every upload read in memory and triaged, once per session and model version; a film that fails carries
    its message instead. ``on_film(done, total)`` before each film: the page's progress, where Streamlit stops a
    run that a click has superseded (it stops a run only at an element); ``on_result(so_far)`` after each, so
    the page shows readings as they come rather than after the whole batch (a review)."""
    films, results, model = session_films(), session_cache(_SESSION_RESULTS), model_key(predictor)
    keys = [(upload.digest, name_key(upload.name), model) for upload in uploads]
    wanted = set(keys).__contains__  # short of room, this run's results are kept before any other (a review)
    triaged, patience = [], Patience()  # once the server is found busy, the rest try once without waiting
    for done, (upload, key) in enumerate(zip(uploads, keys)):
        on_film(done, len(uploads))
        triaged.append(_triage_kept(results, key, upload, films, predictor, wanted, patience))
        on_result(triaged)
    return triaged


def _triage_kept(results: BoundedCache, key: tuple, upload: Upload, films: FilmCache, predictor: Predictor,
                 wanted: Callable[[tuple], bool], patience: Patience | None = None) -> FilmResult:
    """The film's result, kept for the session. A busy server's refusal (it cost nothing) is not kept: the next
    run tries again. A film stopped at its decoding time limit (a busy server's, or a file built to stall the
    decoder) is kept as not read yet, so that no later click spends that limit again; ``read_again`` retries it.
    ``patience``: the run's wait for a slot (core.serving.in_flight)."""
    try:
        return results.get_or_compute(key, partial(_triage_film, upload, films, predictor, patience), wanted)
    except TryAgainLater as exc:
        return FilmResult(upload.name, upload.digest, error=str(exc), retry=True)
    except DecodingTimedOut as exc:
        stopped = FilmResult(upload.name, upload.digest, error=str(exc), retry=True)
        results.put(key, stopped, wanted)
        return stopped


def read_again(digest: str) -> None:
    """Forget this session's results for one film (a film not read yet): the next run reads it again."""
    session_cache(_SESSION_RESULTS).keep_only(lambda key: key[0] != digest)


SERVER_FAULT = ("This film could not be read because of a fault on the server (the server log has the details); "
                "the other films are not affected. Press Read it again; if it happens again, tell an administrator.")


def _triage_film(upload: Upload, films: FilmCache, predictor: Predictor,
                 patience: Patience | None = None) -> FilmResult:
    try:
        with film_in_flight(patience):  # the display copy too: the full-size film is held until it is made (a review)
            film = decoded(upload, films)
            prediction = predictor.predict(film)
            display = _display_copy(film)
    except (TryAgainLater, DecodingTimedOut):
        raise
    except TriageError as exc:
        return FilmResult(upload.name, upload.digest, error=str(exc))
    except Exception:  # noqa: BLE001 - the server's fault, not the film's (a messages review: Streamlit's bare error
        logging.getLogger(__name__).exception("reading an uploaded film failed")  # box replaced the worklist)
        return FilmResult(upload.name, upload.digest, error=SERVER_FAULT, retry=True)  # kept: read again on request
    details = {"format": film.source_format, "size": f"{film.size[0]} × {film.size[1]} px",
               "bit depth": film.bit_depth, **film.metadata}  # Film.metadata is core's non-identifying whitelist
    return FilmResult(upload.name, upload.digest, display, film.size, film.source_format, details, prediction)


def heat_map(class_name: str, method: str, upload: Upload, predictor: Predictor,
             patience: Patience | None = None) -> np.ndarray:
    """Where the model looked for ``class_name``, kept for this session; TriageError / ValueError for the page.
    ``patience``: the page run's wait for a slot (core.serving.in_flight)."""
    def compute() -> np.ndarray:
        load_cam_library()  # outside the model's lock: other sessions keep predicting while it imports
        with film_in_flight(patience):
            return predictor.explain(decoded(upload, session_films()), class_name, method).heat_map

    key = (upload.digest, model_key(predictor), class_name, method)
    return session_cache(_SESSION_HEAT_MAPS).get_or_compute(key, compute)


def _display_copy(film: Film) -> np.ndarray:
    """The film at display size, 8-bit. Shrunk first, then scaled: scaling the full film made two full-size float
    temporaries inside its in-flight slot (a review: 30 MB beside a 15 MB film; 4000 x 4000 px: 0.37 s, now 0.11)."""
    image = Image.fromarray(np.asarray(film.pixels, dtype=np.float32))  # PIL's 32-bit float mode
    image.thumbnail((limits.DISPLAY_SIDE, limits.DISPLAY_SIDE), Image.Resampling.LANCZOS)
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)  # LANCZOS overshoots a little
