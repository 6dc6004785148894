"""Which films of an evaluated folder Triage would leave untriaged, so that ``evaluate`` and Compare leave them out
of the figures and list them (a review: a blank 7000x7000 PNG and a CT in a PNEUMONIA folder were scored as
routine misses, and sensitivity fell from 1.000 to 0.929 without a word). The checks are the ones
core.serving.predict withholds a priority with: image statistics (core.films.quality), then the chest-film check,
here a batch at a time, on the same features a model's population check reads. Nothing is kept between
evaluations: every shipped model has a population check, which reads every film's features anyway (a re-read: a
per-file verdict memo saved nothing for them, and held up to 50 MB in the server)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from core.errors import CheckpointError
from core.films.film import Film
from core.films.quality import usability_problems
from core.films.read import shown_name
from core.films.tensor import film_to_tensor
from core.models.features import FEATURE_SIZE, FeatureExtractor

log = logging.getLogger(__name__)



def left_out(path: Path, why: str) -> str:
    """A film's line among the skipped: its name, that it is out of the figures, and why."""
    return f"{shown_name(path.name)} would not be triaged, so it is left out of the figures: {why}"


class FolderScreen:
    """Triage's film checks for one evaluation. Without a chest-film detector (its files missing or damaged),
    Triage still triages every film with a warning, so only the image statistics leave films out here (said:
    :attr:`unscreened`); the features a model's population check reads are still computed, as Triage computes
    them (``extractor``: None only without the ImageNet weights)."""

    def __init__(self):
        from core.serving.chest_check import ChestFilmCheck

        self.unscreened = False
        try:
            self.check = ChestFilmCheck.shared()
            self.extractor = self.check.extractor
        except CheckpointError as exc:
            log.warning("evaluation without the chest-film check (image statistics only): %s", exc)
            self.check, self.unscreened = None, True
            try:
                self.extractor = FeatureExtractor.shared()
            except CheckpointError:
                self.extractor = None

    def statistics(self, film: Film) -> str | None:
        """Why the image statistics refuse ``film``, or None (then the chest-film check, when there is one)."""
        problems = usability_problems(film)
        return " ".join(problems) if problems else None

    def needs_features(self, population: bool) -> bool:
        """Whether films' features are to be computed: for the chest-film check, or a population check."""
        return self.extractor is not None and (self.check is not None or population)

    @staticmethod
    def feature_input(film: Film, tensor: torch.Tensor, size: int) -> torch.Tensor:
        """The film as the chest-film check reads it (the model's own input when that is the same size)."""
        return tensor if size == FEATURE_SIZE else film_to_tensor(film, FEATURE_SIZE)

    def features(self, inputs: list[torch.Tensor]) -> np.ndarray:
        """The film checks' features of each uint8 input, a few at a time (a model's batch on a GPU is 512 films,
        several GB at once here: a re-read): the chest-film check and a model's population check both read them."""
        return self.extractor.tensors(torch.stack(inputs))

    def verdicts(self, features: np.ndarray) -> list[str | None]:
        """The chest-film check's reason for each film (None: a chest film, or no check to ask)."""
        return self.check.problems_of(features) if self.check is not None else [None] * len(features)
