"""A site's own labelled films for recalibration: a class-folder tree inside a data root, read in the model's classes.

The folder is named by its data-root label (``root/relative``, core.films.roots) and every message names it
that way, never by its server path. Its class folders must be the model's classes (any spelling of case:
``Normal`` is ``NORMAL``), each holding at least the promotion floor's films per class
(core.store.promotion.floor_for): a threshold chosen on fewer films than a default must be validated on would
be a promise nobody could check.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DatasetError, FolderNotAllowed
from core.films.folders import FilmSet, discover
from core.films.roots import folder_label, resolve_label
from core.store.promotion import floor_for


@dataclass(frozen=True)
class SiteFolder:
    label: str  # root/relative: what records, messages and the audit log show
    path: Path  # the resolved server folder: shown to nobody
    films: FilmSet  # labelled in the model's classes (its names and order)

    def counts_text(self) -> str:
        return ", ".join(f"{n} {c}" for c, n in zip(self.films.classes, self.films.class_counts()))


def site_label(folder: str | Path) -> str:
    """The data-root label of ``folder``: a label (``root/relative``) or a server folder inside a data root;
    FolderNotAllowed (its one fixed sentence) for anything else."""
    text = str(folder).strip()
    try:
        resolved = resolve_label(text)
    except FolderNotAllowed:
        resolved = Path(text)  # a plain path is allowed only inside a data root: folder_label checks
    return folder_label(resolved)


def read_site_folder(folder: str | Path, classes: tuple[str, ...], task: str) -> SiteFolder:
    """The labelled films of ``folder`` in ``classes``; DatasetError (naming the folder by its label) when its
    classes are not the model's or a class holds fewer films than the floor of ``task``."""
    label = site_label(folder)
    path = resolve_label(label)
    try:
        found = discover(path)
    except DatasetError as exc:
        raise hide_path(exc, path, label) from None
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    unknown = [c for c in found.classes if c.lower() not in lookup]
    named = {c.lower() for c in found.classes}
    missing = [c for c in classes if c.lower() not in named]
    if unknown or missing or len(named) != len(found.classes):
        raise DatasetError(f"The class folders of {label} ({', '.join(found.classes)}) are not the model's "
                           f"classes ({', '.join(classes)}); give it one folder per class, named as the model's "
                           "(upper or lower case alike).")
    mapping = np.array([lookup[c.lower()] for c in found.classes], dtype=np.int64)
    site = SiteFolder(label, path, FilmSet(found.paths, mapping[found.labels], tuple(classes)))
    minimum = floor_for(task).min_films
    if min(site.films.class_counts()) < minimum:
        raise DatasetError(f"{label} holds {site.counts_text()} films; choosing a threshold on a site's films needs "
                           f"at least {minimum} of each class (the promotion floor). Add labelled films and try "
                           "again.")
    return site


def hide_path(exc: DatasetError, path: Path, label: str) -> DatasetError:
    """The same error with the server folder ``path`` replaced by its label in the message."""
    return DatasetError(str(exc).replace(str(path), label))
