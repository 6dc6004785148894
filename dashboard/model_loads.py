"""Models loaded in the background, one shared :class:`~core.serving.predict.Predictor` per model version.

:func:`warm_up` starts the load (torch, the model, a rehearsal on a made-up film, then the Grad-CAM library in
steps) in a thread and returns at once; :func:`predictor_for` waits for it. Every session in the process shares
the result. :data:`foreground` counts triage a browser is waiting for: the warm-up's later steps wait for it.
"""
from __future__ import annotations

import copy
import io
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from core.errors import CheckpointError, TryAgainLater
from core.films.film import Film
from core.films.read import read_film
from core.serving.explain import load_cam_library
from core.store.registry import ModelEntry

if TYPE_CHECKING:
    from core.serving.predict import Predictor


class ModelLoad:
    """One model version coming up in a background thread; the result is shared by every session."""

    def __init__(self, entry: ModelEntry):
        self.name, self.json_path = entry.name, entry.json_path
        self.weight_bytes = 4 * (getattr(entry.record, "parameters", None) or 0)  # float32 in memory, members and all
        self._listed = _serving_hashes(entry.record)  # what the page's listing read, and the cache key holds
        self._done = threading.Event()
        self._predictor: Predictor | None = None
        self._error: Exception | None = None
        self._failed_at = 0.0
        self.thread = threading.Thread(target=self._run_then_trim, name=f"load {entry.name}", daemon=True)
        self.thread.start()

    def _run_then_trim(self) -> None:
        """All the load's steps, then the versions kept trimmed to the caps: a load still running cannot be dropped,
        so versions asked for one after another all stayed until some later page asked for a model (a security
        review: 12 versions of 1 GB kept against caps of 1 and 2 GB)."""
        try:
            self._run()
        finally:
            _trim_kept()

    @property
    def ready(self) -> bool:
        """The model is loaded, or failed to load (then :meth:`result` says why)."""
        return self._done.is_set()

    @property
    def failed(self) -> bool:
        return self._done.is_set() and self._error is not None

    def worth_retrying(self) -> bool:
        """Failed, and either for a passing reason (the server busy) or RETRY_FAILED_AFTER_S ago: a broken default
        was loaded again on every page run of every session, each time reading and hashing its weights and
        taking a loading slot from good models (a review)."""
        return self.failed and (isinstance(self._error, TryAgainLater)
                                or time.monotonic() - self._failed_at >= RETRY_FAILED_AFTER_S)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> Predictor:
        """The predictor, once loaded; re-raises what stopped the load (CheckpointError for a broken model)."""
        self._done.wait()
        if self._error is not None:
            raise _bare(self._error)  # a fresh one: the stored one never holds a page run's frames (films)
        return self._predictor

    def _run(self) -> None:
        try:
            from core.serving.predict import Predictor  # torch arrives here, off the page's thread
            from core.store.checkpoints import load_checkpoint

            with _loading:  # a model's memory at a time per place, however fast versions are switched
                self._predictor = Predictor(load_checkpoint(Path(self.json_path)))
            if _serving_hashes(self._predictor.loaded.record) != self._listed:
                # saved again between the listing and the load: kept under the listing's key, it would triage at
                # the threshold stored now while the card showed the listed one (a review); a passing refusal,
                # so the next page run reads the version as it is then
                raise TryAgainLater(f"Model {self.name} was saved again while it loaded; it loads again on the "
                                    "page's next run.")
        except Exception as exc:  # noqa: BLE001 - handed to the page, which shows or raises it
            self._predictor = None
            self._fail(exc)
            return
        # Rehearse on a made-up film (nobody's data): the first forward and backward passes of a fresh
        # process cost several times a later one (kernels chosen, memory laid out), and the Grad-CAM library
        # takes seconds to import. Prediction is rehearsed before the model counts as ready, the
        # explanation after, so a film uploaded meanwhile gets its probabilities first.
        predictor = self._predictor
        try:
            _rehearse(self.name, lambda: predictor.predict(_rehearsal_film()), fatal=CheckpointError)
        except CheckpointError as exc:  # outputs that are not numbers: every film's card once read "unreadable"
            self._predictor = None  # as if the films were at fault (a review)
            self._fail(exc)
            return
        finally:
            self._done.set()
            _trim_kept()  # now, not after the warm-up's steps below (each may wait 20 s for a busy page: a re-read)
        _rehearse(self.name, lambda: load_cam_library(between_steps=foreground.wait_until_idle))
        if predictor.can_explain:
            foreground.wait_until_idle()
            if not predictor.explanations:  # else a real film came first: rehearsing now only slows its overlay
                _rehearse(self.name, lambda: predictor.explain(_rehearsal_film(), predictor.loaded.classes[0]))


    def _fail(self, exc: Exception) -> None:
        """Keep what stopped the load without its traceback (the load's frames: the whole weights file read), which
        goes to the log; the page says the message (a review: kept and raised again, the same exception gathered
        every page run's frames, and their uploads, for as long as the failure stayed cached)."""
        logging.getLogger(__name__).warning("loading %s failed", self.name, exc_info=exc)
        self._error, self._failed_at = _bare(exc), time.monotonic()  # _bare never raises: the load always ends
        self._done.set()
        _trim_kept()


def _bare(exc: Exception) -> Exception:
    """A copy of ``exc`` without its traceback or chain; one whose class cannot be rebuilt from its arguments (a
    review: copying FolderNotAllowed raised TypeError, and the load then never ended) is said as a CheckpointError
    of the same words."""
    try:
        return copy.copy(exc)
    except Exception:  # noqa: BLE001 - any class's own constructor
        return CheckpointError(str(exc))


