"""Class-folder trees of films (``ROOT/CLASS/*`` or ``ROOT/split/CLASS/*``): which films, with which labels.

Class folders are read through the alias table of core.tasks (``Covid`` and ``COVID19`` are ``COVID-19``,
``TURBERCULOSIS`` is ``TUBERCULOSIS``), so a set is read exactly as it was downloaded and the classes are
always the canonical names, in alphabetical order. A root holding ``train/``, ``val/`` and ``test/`` folders
(the Kaggle layout) is read at the split asked for; training reads ``train/`` by default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from core.errors import DatasetError
from core.films.bounds import FILM_SUFFIXES  # the formats uploads accept, deliberately the same for training
from core.films.roots import inside_roots
from core.tasks import KNOWN_CLASSES, canonical_class

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FilmSet:
    """A list of films with integer labels; ``classes[label]`` is the class name and ``sources[i]`` (when
    known) the set film ``i`` came from (``kermany-224``, ``tb``, ...), for figures per source."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    sources: tuple[str, ...] | None = None
    # files found in its class folders that are links leading outside the data roots, never read (core.films.roots):
    # named where films left out are listed, so that the counts add up (a review: they were only in the server log)
    links_out: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: np.ndarray) -> "FilmSet":
        sources = None if self.sources is None else tuple(self.sources[i] for i in index)
        return FilmSet(tuple(self.paths[i] for i in index), self.labels[index], self.classes, sources)

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()

    def subset_counts(self, max_films: int | None) -> list[int]:
        """Films per class a subset of ``max_films`` keeps (core.training.train.maybe_subset): each class its share
        of the whole, at least two, at most what it holds; every film without a maximum below the total."""
        counts = self.class_counts()
        if not max_films or max_films >= len(self):
            return counts
        return [min(max(2, round(max_films * n / len(self))), n) for n in counts]

    def in_classes(self, classes: tuple[str, ...]) -> "FilmSet":
        """The same films labelled in ``classes`` (which must hold every class that has films here)."""
        missing = [c for c, n in zip(self.classes, self.class_counts()) if n and c not in classes]
        if missing:
            raise DatasetError(f"Class(es) {', '.join(missing)} are not among {', '.join(classes)}.")
        mapping = np.array([classes.index(c) if c in classes else -1 for c in self.classes], dtype=np.int64)
        return FilmSet(self.paths, mapping[self.labels], tuple(classes), self.sources)

    def joined(self, other: "FilmSet") -> "FilmSet":
        """This set followed by ``other`` (in the same classes)."""
        if other.classes != self.classes:
            other = other.in_classes(self.classes)
        sources = None if self.sources is None or other.sources is None else self.sources + other.sources
        return FilmSet(self.paths + other.paths, np.concatenate([self.labels, other.labels]), self.classes, sources)


def refuse_unnamed(source: str | Path) -> None:
    """DatasetError for an empty name: ``Path("")`` is the working directory, whose folders nobody meant."""
    if isinstance(source, str) and not source.strip():
        raise DatasetError("Name the dataset folder: one sub-folder of films per class.")


def split_folders(root: str | Path) -> tuple[str, ...]:
    """The split folders (``train``, ``val``, ``test``) that ``root`` holds, in that order."""
    root = Path(root)
    try:
        return tuple(name for name in SPLITS if (root / name).is_dir())
    except OSError as exc:  # a name too long, a folder this process may not read
        raise _unreadable(root, exc) from None


def _unreadable(root: Path, exc: OSError) -> DatasetError:
    return DatasetError(f"Dataset folder {root} cannot be read ({exc.strerror or type(exc).__name__}); check the "
                        "path and that this server may read it.")


def evaluation_split(root: str | Path, split: str | None = None) -> str | None:
    """The split an evaluation of ``root`` reads: the one asked for, else ``test`` when ROOT has split folders
    (evaluating on training films would say nothing), else None (ROOT/CLASS/*)."""
    return split or ("test" if split_folders(root) else None)


def discover(root: str | Path, split: str | None = None, min_classes: int = 2) -> FilmSet:
    """Read ``ROOT/CLASS/*`` or, when ``split`` is given or ROOT holds split folders, ``ROOT/split/CLASS/*``
    (``train`` by default). Training needs two classes at least; an evaluation folder may hold fewer
    (``min_classes=1``). Every film's source is the folder's name (the dataset's, above its split folder)."""
    refuse_unnamed(root)
    root = Path(root)
    try:
        return _discover(root, split, min_classes)
    except OSError as exc:
        raise _unreadable(root, exc) from None
    except RecursionError:  # Path.rglob recurses (Python 3.11): a hostile tree of 1000 nested folders
        raise DatasetError(f"{root.name}: its folders are nested too deeply to be read (1000 levels or more); a "
                           "dataset holds one sub-folder per class, with films in it or a few levels below.") from None


