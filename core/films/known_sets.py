"""What the project knows about the shared data sets' films, by a FilmSet's source (its folder's name): their
population in words, and the shortcut a model trained on one can take instead of reading the film.

No imports: the dashboard's model card reads it before torch is up.
"""
from __future__ import annotations

from pathlib import PurePath
from typing import Any, Iterable

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


# The class a shortcut makes a model call, with what a film's card says when it does (a browser review: an adult's
# DICOM from 2004 read "Urgent, COVID-19 71 %" on Triage, the shortcut said only on the model card).
SHORTCUT_CALLS = {
    "covid-3class": {"COVID-19": (
        "This model learnt COVID-19 from adults' films only, and normal and viral-pneumonia films from children's: it "
        "may call a film COVID-19 for being an adult's. Read this film yourself before acting on the call.")},
}


def training_sources(record: Any) -> list[str]:
    """The shared sets a version (a core.store.records.ModelRecord) was trained on: its population check's sources,
    else its training folder's name."""
    check = record.population_check
    if check is not None and check.sources:
        return list(check.sources)
    if record.training is not None:
        parts = PurePath(record.training.data_dir).parts
        return [parts[-2]] if len(parts) >= 2 else []
    return []


def shortcut_calls(sources: Iterable[str]) -> dict[str, str]:
    """Class -> what a film's card says when it is called that class, for the shortcuts ``sources`` allow."""
    return {name: words for source in sources for name, words in SHORTCUT_CALLS.get(source, {}).items()}


def known_shortcuts(sources: Iterable[str]) -> list[str]:
    """The shortcuts the training sources ``sources`` allow, in words, each once."""
    return list(dict.fromkeys(KNOWN_SHORTCUTS[s] for s in sources if s in KNOWN_SHORTCUTS))
