"""Kermany-type films from another collection (#13): a real-film check of how a pneumonia model travels.

``shared-data/covid-3class/train`` keeps, beside its adult COVID-19 films, 70 ``Normal`` and 70 ``Viral
Pneumonia`` films of the Kermany kind (paediatric, Guangzhou): gathered by another dataset (the Kaggle "Covid-19
Image Dataset") and re-encoded there at 640 x 640, so they come from another batch, another selection and another
resampling than the 224-px training copy. Read as NORMAL and PNEUMONIA, minus every near-duplicate of a film of
the model's own training folder (core.films.copies.copies_of: 5 of the normals for ``kermany-224/train``), they
are films none of its training or validation saw. The collection holds three films twice (``Normal/019`` and
``020``, ``093`` and ``094``, ``Viral Pneumonia/019`` and ``020``, byte for byte): each is counted once, so a
repeated film neither counts double in a figure nor narrows its interval (a review). Unlike the held-out batch,
they still separate the shipped models (AUC 0.83-0.98), and unlike the tighter framing they are not synthetic.

Read it with its limits: the pneumonias are all viral (most of Kermany's are bacterial, and viral ones are harder
to see), so sensitivity here is lower than on a full set; about 130 films give wide intervals; and the collection
does not say which Kermany films it took, so some may belong to the official test split the project measures on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.config import settings
from core.films.bounds import FILM_SUFFIXES
from core.films.folders import FilmSet
from core.films.roots import SHARED_ROOT
# The key of its report in ModelRecord.other_reports; core.training.other_reports also reads the films framed 15 %
# tighter (OTHER_COLLECTION_FRAMED): the two readings bound what a new site may see (core.evaluation.site_range).
from core.store.reports import OTHER_COLLECTION
from core.films.copies import copies_of, film_signatures, first_of_each, near_duplicates

FOLDER = Path("covid-3class") / "train"  # under the shared data folder (settings().data)
CLASS_FOLDERS = (("NORMAL", "Normal"), ("PNEUMONIA", "Viral Pneumonia"))
CLASSES = tuple(name for name, _ in CLASS_FOLDERS)


def collection_films(training_folder: FilmSet) -> tuple[FilmSet, int, int] | None:
    """The collection's films as NORMAL / PNEUMONIA without the copies of ``training_folder``'s films and with
    each film the collection repeats counted once, how many copies were left out and how many repeats; None when
    the shared data folder does not hold the collection."""
    root = settings().data / FOLDER
    if not all((root / folder).is_dir() for _, folder in CLASS_FOLDERS):
        return None
    paths, labels = [], []
    for label, (_, folder) in enumerate(CLASS_FOLDERS):
        films = sorted(p for p in (root / folder).iterdir() if p.is_file() and p.suffix.lower() in FILM_SUFFIXES)
        paths += films
        labels += [label] * len(films)
    if not paths:
        return None
    films = FilmSet(tuple(paths), np.asarray(labels, dtype=np.int64), CLASSES, (FOLDER.parts[0],) * len(paths))
    signatures = film_signatures(films.paths)  # read once, for both checks
    copies = copies_of(films, training_folder, signatures)
    kept = np.flatnonzero(~copies)
    films = films.subset(kept)
    repeats = _repeats(films, tuple(part[kept] for part in signatures))
    return films.subset(np.flatnonzero(~repeats)), int(copies.sum()), int(repeats.sum())


def _repeats(films: FilmSet, signatures: tuple) -> np.ndarray:
    """Which of ``films`` near-duplicate an earlier one (all of a group but its first; a film nothing reads is no
    repeat)."""
    repeats = np.ones(len(films), dtype=bool)
    pairs = near_duplicates(films, np.ones(len(films), dtype=bool), signatures).pairs
    repeats[first_of_each(len(films), pairs)] = False
    return repeats


def collection_description(films: FilmSet, copies: int, repeats: int, key: str = OTHER_COLLECTION) -> str:
    normal, pneumonia = films.class_counts()
    return (f"{key}: {len(films)} Kermany-type paediatric films from another collection "
            f"({SHARED_ROOT}/{FOLDER.as_posix()}: {normal} normal, {pneumonia} viral pneumonia, re-encoded at "
            f"640 px), {copies} copies of training-folder films left out, "
            f"{repeats} film{'s' if repeats != 1 else ''} it holds twice counted once")
