"""Triage's film checks, written once for every caller: Triage itself (core.serving.predict), ``evaluate`` and
Compare (core.evaluation.folder), the training-source sample and a site's calibration folder
(core.training.source_check). They had been written four times, and a copy had drifted from Triage's (a re-read:
without a chest-film detector, ``evaluate`` skipped the population check that Triage still ran).

In order: image statistics (core.films.quality: no model needed), then, from one set of ImageNet features, the
chest-film check (not a chest film: Triage withholds the priority) and the model's population check (a chest film
unlike the model's training films: the priority stays, with a warning), features computed a batch at a time.

One rule depends on the model's call and so is applied apart: a film whose grey levels look reversed keeps an urgent
call and gets no routine one (:data:`REVERSED_NOT_ROUTINE`, in core.serving.predict); ``evaluate`` and the
source and site checks leave such films out for every model alike (:meth:`FilmChecks.in_a_folder`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import CheckpointError
from core.films.film import Film
from core.films.quality import reversed_grey_levels, usability_problems
from core.films.tensor import as_float, film_to_tensor
from core.models.features import FEATURE_SIZE, FeatureExtractor
from core.serving.chest_check import ChestFilmCheck
from core.serving.population import ModelPopulation

log = logging.getLogger(__name__)
TURNED = ("The image looks like a chest film turned on its side or upside down: the model reads upright films. Export "
          "it upright (or as DICOM) and triage that.")
SHARED = "shared"  # FilmChecks(chest_check=SHARED): the process's chest-film check, or none when it cannot be read
# A film whose grey levels look reversed (core.films.quality.reversed_grey_levels) keeps an urgent call, never gets a
# routine one: a review found the default calling 5 of the 8 full-resolution pneumonia films, inverted, routine (the
# logistic model 99.9 % normal), while the check names 1 real film in 5,216 Kermany and 1 in 251 COVID-set films.
REVERSED_NOT_ROUTINE = ("The grey levels look reversed (bone dark, lungs bright), as on a film exported with its grey "
                        "scale inverted: models read such films as normal too often for a routine call (in a test, "
                        "5 of 8 pneumonia films, inverted, read routine). Export the film again as it is viewed, or "
                        "as DICOM, and triage that.")

# Triage's call on such a film depends on the model, so a folder's reading (evaluate, Compare, a site folder, a
# training source) leaves it out for every model alike (a browser review: Compare read one model on 10 films and
# three on 9, one inverted film apart, and could no longer compare them like for like)
REVERSED_LEFT_OUT = ("its grey levels look reversed (bone dark, lungs bright), as on a film exported with its grey "
                     "scale inverted; Triage gives such a film no routine call, only an urgent one, so no model's "
                     "reading of it is counted. Export it again as it is viewed, or as DICOM.")


@dataclass(frozen=True)
class FilmVerdict:
    why: str | None = None  # why Triage would not triage the film; None: it is triaged
    population_warning: str | None = None  # a chest film unlike the model's training films; its priority stays


class FilmChecks:
    """The checks for one model (``population``: its population check, None when its version has none).

    ``chest_check``: a :class:`ChestFilmCheck`; SHARED loads the process's own, and without one (its files missing
    or damaged) Triage still triages every film with a warning, so only the image statistics refuse films
    (:attr:`unscreened`); None is no check; anything else answering ``problem(film)`` stands in for it (tests).
    The population check still reads features without a chest-film check, as Triage's does; without the ImageNet
    weights there are none (:attr:`features_missing`) and it cannot run."""

    def __init__(self, chest_check=SHARED, population: ModelPopulation | None = None):
        self.unscreened = False
        if chest_check == SHARED:
            try:
                chest_check = ChestFilmCheck.shared()
            except CheckpointError as exc:
                log.warning("films checked without the chest-film check (image statistics only): %s", exc)
                chest_check, self.unscreened = None, True
        self.check, self.population = chest_check, population
        self._extractor: FeatureExtractor | None = None
        self.features_missing = False

    @staticmethod
    def statistics(film: Film) -> str | None:
        """Why the image statistics refuse ``film``, or None (then the learned checks)."""
        problems = usability_problems(film)
        return " ".join(problems) if problems else None

    @classmethod
    def in_a_folder(cls, film: Film) -> str | None:
        """Why a folder's reading leaves ``film`` out before any model reads it: the image statistics, or grey
        levels that look reversed (:data:`REVERSED_LEFT_OUT`); None: on to the learned checks."""
        return cls.statistics(film) or (REVERSED_LEFT_OUT if reversed_grey_levels(film) else None)

    @property
    def needs_features(self) -> bool:
        """Whether the learned checks read features: a chest-film check's own, or a population check's."""
        return isinstance(self.check, ChestFilmCheck) or self.population is not None

    @staticmethod
    def feature_input(film: Film, tensor: torch.Tensor | None = None, size: int | None = None) -> torch.Tensor:
        """The film as the learned checks read it, uint8 (``tensor``, the model's own input, when it is ``size``
        = FEATURE_SIZE)."""
        return tensor if tensor is not None and size == FEATURE_SIZE else film_to_tensor(film, FEATURE_SIZE)

    def extractor(self) -> FeatureExtractor | None:
        """The features' network (the chest-film check's own when there is one); None without its weights."""
        if self._extractor is None and not self.features_missing:
            try:
                self._extractor = (self.check.extractor if isinstance(self.check, ChestFilmCheck)
                                   else FeatureExtractor.shared())
            except CheckpointError as exc:  # its words name packages and commands: for the log, not a clinician
                log.warning("population check unavailable: %s", exc)
                self.features_missing = True
        return self._extractor

    def _turned(self, whys: list[str | None], inputs: list[torch.Tensor]) -> list[str | None]:
        """``whys`` with the refusal of a film that passes the chest-film check once turned a quarter or a half turn
        said as such (a browser review: a film on its side was told only that it did not look like a chest film).
        Measured: the 16 full-resolution films pass upright and none on its side; none of 93 images that are not
        chest films passes turned. The film stays untriaged: the model reads upright films."""
        refused = [i for i, why in enumerate(whys) if why]
        if not refused:
            return whys
        turned = torch.stack([torch.rot90(inputs[i], k, dims=(1, 2)) for i in refused for k in (1, 2, 3)])
        passes = np.array([why is None for why in self.check.problems_of(self.check.extractor.tensors(turned))])
        whys = list(whys)
        for n, i in enumerate(refused):
            if passes[3 * n: 3 * n + 3].any():
                whys[i] = TURNED
        return whys

    def learned(self, films: list[Film | None], inputs: list[torch.Tensor]) -> list[FilmVerdict]:
        """The verdicts of films that passed the image statistics: the chest-film check, then, for chest films, the
        population check. ``inputs``: each film's :meth:`feature_input`, empty where the checks read no features;
        ``films`` (None where not kept) serve a stand-in check only."""
        if not films and not inputs:  # every film of a batch refused before (a re-read: a ValueError here)
            return []
        features = None
        if self.needs_features and (extractor := self.extractor()) is not None:
            # a few films at a time: a model's GPU batch of 512 went through the CPU extractor at once (a re-read);
            # a lone film runs alone, not paired with itself as the feature cache's batches are: 11 ms a film, not 26
            batch = torch.stack(inputs)
            features = extractor(as_float(batch)) if len(batch) == 1 else extractor.tensors(batch)
        if isinstance(self.check, ChestFilmCheck):
            whys = self._turned(self.check.problems_of(features), inputs)
        else:
            whys = [self.check.problem(film) if self.check is not None else None for film in films]
        return [FilmVerdict(why, None if why or features is None or self.population is None
                            else self.population.warning(features[i:i + 1])) for i, why in enumerate(whys)]
