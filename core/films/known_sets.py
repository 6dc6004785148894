"""What the project knows about the shared data sets' films, by a FilmSet's source (its folder's name): their
population in words, and the shortcut a model trained on one can take instead of reading the film.

No imports: the dashboard's model card reads it before torch is up.
"""
from __future__ import annotations

from typing import Iterable

# (shared-data/tb/train is left out: it holds noise textures, not films.)
KNOWN_POPULATIONS = {
    "kermany-224": "paediatric chest films, Guangzhou",
    "films": "paediatric chest films, Guangzhou",
    "covid-3class": "adult COVID-19 films and paediatric chest films (Kaggle COVID-19 image set)",
}

KNOWN_SHORTCUTS = {
    "covid-3class": (
        "Every COVID-19 film of its training set is an adult's, and every normal and viral-pneumonia film a "
        "child's (Kermany-type, Guangzhou): a model trained on it may tell an adult's film from a child's rather "
        "than COVID-19 from a normal chest, and its validation figures, on films of the same set, cannot show "
        "which it learnt. An adult's film without COVID-19 may well be called COVID-19."),
}


def known_shortcuts(sources: Iterable[str]) -> list[str]:
    """The shortcuts the training sources ``sources`` allow, in words, each once."""
    return list(dict.fromkeys(KNOWN_SHORTCUTS[s] for s in sources if s in KNOWN_SHORTCUTS))