def _discover(root: Path, split: str | None, min_classes: int) -> FilmSet:
    if not root.is_dir():
        if root.exists():
            raise DatasetError(f"{root} is a file; name the dataset folder that holds one sub-folder per class.")
        raise DatasetError(f"Dataset folder {root} does not exist.")
    present = split_folders(root)
    if split is None and present:
        split = "train"
    base = root / split if split else root
    if not base.is_dir():
        if not present:
            raise DatasetError(f"{root} has no split folders ({', '.join(SPLITS)}); leave the split out to read "
                               "its class folders.")
        raise DatasetError(f"{root} has no '{split}' folder (it has {', '.join(f'{s}/' for s in present)}); "
                           "choose a split it has.")
    folders = _class_folders(base)
    classes = tuple(sorted(folders))
    paths, labels, links_out, seen = [], [], [], {}
    for label, name in enumerate(classes):
        found = films_under(folders[name])
        films = inside_roots(root, found)
        links_out += sorted(set(found) - set(films))
        for film in films:  # a film reached twice (a linked folder or film) is read once, and under one class
            facts = film.stat()  # the file itself, whatever name reached it (a stat, a ninth of resolve's cost)
            real = (facts.st_dev, facts.st_ino)
            if real in seen and seen[real] != name:
                raise DatasetError(f"{base} reaches the same film from class folders {seen[real]} and {name} "
                                   "(through a link): it would be read under two classes. Give each class its "
                                   "own films.")
            if real not in seen:
                seen[real] = name
                paths.append(film)
                labels.append(label)
    why = (f" {len(links_out)} film file(s) there are links leading outside the data roots, which are never read."
           if links_out else "")
    if len(classes) < min_classes or not paths:
        needs = "at least two sub-folders (one per class)" if min_classes > 1 else "one sub-folder per class"
        raise DatasetError(f"{base} is not a class-folder tree: it needs {needs} holding films (files named "
                           f"{', '.join(sorted(FILM_SUFFIXES))}; a DICOM without a suffix is not looked at).{why}")
    empty = [folders[c] for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if n == 0]
    locked = [folder.name for folder in empty if not os.access(folder, os.R_OK | os.X_OK)]
    if locked:  # a folder this server may not list looks empty: say which it is (found by a CLI audit)
        raise DatasetError(f"Class folder(s) {', '.join(locked)} in {base} cannot be read by this server "
                           "(permission denied); ask an administrator to let it read them.")
    if empty:
        raise DatasetError(f"Class folder(s) {', '.join(f.name for f in empty)} in {base} hold no films.{why}")
    source = root.name if root.name not in SPLITS else root.parent.name  # ROOT/train given: the dataset's name
    return FilmSet(tuple(paths), np.asarray(labels, dtype=np.int64), classes, (source,) * len(paths), tuple(links_out))


def films_under(folder: Path) -> list[Path]:
    """The film files under ``folder``, at any depth, sorted: by suffix (core.films.bounds), hidden files and
    folders left out (a review: a Mac's ._x.jpeg and a viewer's .thumbs/ were read as films)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FILM_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_folders(base: Path) -> dict[str, Path]:
    """Each class (canonical name) -> its folder; an unknown folder, or two folders of one class, is refused."""
    folders = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = [d.name for d in folders if canonical_class(d.name) is None]
    if unknown:
        raise DatasetError(
            f"Class folder(s) {', '.join(repr(n) for n in unknown)} in {base} are not a class we know; name each "
            f"class folder after one of {', '.join(KNOWN_CLASSES)} (case, spaces, '-' and '_' do not matter; "
            "Covid, COVID19, TURBERCULOSIS and TB are read too), or move it out.")
    found: dict[str, Path] = {}
    for folder in folders:
        name = canonical_class(folder.name)
        if name in found:
            raise DatasetError(f"Folders {found[name].name} and {folder.name} in {base} both hold {name}; put its "
                               "films in one folder.")
        found[name] = folder
    return found


def refuse_unknown_homes(values: Iterable[object]) -> None:
    """DatasetError for the first ``~user`` path among ``values`` (or in a list among them) whose user this computer
    does not know (a review: Python's RuntimeError deep in a command was answered as a fault in the program)."""
    for text in (text for value in values for text in (value if isinstance(value, list) else [value])):
        if isinstance(text, str) and text.startswith("~"):
            try:
                Path(text).expanduser()
            except RuntimeError:
                raise DatasetError(f"{text.split('/')[0]} is the home folder of a user this computer does not know, "
                                   "so the path cannot be read; give the folder's full path.") from None
