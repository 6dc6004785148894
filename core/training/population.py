"""Fitting a model's population check: is a film from the population this model was trained on?

A Gaussian (Mahalanobis/PCA) score on the films' ImageNet EfficientNet-Lite0 features (core.models.features),
fitted on the model's own training films (a seeded sample of at most ``MAX_FIT_FILMS``), with its threshold at
the ``QUANTILE`` of its validation films' scores: about 2 % of films from the training population warn, by
design, and the measured rate is stored. Fitted by training (core.training.train), by ensembles on their
members' training films, and for an existing version by ``python -m core fit-population NAME``
(core.training.fit_population). It is read at
prediction by core.serving.population; a warned film keeps its priority.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from core.config import settings
from core.errors import CheckpointError, DatasetError, FolderNotAllowed
from core.films.folders import FilmSet
from core.films.known_sets import KNOWN_POPULATIONS  # the shared sets' populations in words
from core.films.roots import folder_label
from core.models.features import FilmFeatures, GaussianScore
from core.store.records import NO_POPULATION_CHECK, PopulationCheck

MAX_FIT_FILMS = 1500  # a sample this size fixes the Gaussian; more only costs minutes of features
MAX_VALIDATION_FILMS = 1000
COMPONENTS = 64
QUANTILE = 0.98  # about 2 % of the training population warns: the price of warning on most adult films
# Below these, the check is not fitted (a CLI review: 18 training films gave 18 axes and a threshold of 9.6
# million, stored without a word): the 98th percentile needs 20 validation films to mean more than their largest.
MIN_FIT_FILMS, MIN_VALIDATION_FILMS = 100, 20


def fit_population_check(train_set: FilmSet, val_set: FilmSet, data_dir: str | Path, seed: int = 0,
                         on_progress: Callable[[str], None] | None = None,
                         features: FilmFeatures | None = None) -> tuple[GaussianScore, PopulationCheck]:
    """The score fitted on (a sample of) ``train_set`` and its description, thresholded on ``val_set``.
    CheckpointError when the ImageNet features are unavailable."""
    features = features or FilmFeatures()  # first: missing feature weights are the wider fault to say
    if len(train_set) < MIN_FIT_FILMS or len(val_set) < MIN_VALIDATION_FILMS:
        raise TooFewFilms(f"{len(train_set)} training and {len(val_set)} validation films are too few to fit it: "
                          f"it needs at least {MIN_FIT_FILMS} and {MIN_VALIDATION_FILMS}")
    fit_films, val_films = _sample(train_set, MAX_FIT_FILMS, seed), _sample(val_set, MAX_VALIDATION_FILMS, seed)
    say = on_progress or (lambda message: None)
    say(f"population check: features of {len(fit_films)} training and {len(val_films)} validation films")
    score = GaussianScore.fit(features(fit_films), COMPONENTS)
    val_scores = score.scores(features(val_films))
    threshold = float(np.quantile(val_scores, QUANTILE))
    check = PopulationCheck(
        population=describe_population(train_set, data_dir), sources=_source_counts(train_set),
        fitted_on=len(fit_films), components=int(score.components.shape[0]), threshold=round(threshold, 4),
        quantile=QUANTILE, validation_films=len(val_films),
        validation_warn_rate=round(float(np.mean(val_scores > threshold)), 4))
    return score, check


def try_fit_population_check(train_set: FilmSet, val_set: FilmSet, data_dir: str | Path, seed: int,
                             on_progress: Callable[[str], None], notes: list[str] | None = None,
                             ) -> tuple[GaussianScore | None, PopulationCheck | None]:
    """Training's call: a version without the check rather than no version, and a note saying why (appended to
    ``notes``, the version's training notes: the card quotes it)."""
    try:
        return fit_population_check(train_set, val_set, data_dir, seed, on_progress)
    except (CheckpointError, DatasetError) as exc:
        # The card shows the note to every user: a film's error names the film (outside the data roots, its
        # server path; at a site, perhaps a patient's name): only the run's own progress says which.
        why = str(exc).rstrip(".") if isinstance(exc, (CheckpointError, TooFewFilms)) else \
            "a training film could not be read again: changed or removed during the run"
        note = f"{NO_POPULATION_CHECK}: it could not be fitted when this version was made ({why})"
        on_progress(f"{NO_POPULATION_CHECK}: it could not be fitted ({str(exc).rstrip('.')}); its films will not be "
                    "checked against it")
        if notes is not None:
            notes.append(note)
        return None, None


class TooFewFilms(DatasetError):
    """Too few films to fit a population check: said in the version's notes, or as fit-population's refusal."""


def describe_population(films: FilmSet, data_dir: str | Path) -> str:
    """The training population in words: the known sources' descriptions, else the folder's data-root label
    (never a server path)."""
    sources = list(_source_counts(films))
    known = list(dict.fromkeys(KNOWN_POPULATIONS[s] for s in sources if s in KNOWN_POPULATIONS))
    others = [s for s in sources if s not in KNOWN_POPULATIONS]
    if not others and known:
        return "; ".join(known)
    try:
        where = folder_label(data_dir)
    except FolderNotAllowed:
        where = Path(data_dir).name
    return "; ".join(known + [f"the films of {where}"])


def _sample(films: FilmSet, limit: int, seed: int) -> FilmSet:
    if len(films) <= limit:
        return films
    return films.subset(np.sort(np.random.default_rng(seed).choice(len(films), limit, replace=False)))


def _source_counts(films: FilmSet) -> dict[str, int]:
    """Training films per source. A source is its folder's name, and only the shared data root's folders are the
    sets core.films.known_sets describes: a source with films elsewhere (a site's own ``films/train``, whatever
    its name) is counted as ``NAME (site)``, so neither the population nor the shortcut of a shared set is read
    into it (a site's ``films`` was described as "paediatric chest films, Guangzhou"; found by a review)."""
    shared = settings().data.resolve()
    sources = films.sources or ("unknown",) * len(films)
    elsewhere = {source for source, path in zip(sources, films.paths)
                 if not Path(path).resolve().is_relative_to(shared)}
    names, counts = np.unique(np.asarray(sources), return_counts=True)
    return {f"{n} (site)" if n in elsewhere else str(n): int(c) for n, c in zip(names, counts)}
