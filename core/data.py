"""Class-folder datasets: discovery, patient-disjoint stratified split, decode-once tensors, class weights."""
from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from core.errors import DatasetError, TriageError
from core.films import read_film
from core.preprocess import film_to_tensor

FILM_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"}

# Kermany names carry the patient: personNNN_bacteria_MMM / IM-NNNN-MMMM / NORMAL2-IM-NNNN-MMMM.
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)


@dataclass(frozen=True)
class FilmSet:
    """A list of films with integer labels; ``classes[label]`` is the class name."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: np.ndarray) -> "FilmSet":
        return FilmSet(tuple(self.paths[i] for i in index), self.labels[index], self.classes)

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


def discover(root: str | Path, split: str | None = None) -> FilmSet:
    """Read ``ROOT/CLASS/*`` or, when ``split`` is given or ROOT holds split folders, ``ROOT/split/CLASS/*``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset folder {root} does not exist.")
    if split is None and (root / "train").is_dir() and not _has_films(root / "train"):
        split = "train"
    base = root / split if split else root
    if not base.is_dir():
        raise DatasetError(f"{root} has no '{split}' folder.")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        films = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in FILM_SUFFIXES)
        paths += films
        labels += [label] * len(films)
    classes = tuple(d.name for d in class_dirs)
    if len(classes) < 2 or not paths:
        raise DatasetError(
            f"{base} is not a class-folder tree: it needs at least two sub-folders (one per class) holding films."
        )
    empty = [c for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if n == 0]
    if empty:
        raise DatasetError(f"Class folder(s) {', '.join(empty)} in {base} hold no films.")
    return FilmSet(tuple(paths), np.asarray(labels, dtype=np.int64), classes)


def _has_films(folder: Path) -> bool:
    return any(p.suffix.lower() in FILM_SUFFIXES for p in folder.iterdir() if p.is_file())


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


def fingerprint(films: FilmSet) -> dict:
    """Identifies the data a model saw without copying it: names, sizes and labels hashed."""
    digest = hashlib.sha256()
    for path, label in zip(films.paths, films.labels):
        digest.update(f"{films.classes[label]}/{path.name}:{path.stat().st_size}\n".encode())
    return {"n": len(films), "class_counts": dict(zip(films.classes, films.class_counts())),
            "sha256": digest.hexdigest()}


def load_tensors(films: FilmSet, image_size: int, workers: int = 2, on_progress=None) -> torch.Tensor:
    """Decode every film once through the app's own path into an N x 1 x S x S uint8 tensor.

    Films are 8-bit sources here, so uint8 keeps a 5,000-film set at 224 px in ~250 MB instead of 1 GB.
    Unreadable films raise DatasetError naming the file.
    """
    out = torch.empty((len(films), 1, image_size, image_size), dtype=torch.uint8)

    def decode(i: int) -> None:
        try:
            tensor = film_to_tensor(read_film(films.paths[i]).pixels, image_size)
        except TriageError as exc:
            raise DatasetError(f"Cannot use {films.paths[i]}: {exc}") from exc
        out[i] = (tensor * 255.0).round().to(torch.uint8)

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done, _ in enumerate(pool.map(decode, range(len(films))), 1):
            if on_progress and (done % 200 == 0 or done == len(films)):
                on_progress(done, len(films))  # may raise to cancel: pending decodes are dropped below
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out
