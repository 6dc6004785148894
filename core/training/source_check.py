"""Do a training source's films look like chest films? Triage's own checks (image statistics, then the
chest-film detector, core.serving.chest_check) on a seeded sample of its films, class by class, so that an
administrator learns before an hour of training that a folder holds something else (found in a browser audit:
``shared-data/tb/train`` holds noise textures, which Triage leaves untriaged, and the Retrain page trained on them
without a word). A sample, not a census: it is there to catch a wrong folder, not a stray film."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import TriageError
from core.films.folders import FilmSet
from core.films.read import read_film

SAMPLE = 12  # films checked, spread over the classes; about a second of features on a 2-core CPU


@dataclass(frozen=True)
class SampleCheck:
    checked: int  # films of the sample that could be read
    not_chest: int  # of those, how many Triage would leave untriaged
    unreadable: int  # films of the sample that could not be read at all
    unscreened: bool = False  # the chest-film check could not be loaded: only image statistics counted


def check_sample(films: FilmSet, n: int = SAMPLE, seed: int = 0) -> SampleCheck:
    """Triage's film checks on ``n`` films drawn from ``films`` (as evenly over the classes as they allow)."""
    verdicts = untriaged(films, _sample(films, n, seed))
    checked = [v for v in verdicts.not_chest if v is not None]
    return SampleCheck(len(checked), sum(checked), len(verdicts.not_chest) - len(checked), verdicts.unscreened)


@dataclass(frozen=True)
class Verdicts:
    not_chest: list[bool | None]  # per film asked about: Triage would leave it untriaged; None: unreadable
    unscreened: bool  # the chest-film check could not be loaded: only image statistics counted


def untriaged(films: FilmSet, indices: list[int], batch: int = 32) -> Verdicts:
    """Whether Triage would leave each of ``films`` at ``indices`` untriaged: its film checks
    (core.serving.film_checks), a batch of films at a time; and, as ``evaluate`` does, a film whose grey levels look
    reversed (Triage gives it no routine call, only an urgent one)."""
    from core.serving.film_checks import FilmChecks

    checks = FilmChecks()
    verdicts: list[bool | None] = []
    for start in range(0, len(indices), batch):
        chunk: list[str | None | bool] = []  # why the statistics refuse a film, None if they do not, False: unreadable
        inputs = []  # of the films the statistics pass: only their small copies are kept, not full-size films
        for index in indices[start:start + batch]:
            try:
                film = read_film(films.paths[index])
            except TriageError:
                chunk.append(False)
                continue
            # reversed grey levels too, as evaluate leaves such a film out (a re-read: a site folder of inverted
            # exports chose its threshold on films Triage gives no routine call)
            chunk.append(checks.in_a_folder(film))
            if chunk[-1] is None and checks.needs_features:
                inputs.append(checks.feature_input(film))
        passed = [i for i, why in enumerate(chunk) if why is None]
        learned = checks.learned([None] * len(passed), inputs)
        for i, verdict in zip(passed, learned):
            chunk[i] = verdict.why
        verdicts += [None if why is False else why is not None for why in chunk]
    return Verdicts(verdicts, checks.unscreened)


def _sample(films: FilmSet, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(films.labels == k)).tolist() for k in range(len(films.classes))]
    chosen: list[int] = []
    while len(chosen) < min(n, len(films)):  # one film of each class in turn
        for members in by_class:
            if members and len(chosen) < n:
                chosen.append(members.pop())
    return sorted(chosen)
