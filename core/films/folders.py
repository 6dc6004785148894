"""Class-folder trees of films (``ROOT/CLASS/*`` or ``ROOT/split/CLASS/*``): which films, with which labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DatasetError
from core.films.bounds import FILM_SUFFIXES  # the formats uploads accept, deliberately the same for training


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
