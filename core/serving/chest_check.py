"""Is this a chest film at all? A model-independent out-of-distribution score.

Features: ImageNet EfficientNet-Lite0 features of the film at 224 px (core.models.features). Score: Mahalanobis
distance in a PCA space fitted on every real chest-film source we have, paediatric and adult
(``python -m core.serving.fit_chest_check``). The threshold is chosen by cross-validation over those sources
pooled, so that about 1 % of real chest films are flagged, and the flag rate of each source is recorded in the
detector's JSON. Image statistics (core.films.quality) run first. Whether a real chest film is from the
population a given *model* was trained on is another question, answered per model (core.serving.population).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import CheckpointError
from core.films.film import Film
from core.models.features import FEATURE_SIZE, FeatureExtractor, GaussianScore, OnePerProcess
from core.store import manifest
from core.store.base import MAX_WEIGHTS_BYTES, Record, parse_record, read_regular_file
from core.store.lock import registry_lock
from core.serving.detector_files import DETECTOR_NAME, detector_dir, detector_stamps

log = logging.getLogger(__name__)

__all__ = ["FEATURE_SIZE", "DETECTOR_NAME", "FeatureExtractor", "ChestFilmDetector", "ChestFilmCheck",
           "detector_dir"]

class DetectorMeta(Record):
    """The detector's JSON beside its tensors: the score's threshold and how it was calibrated (fit_chest_check),
    and the SHA-256 of the tensors it goes with (None in detectors saved before it was recorded)."""
    threshold: float
    calibration: dict[str, Any] = {}
    tensors_sha256: str | None = None


@dataclass
class ChestFilmDetector:
    score: GaussianScore
    threshold: float
    calibration: dict = field(default_factory=dict)  # how it was fitted and its cross-validated flag rates

    def scores(self, features: np.ndarray) -> np.ndarray:
        return self.score.scores(features)

    def save(self, directory: Path) -> Path:
        """Write the tensors, then the JSON that names their digest (a reader between the two refuses the pair,
        not pairs a new score with an old threshold); in the shipped folder both are signed in its checksum
        manifest, else the next start refused the refitted detector and no film was checked (a review)."""
        buffer = io.BytesIO()
        torch.save(self.score.tensors(), buffer)
        tensors = buffer.getvalue()
        meta = {"threshold": self.threshold, "calibration": self.calibration,
                "tensors_sha256": hashlib.sha256(tensors).hexdigest()}
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{DETECTOR_NAME}.pt"
        # the manifest's other writers (shipping a model) hold the shipped registry's lock: so does this
        with registry_lock(manifest.shipped_dir()) if manifest.is_shipped(path) else contextlib.nullcontext():
            manifest.write_signed(path, tensors)
            manifest.write_signed(path.with_suffix(".json"), (json.dumps(meta, indent=1) + "\n").encode())
        return path

    @classmethod
    def load(cls, directory: Path | None = None) -> "ChestFilmDetector":
        directory = directory or detector_dir()
        try:
            meta = parse_record(DetectorMeta, json.loads(_read_detector_file(directory / f"{DETECTOR_NAME}.json")),
                                "its description")
            tensors = _read_detector_file(directory / f"{DETECTOR_NAME}.pt")
            if meta.tensors_sha256 is not None and hashlib.sha256(tensors).hexdigest() != meta.tensors_sha256:
                raise ValueError("its tensors are not the ones its description was written with (being refitted?)")
            arrays = torch.load(io.BytesIO(tensors), map_location="cpu", weights_only=True)
            detector = cls(GaussianScore.from_tensors(arrays), meta.threshold, meta.calibration)
            # a threshold that is not a finite number, or scores that are not, passed every film (a review)
            if not (math.isfinite(detector.threshold) and detector.threshold > 0
                    and all(bool(torch.isfinite(t).all()) for t in arrays.values())):
                raise ValueError("its threshold or its score's tensors are not finite numbers")
            return detector
        # for the server log: pages show their own words. Any malformed content (a null threshold, a JSON list, a
        # file that is not a torch file) is this refusal, never an error that stops the model being served
        except (OSError, EOFError, ValueError, KeyError, RuntimeError, TypeError, AttributeError,
                pickle.UnpicklingError) as exc:
            raise CheckpointError(f"The chest-film detector in {directory} cannot be loaded ({exc}).") from exc


def _read_detector_file(path: Path) -> bytes:
    """The shipped detector is checked against the checksum manifest (CheckpointError when it differs)."""
    return manifest.read_verified(path) if manifest.is_shipped(path) else read_regular_file(path, MAX_WEIGHTS_BYTES)


class ChestFilmCheck:
    """The app's and CLI's check: one extractor and detector, loaded lazily (``ChestFilmCheck.shared()``),
    shared between threads."""

    shared = OnePerProcess()

    def __init__(self, directory: Path | None = None):
        self.directory = directory or detector_dir()
        self._stamps = detector_stamps(self.directory)
        self._detector = ChestFilmDetector.load(self.directory)
        self._reload = threading.Lock()
        self._generation = 0  # detectors read again since this check was made
        self.extractor = FeatureExtractor.shared()

    @property
    def detector(self) -> ChestFilmDetector:
        """The detector as its files are now: one refitted while the app runs is read again at the next film
        (it was kept for the life of the process, a review); a refit that cannot be read leaves the one in use,
        said in the log."""
        stamps = detector_stamps(self.directory)
        if stamps != self._stamps:
            with self._reload:
                if stamps != self._stamps:
                    try:
                        self._detector = ChestFilmDetector.load(self.directory)
                        self._generation += 1
                        log.info("chest-film detector read again: its files changed")
                    except CheckpointError as exc:
                        log.warning("the chest-film detector's files changed but cannot be loaded, so the one "
                                    "loaded before stays in use: %s", exc)
                    self._stamps = stamps
        return self._detector

    @property
    def generation(self) -> int:
        """Which detector this check reads with, as its files are now: one more each time a refit is read."""
        self.detector  # read again first, when its files changed
        return self._generation

    def features(self, film: Film) -> np.ndarray:
        """1 x 1280: what this check and a model's population check (core.serving.population) both read."""
        return self.extractor.films([film])

    def score(self, film: Film) -> float:
        return float(self.detector.scores(self.features(film))[0])

    def problem(self, film: Film) -> str | None:
        return self.problem_of(self.features(film))

    def problem_of(self, features: np.ndarray) -> str | None:
        return self.problems_of(features)[0]

    def problems_of(self, features: np.ndarray) -> list[str | None]:
        """Why each row of ``features`` is not a chest film, or None (a batch: evaluate reads folders so)."""
        detector = self.detector
        problems = []
        for score in detector.scores(features).tolist():
            if not score <= detector.threshold:  # a score that is not a number is no chest film either
                # the film's own warning says so; for an operator's log at INFO, not a line on every CLI run's stderr
                log.info("chest-film check: score %.1f over the threshold %.1f", score, detector.threshold)
                problems.append("This image does not look like a chest film: it is unlike every chest film the check "
                                "was built on.")
            else:
                problems.append(None)
        return problems
