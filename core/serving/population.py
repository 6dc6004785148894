"""Is this film from the population this model was trained on? The per-model check, read at prediction.

The chest-film check (core.serving.chest_check) asks whether an image is a chest film at all and withholds the
priority when it is not. This check asks something else: whether a real chest film looks like the films *this
model* learnt from (a paediatric model shown an adult film, a film from another kind of detector). Such a film
**keeps its priority** (a missed tuberculosis is worse than a flagged doubt) and gets a warning beside it.

Fitted when the model is trained (core.training.population) and stored with its checkpoint
(core.store.checkpoints); a version without one is simply not checked. Both checks read the same features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.models.features import GaussianScore
from core.store.checkpoints import LoadedModel
from core.store.records import PopulationCheck

WARNING = ("This film does not look like the films this model was trained on ({population}); read its result "
           "with caution.")


@dataclass(frozen=True)
class ModelPopulation:
    """One model's population check: its description (threshold, population in words) and its score."""

    check: PopulationCheck
    score: GaussianScore

    @classmethod
    def of(cls, loaded: LoadedModel) -> "ModelPopulation | None":
        """The loaded model's check, or None when the version has none (not checked)."""
        if loaded.population is None or loaded.record.population_check is None:
            return None
        return cls(loaded.record.population_check, loaded.population)

    def distance(self, features: np.ndarray) -> float:
        """The film's score (its 1280 ImageNet features, core.models.features): higher is further away."""
        return float(self.score.scores(features)[0])

    def warning(self, features: np.ndarray) -> str | None:
        """The sentence shown beside the result when the film lies outside the population, else None."""
        if self.distance(features) > self.check.threshold:
            return WARNING.format(population=self.check.population)
        return None