def _rehearse(name: str, step: Callable[[], object], fatal: type[Exception] | tuple = ()) -> None:
    """A warm-up step, whose failure is logged; ``fatal`` ones are raised (the model's fault, not a film's)."""
    try:
        step()
    except fatal:
        raise
    except Exception:  # noqa: BLE001 - only a head start: a real film reports its own problem at the edge
        logging.getLogger(__name__).warning("warming up %s failed", name, exc_info=True)


def _rehearsal_film() -> Film:
    """A smooth grey synthetic image, built in memory (no patient data)."""
    ramp = np.linspace(40, 200, 512, dtype=np.float32)
    pixels = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return read_film(buffer.getvalue(), name="rehearsal.png")


class Foreground:
    """Triage a browser is waiting for, counted: background warm-up (the Grad-CAM library's seconds of imports,
    in steps) waits between its steps while any is in progress, so a film uploaded the moment the page appears
    gets its probabilities without competing for the interpreter. A wait is capped: warm-up is never starved."""

    MAX_WAIT_S = 20.0

    def __init__(self) -> None:
        self._busy = 0
        self._idle = threading.Condition()

    def wait_until_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=self.MAX_WAIT_S)

    @contextmanager
    def working(self):
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()


foreground = Foreground()  # one per process, like the models it protects


# Model versions kept in memory (about 90 MB each here): past MAX_MODELS, or MAX_MODEL_BYTES of weights, the least
# recently asked for is dropped, but not one asked for in the last KEPT_WHILE_USED_S unless MAX_MODELS_IN_USE or
# MAX_BYTES_IN_USE are loaded. The shipped registry alone offers more than 8 versions (290 MB of weights in all): a
# clinician going through them made every session reload each in turn (seconds of both cores, every other user
# waiting at "Loading the model"). Bytes as well as versions: an ensemble weighs its members (a review: 16 site
# ensembles of 10 ResNet-18s would have held 7 GB).
MAX_MODELS, MAX_MODELS_IN_USE, KEPT_WHILE_USED_S = 8, 16, 300.0
MAX_MODEL_BYTES, MAX_BYTES_IN_USE = 1 << 30, 2 << 30
MAX_LOADING = 2  # model files read at once; more loads wait their turn
RETRY_FAILED_AFTER_S = 30.0  # a version that failed to load shows its failure this long before it is read again
_models: OrderedDict[tuple[str, ...], ModelLoad] = OrderedDict()
_asked: dict[tuple[str, ...], float] = {}  # when each loaded version was last asked for (time.monotonic)
_models_lock = threading.Lock()
_loading = threading.BoundedSemaphore(MAX_LOADING)


def warm_up(entry: ModelEntry) -> ModelLoad:
    """Start loading ``entry`` in the background, once per process and model version (a failed load is retried
    after RETRY_FAILED_AFTER_S, or at once when the server was only busy).

    The hashes in the key reload a replaced model, one whose population check was fitted again (or whose missing
    check file was copied back), or one whose stored operating point changed. Returns at once.
    """
    key = (str(entry.json_path), *_serving_hashes(entry.record), entry.population_missing)
    with _models_lock:
        load = _models.get(key)
        if load is None or load.worth_retrying():
            load = _models[key] = ModelLoad(entry)
        _models.move_to_end(key)
        _asked[key] = time.monotonic()
        _trim(key)
        return load


def _trim_kept() -> None:
    """:func:`_trim`, sparing the version asked for last."""
    with _models_lock:
        _trim(next(reversed(_models), None))


def _trim(key: tuple | None) -> None:
    """Drop the least recently asked for versions past the caps, never ``key`` (the one asked for) nor a load still
    running (one dropped while loading is read twice); the caller holds ``_models_lock``."""
    now = time.monotonic()
    while _over(MAX_MODELS, MAX_MODEL_BYTES):
        done = next((k for k, other in _models.items() if other.ready and k != key and (
            _over(MAX_MODELS_IN_USE, MAX_BYTES_IN_USE) or now - _asked.get(k, 0.0) > KEPT_WHILE_USED_S)), None)
        if done is None:
            break
        del _models[done]
        _asked.pop(done, None)


def _over(versions: int, weight_bytes: int) -> bool:
    """More versions are kept than ``versions``, or more bytes of weights than ``weight_bytes``."""
    return len(_models) > versions or sum(load.weight_bytes for load in _models.values()) > weight_bytes


def predictor_for(entry: ModelEntry) -> Predictor:
    """The shared predictor of ``entry``, waiting for its load; raises CheckpointError for a broken model."""
    return warm_up(entry).result()


def model_key(predictor: Predictor) -> tuple:
    """What a result is kept under besides its film: the version as served, its population check loaded or not
    (results read without it carry no warning: a review), and the chest-film check it read with."""
    return (predictor.name, *_serving_hashes(predictor.loaded.record), predictor.loaded.population is None,
            predictor.check_in_use())


def _serving_hashes(record) -> tuple[str, str, str]:
    """What a served version reads from its files besides its name: its weights, its population check, which
    ``fit-population`` replaces in place (a predictor loaded before would go on without it, or with the old one,
    while the card, read afresh, promised it), and its operating point (a site version's JSON saved again with
    the same weights and another threshold was triaged at the old one while its card showed the new: a review)."""
    check, point = getattr(record, "population_check", None), getattr(record, "operating_point", None)
    return (record.weights_sha256, check.sha256 if check is not None else "",
            point.model_dump_json() if point is not None else "")
