"""Training data: patient-disjoint split (near-duplicates together), class weights, the fingerprint of the films."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from core.errors import DatasetError, UnreadableImage
from core.films.copies import NO_DUPLICATES, NearDuplicates, copies_of, near_duplicates, pair_graph
from core.films.folders import FilmSet
from core.films.read import shown_name
from core.films.roots import film_label, open_inside_roots
from core.store.records import Fingerprint

# Kermany names carry the patient: personNNN_bacteria_MMM / IM-NNNN-MMMM / NORMAL2-IM-NNNN-MMMM.
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)


def _kermany_patient(name: str) -> str | None:
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1).upper()
    return None


def split_words(paths, share: str, source: str) -> str:
    """How a validation ``share`` of ``source`` was split, in words, by how many of its films' names carry a
    patient (a review: the COVID set's names carry none, yet its split was called patient-disjoint)."""
    named = sum(_kermany_patient(p.name) is not None for p in paths)
    if named == len(paths):
        return f"a patient-disjoint {share} of {source}"
    return (f"a {share} of {source}, patient-disjoint for the {named} of {len(paths)} films whose names carry a "
            "patient, film by film for the rest" if named else
            f"a {share} of {source} split film by film (its names carry no patient; copies of a film together)")


def patient_id(path: Path) -> str:
    """The patient a film belongs to; films with no recognisable pattern are their own patient."""
    return _kermany_patient(path.name) or f"{path.parent.name}/{path.stem}"



def with_patients_of(films: FilmSet, others: FilmSet) -> tuple[FilmSet, FilmSet]:
    """(``films`` less the films of patients who have films in ``others``, those films): a split root's
    ``val/`` films join validation after the split, and their patients' films in ``train/`` must go with them.
    Only names that carry a patient count: ``train/Normal/01.jpeg`` and ``val/Normal/01.png`` are two films."""
    theirs = {_kermany_patient(path.name) for path in others.paths} - {None}
    moved = np.array([_kermany_patient(path.name) in theirs for path in films.paths], dtype=bool)
    return films.subset(np.flatnonzero(~moved)), films.subset(np.flatnonzero(moved))


def without_copies_of(kept: FilmSet, held_out: FilmSet) -> tuple[FilmSet, int]:
    """``kept`` less its films that copy a held-out film (another collection's copy of a held-out Kermany film
    would put that batch in training), and how many went. A named film goes with its patient, so only ``kept``'s
    unnamed films are compared with named held-out ones (a Kermany-named folder is not hashed); an unnamed held-out
    film is looked for among all of ``kept`` (a review: val/PNEUMONIA/01.jpeg copying a named train/ film)."""
    if not len(kept) or not len(held_out):
        return kept, 0
    unnamed_held = any(_kermany_patient(p.name) is None for p in held_out.paths)
    looked = np.flatnonzero([unnamed_held or _kermany_patient(p.name) is None for p in kept.paths])
    if not len(looked):
        return kept, 0
    copies = looked[copies_of(kept.subset(looked), held_out)]
    if not len(copies):
        return kept, 0
    return kept.subset(np.setdiff1d(np.arange(len(kept)), copies)), len(copies)



def film_groups(films: FilmSet) -> tuple[np.ndarray, NearDuplicates]:
    """The group of every film for the split: its patient, and copies of a film with no patient id in its
    name joined to it (with every film of their patients).

    Only groups that hold a film without a recognised patient id can merge, so a set of Kermany-named
    films keeps exactly its patient groups (today's splits, shipped models' validation films, resumes and
    ensembles stay as they are) and is not even hashed.
    """
    known = [_kermany_patient(p.name) for p in films.paths]
    unnamed = np.array([k is None for k in known], dtype=bool)
    ids = [patient_id(p) for p in films.paths]
    if films.sources is not None and len(set(films.sources)) > 1:  # two sets' "Normal/01" are two films
        ids = [f"{s}:{i}" if u else i for i, u, s in zip(ids, unnamed, films.sources)]
    groups = np.array(ids)
    if not unnamed.any():
        return groups, NO_DUPLICATES
    duplicates = near_duplicates(films, unnamed)
    if not len(duplicates.pairs):
        return groups, duplicates
    names, patient = np.unique(groups, return_inverse=True)
    n = len(films)
    same_patient = np.stack([np.arange(n), n + patient], axis=1)  # each film to a node of its patient
    edges = np.concatenate([same_patient, duplicates.pairs])
    _, component = connected_components(pair_graph(n + len(names), edges), directed=False)
    component = component[:n]
    touched = np.unique(component[duplicates.pairs[:, 0]])
    for c in touched:  # a merged group is named by its first patient: deterministic, like the others
        members = np.flatnonzero(component == c)
        groups[members] = min(groups[members])
    return groups, duplicates


def patient_split(films: FilmSet, val_fraction: float = 0.2, seed: int = 0,
                  groups: np.ndarray | None = None) -> tuple[FilmSet, FilmSet]:
    """Stratified train/validation split that keeps every patient, and every group of near-duplicates, on
    one side (``groups``: :func:`film_groups`, computed here when not given)."""
    # Stratified group folds give a fraction of 1/k; refuse fractions that would silently become another.
    n_splits = round(1 / val_fraction) if 0.0 < val_fraction < 0.5 else 0
    if n_splits < 3 or abs(1 / n_splits - val_fraction) > 0.02:  # 0.49 gave two folds, against these words
        raise ValueError(f"val_fraction must be 1/k for a whole k >= 3 (e.g. 0.1, 0.2, 0.25), not {val_fraction}")
    counts = films.class_counts()
    if len(films) and min(counts) < n_splits:  # the folds need a film of every class in each of them
        fewest = int(np.argmin(counts))
        raise DatasetError(f"Class {films.classes[fewest]} has only {counts[fewest]} film"
                           f"{'s' * (counts[fewest] != 1)}; a patient-disjoint validation part of 1/{n_splits} "
                           f"needs at least {n_splits} films of every class (a useful model needs hundreds). Add "
                           "films to that class folder.")
    groups = film_groups(films)[0] if groups is None else groups
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_index, val_index = next(folds.split(np.zeros(len(films)), films.labels, groups))
    train, val = films.subset(train_index), films.subset(val_index)
    if min(val.class_counts()) == 0:
        raise DatasetError(_no_validation_films(films, groups, val))
    return train, val


def _no_validation_films(films: FilmSet, groups: np.ndarray, val: FilmSet) -> str:
    """Why the validation part holds no film of a class: its films belong to too few patients or groups of copies,
    each kept on one side; groups filed under two classes named. A review: one film filed 25 times under each of two
    classes was told "add films or use a larger fraction", on a page with no fraction to set."""
    label = int(np.argmin(val.class_counts()))
    own = np.unique(groups[films.labels == label])
    mixed = [g for g in own if len(np.unique(films.labels[groups == g])) > 1]
    why = (f"its {int(np.sum(films.labels == label))} films belong to {len(own)} patient(s) or group(s) of copies "
           "of a film, each kept whole on one side of the split")
    if mixed:
        members = np.flatnonzero(groups == mixed[0])
        firsts = [members[films.labels[members] == c][0] for c in np.unique(films.labels[members])]  # one a class
        shown = " and ".join(shown_name(f"{films.paths[i].parent.name}/{films.paths[i].name}") for i in firsts)
        why += (f"; {len(mixed)} of them {'holds' if len(mixed) == 1 else 'hold'} films filed under more than one "
                f"class (the same film or patient under two labels: {shown}, say)")
    return (f"The validation part would hold no {films.classes[label]} film: {why}. Add films of other patients to "
            "that class folder, and correct any film filed under two classes.")


def class_weights(films: FilmSet) -> torch.Tensor:
    """Inverse-frequency weights, normalised so the average weighted film counts 1."""
    counts = np.maximum(np.asarray(films.class_counts(), dtype=np.float64), 1.0)
    weights = len(films) / (len(counts) * counts)
    return torch.tensor(weights, dtype=torch.float32)


def content_digest(*sets: FilmSet) -> str:
    """SHA-256 of the films' bytes, in order: what a fingerprint (names, sizes) misses, a film replaced by another
    of the same size (about 0.1 s for 5216 small films from the page cache). Read in pieces, each a regular file
    and no link out of the roots (a FIFO swapped in since the listing hung here: found by a review)."""
    digest = hashlib.sha256()
    for films in sets:
        for path in films.paths:
            try:
                with open_inside_roots(path) as film:
                    digest.update(os.fstat(film.fileno()).st_size.to_bytes(8, "little"))
                    while piece := film.read(1 << 20):
                        digest.update(piece)
            except UnreadableImage as exc:  # a link out of the roots
                raise DatasetError(f"Cannot use {film_label(path)}: {exc}") from None
            except OSError as exc:  # unreadable to the server's account, or removed since its folder was read
                raise DatasetError(f"Cannot use {film_label(path)}: {path.name} cannot be read "
                                   f"({exc.strerror or type(exc).__name__}). Take it out of the folder or make it "
                                   "readable.") from None
    return digest.hexdigest()


def fingerprint(films: FilmSet) -> Fingerprint:
    """Identifies the data a model saw without copying it: names, sizes and labels hashed (and each film's
    source, when the films come from several: one folder's fingerprints stay what they always were)."""
    several = films.sources is not None and len(set(films.sources)) > 1
    digest = hashlib.sha256()
    for i, (path, label) in enumerate(zip(films.paths, films.labels)):
        source = f"{films.sources[i]}:" if several else ""
        try:
            size = path.stat().st_size
        except OSError as exc:  # removed or renamed since its folder was read (a site folder, mid-calibration)
            raise DatasetError(f"Cannot use {film_label(path)}: {path.name} cannot be read "
                               f"({exc.strerror or type(exc).__name__}). Put it back, or run again.") from None
        digest.update(f"{source}{films.classes[label]}/{path.name}:{size}\n".encode(errors="surrogateescape"))
    return Fingerprint(n=len(films), class_counts=dict(zip(films.classes, films.class_counts())),
                       sha256=digest.hexdigest())
