"""Prediction: film -> probabilities, label, triage priority and warnings, plus Grad-CAM on request.

A :class:`Predictor` owns one loaded model and a lock: Grad-CAM attaches hooks to the model, so every use
of the model goes through the lock and concurrent app sessions can share one cached predictor. The lock is
fair (core.serving.fair_lock): it is taken per film, in the order asked, predictions before explanations,
so sessions triaging at once take turns film by film instead of one batch holding the model. Preparing a
film (decode, resize) happens outside the turn, so other sessions do it meanwhile.

Two checks read the film's ImageNet features (computed once): the chest-film check (not a chest film: no
priority) and the model's population check (a chest film unlike this model's training films: the priority
stays, with ``population_warning`` beside it).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.films.colour_marks import marks_note
from core.films.dicom_values import header_doubts
from core.films.film import Film
from core.films.known_sets import shortcut_calls, training_sources
from core.films.quality import reversed_grey_levels, shape_warning, usability_problems
from core.films.tensor import as_float, film_to_tensor
from core.models.device import place_model, resolve_device
from core.models.ensemble import explained_layers
from core.models.inference import probabilities
from core.serving.chest_check import ChestFilmCheck
from core.serving.film_checks import REVERSED_NOT_ROUTINE, FilmChecks
from core.serving.explain import CLASS_FREE_METHODS, class_evidence, mean_heat_map, overlay, realigned
from core.serving.fair_lock import EXPLANATION, PREDICTION, FairLock
from core.serving.population import ModelPopulation
from core.store.checkpoints import LoadedModel, load_checkpoint
from core.store.registry import find_model

CHECK_RETRY_S = 30.0  # a predictor without its chest-film check tries to load it again at most this often

URGENT, ROUTINE = "urgent", "routine"
# what a film that is not triaged says, with what to do (a browser review: a photo, a CT and a film turned on its
# side were told only that they did not look like a chest film)
NOT_TRIAGED = ("Not triaged: the image does not look like a usable chest film. A reader must look at it; if it is a "
               "chest film, export it again (frontal, upright, the whole chest in the frame) and triage that.")


@dataclass
class Prediction:
    model: str
    probabilities: dict[str, float]
    label: str
    priority: str | None
    abnormal_score: float | None
    threshold: float | None
    warnings: list[str] = field(default_factory=list)
    population_warning: str | None = None  # a chest film unlike the model's training films; priority kept
    population_checked: bool = False  # whether the model has a population check (older versions do not)
    # Warnings (also in ``warnings``) that the film is unlike what the model reads: its DICOM header names no
    # frontal chest radiograph, colour marks are burned into it, its grey levels look reversed, its shape is far from
    # a chest film's
    doubts: list[str] = field(default_factory=list)

    @property
    def atypical(self) -> bool:
        """The film is unlike what the model reads (the population check, or a doubt): a routine call on it is
        no confident one; its priority is kept all the same (a missed disease is worse than a flagged doubt)."""
        return bool(self.population_warning or self.doubts)

    def to_dict(self) -> dict:
        """As `predict --json` prints it: a film not triaged has no label (its top class is no reading)."""
        return {"model": self.model, "probabilities": self.probabilities,
                "label": self.label if self.priority else None,
                "priority": self.priority, "abnormal_score": self.abnormal_score,
                "threshold": self.threshold, "warnings": self.warnings,
                "population_warning": self.population_warning, "population_checked": self.population_checked,
                "atypical": self.atypical}


@dataclass
class Explanation:
    class_name: str
    method: str
    heat_map: np.ndarray  # S x S in [0, 1], the model's input grid
    film_pixels: np.ndarray
    opacity: float = 0.4

    @cached_property
    def overlay(self) -> np.ndarray:
        """H x W x 3 uint8 at film size; computed on first use (costly for full-size films)."""
        return overlay(self.film_pixels, self.heat_map, self.opacity)


class Predictor:
    """One model plus the chest-film check (``chest_check=None`` loads the shared, shipped detector) and the
    model's own population check when its version has one.

    The model runs on ``device`` ('auto': CUDA when present; core.models.device), in fp32 like its operating
    point; films are prepared on the CPU and each batch is moved there.
    """

    def __init__(self, loaded: LoadedModel, chest_check: ChestFilmCheck | None = None, device: str = "auto"):
        self.device = resolve_device(device)
        loaded.model = place_model(loaded.model, self.device)
        self.loaded = loaded
        self.name = loaded.name
        self.lock = FairLock()
        self.explanations = 0  # asked for so far (a warm-up rehearses the first only when no film came first)
        # (network, layer, input size) Grad-CAM reads: the model, or each member of an ensemble
        self._explained = explained_layers(loaded.record.arch, loaded.model, loaded.image_size)
        self.population = ModelPopulation.of(loaded)  # None: this version is not checked
        self.shortcut_calls = shortcut_calls(training_sources(loaded.record))  # class -> what a card says of it
        self.chest_check, self.chest_check_problem = chest_check, None
        self._check_again_at = None if chest_check is not None else 0.0  # when to try the shared check again
        self._shared_check()

    def _shared_check(self) -> None:
        """Take up the shared chest-film check if this predictor has none yet: a version loaded while the detector
        could not be read went unchecked for the life of the process, though the files were put right (a review);
        tried again at most every CHECK_RETRY_S."""
        if self._check_again_at is None or time.monotonic() < self._check_again_at:
            return
        try:
            self.chest_check, self.chest_check_problem = ChestFilmCheck.shared(), None
            self._check_again_at = None
        except CheckpointError as exc:  # every film's warning: no server folder in it, the detail in the log
            logging.getLogger(__name__).warning("chest-film check unavailable: %s", exc)
            self.chest_check_problem = ("The chest-film check is unavailable (its detector could not be loaded; "
                                        "the server log says why); review every film.")
            self._check_again_at = time.monotonic() + CHECK_RETRY_S

    def check_in_use(self) -> int | None:
        """Which chest-film check this predictor reads with: None while it has none (taken up again as a prediction
        would), else the check's :attr:`~core.serving.chest_check.ChestFilmCheck.generation`. Results kept under it
        are read again when it changes (a concurrency review: results read before a refit, or while the detector
        could not be read, kept their verdicts while their film stayed in the box)."""
        self._shared_check()
        check = self.chest_check
        return None if check is None else check.generation if isinstance(check, ChestFilmCheck) else 0

    @classmethod
    def from_registry(cls, name: str | None = None, directory: Path | None = None,
                      device: str = "auto") -> "Predictor":
        resolve_device(device)  # an unavailable device is refused before the model is read
        return cls(load_checkpoint(find_model(name, directory).json_path), device=device)

    @property
    def can_explain(self) -> bool:
        return bool(self._explained)

    @property
    def _cam_layer(self):
        """The (first) layer Grad-CAM hooks, or None."""
        return self._explained[0][1] if self._explained else None

    def _model_input(self, film: Film, size: int | None = None):
        return as_float(film_to_tensor(film, size or self.loaded.image_size).unsqueeze(0))

    def predict(self, film: Film) -> Prediction:
        batch = self._model_input(film)
        problems = list(usability_problems(film))  # image statistics: no model, no turn needed
        population_warning = None
        with self.lock.turn(PREDICTION):  # the model and the learned checks, in one turn
            self._shared_check()
            unchecked = self.chest_check_problem  # as this film was read: a retry may change it once the turn ends
            probs = probabilities(self.loaded.model, batch)
            if not problems:
                problem, population_warning = self._film_checks(film)
                problems += [problem] if problem else []
        return self._interpret(probs[0], film, problems, population_warning, unchecked)

    def _film_checks(self, film: Film) -> tuple[str | None, str | None]:
        """(why the image is not a chest film, or None; the population warning, or None), from one set of
        features (core.serving.film_checks, as ``evaluate`` checks films)."""
        checks = FilmChecks(self.chest_check, self.population)
        verdict = checks.learned([film], [checks.feature_input(film)] if checks.needs_features else [])[0]
        if checks.features_missing and self.population is not None and not verdict.why:
            return None, ("The population check is unavailable (the server log says why); read the result with "
                          "caution.")
        return verdict.why, verdict.population_warning

    def _interpret(self, probs: np.ndarray, film: Film, problems: list[str], population_warning: str | None = None,
                   unchecked: str | None = None) -> Prediction:
        """The reading: label and priority at the operating point; ``problems`` (not a usable chest film)
        withhold the priority; a population warning does not."""
        point, classes = self.loaded.operating_point, self.loaded.classes
        label = classes[int(point.decide(probs[None])[0])]
        reversed_note = None if problems else reversed_grey_levels(film)
        if reversed_note and point.normal_index is not None and label == classes[point.normal_index]:
            problems, reversed_note = [REVERSED_NOT_ROUTINE], None  # an urgent call stands, a routine one is unsafe
            population_warning = None  # no result to read with caution (a re-read: the card still said so)
        warnings = list(film.warnings)
        if problems:  # no reading to doubt: the header's notes say what they found, not what it means for a reading
            plain = dict(zip(_header_doubts(film), _header_doubts(film, of_a_reading=False)))
            warnings = [plain.get(note, note) for note in warnings]
        warnings += problems
        # an unavailable chest-film check is a doubt too: a film it never saw got a plain routine call, while an
        # unavailable population check made every routine call atypical (a worklist review)
        doubts = [] if problems else [note for note in (*_header_doubts(film), marks_note(film.warnings),
                                                        reversed_note, shape_warning(film), unchecked,
                                                        self.shortcut_calls.get(label)) if note]
        warnings += [note for note in doubts if note not in warnings]  # the header's are the film's own already
        if unchecked and unchecked not in warnings:
            warnings.append(unchecked)
        score = None
        if point.normal_index is None:
            priority = None
            warnings.append("This model has no normal class, so it cannot triage; read the probabilities only.")
        else:
            score = float(point.abnormal_scores(probs[None])[0])
            priority = (URGENT if label != classes[point.normal_index] else ROUTINE) if not problems else None
        if problems:
            warnings.append(NOT_TRIAGED)
        return Prediction(self.name, {c: round(float(p), 6) for c, p in zip(classes, probs)}, label, priority,
                          score,  # unrounded: the exact number the threshold was compared with
                          None if point.normal_index is None else point.threshold, warnings,
                          population_warning, self.population is not None, doubts)

    def explain(self, film: Film, class_name: str, method: str = "gradcam", opacity: float = 0.4) -> Explanation:
        """Grad-CAM for ``class_name``; for an ensemble, each member's map (its own layer, at its own input size)
        resized to the ensemble's input size and averaged, weighted by the member's probability for the class."""
        if not self._explained:
            what = "a member of this ensemble" if self.loaded.record.members else self.loaded.record.arch
            raise ValueError(f"{what} has no convolutional layer to explain with Grad-CAM")
        if class_name not in self.loaded.classes:
            raise ValueError(f"unknown class '{class_name}'; this model knows {', '.join(self.loaded.classes)}")
        index = self.loaded.classes.index(class_name)
        self.explanations += 1
        inputs = [self._model_input(film, size) for _, _, size, _ in self._explained]
        with self.lock.turn(EXPLANATION):
            found = [class_evidence(network, layer, batch, index, method)
                     for (network, layer, _, _), batch in zip(self._explained, inputs)]
        # each map over what its cells look at (core.models.build.cam_cells), before members are averaged
        maps = [realigned(heat, *cells) for (heat, _), (_, _, _, cells) in zip(found, self._explained)]
        shares = [probability for _, probability in found]
        weights = None if method in CLASS_FREE_METHODS else shares  # a class-free map is no member's evidence
        return Explanation(class_name, method, mean_heat_map(maps, self.loaded.image_size, weights), film.pixels,
                           opacity)


def _header_doubts(film: Film, of_a_reading: bool = True) -> list[str]:
    """What a DICOM film's header says against reading it as a frontal chest radiograph (core.films.dicom_values)."""
    return header_doubts(film.metadata, of_a_reading) if film.source_format == "DICOM" else []
