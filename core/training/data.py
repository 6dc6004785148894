"""Training data: patient-disjoint stratified split, class weights, and the fingerprint of the films seen."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from core.errors import DatasetError
from core.films.folders import FilmSet
from core.store.records import Fingerprint

# Kermany names carry the patient: personNNN_bacteria_MMM / IM-NNNN-MMMM / NORMAL2-IM-NNNN-MMMM.
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)


def patient_id(path: Path) -> str:
    """The patient a film belongs to; films with no recognisable pattern are their own patient."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(path.name)
        if match:
            return match.group(1).upper()
    return f"{path.parent.name}/{path.stem}"


def patient_split(films: FilmSet, val_fraction: float = 0.2, seed: int = 0) -> tuple[FilmSet, FilmSet]:
    """Stratified train/validation split that keeps every patient on one side."""
    # Stratified group folds give a fraction of 1/k; refuse fractions that would silently become another.
    n_splits = round(1 / val_fraction) if 0.0 < val_fraction < 0.5 else 0
    if n_splits < 2 or abs(1 / n_splits - val_fraction) > 0.02:
        raise ValueError(f"val_fraction must be 1/k for a whole k >= 3 (e.g. 0.1, 0.2, 0.25), not {val_fraction}")
    groups = np.array([patient_id(p) for p in films.paths])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_index, val_index = next(folds.split(np.zeros(len(films)), films.labels, groups))
    train, val = films.subset(train_index), films.subset(val_index)
    if min(val.class_counts()) == 0:
        raise DatasetError("The validation split has a class with no films; add films or use a larger fraction.")
    return train, val


def class_weights(films: FilmSet) -> torch.Tensor:
    """Inverse-frequency weights, normalised so the average weighted film counts 1."""
    counts = np.maximum(np.asarray(films.class_counts(), dtype=np.float64), 1.0)
    weights = len(films) / (len(counts) * counts)
    return torch.tensor(weights, dtype=torch.float32)


def fingerprint(films: FilmSet) -> Fingerprint:
    """Identifies the data a model saw without copying it: names, sizes and labels hashed."""
    digest = hashlib.sha256()
    for path, label in zip(films.paths, films.labels):
        digest.update(f"{films.classes[label]}/{path.name}:{path.stat().st_size}\n".encode())
    return Fingerprint(n=len(films), class_counts=dict(zip(films.classes, films.class_counts())),
                       sha256=digest.hexdigest())
