"""A site's own labelled films for recalibration: a class-folder tree inside a data root, read in the model's classes.

The folder is named by its data-root label (``root/relative``, core.films.roots) and every message names it
that way, never by its server path. Its class folders must be the model's classes (any spelling of case:
``Normal`` is ``NORMAL``), each holding at least the promotion floor's films per class
(core.store.promotion.floor_for): a threshold chosen on fewer films than a default must be validated on would
be a promise nobody could check. A folder of split folders (``train/``, ``val/``) is refused: its films are one
set, and reading ``train/`` alone (as training does) left the rest out unsaid. Copies of a film within the folder
(the same film under another name, contrast or size: the split's rule, core.films.copies) count once: twenty
copies of four films once met the floor and gave an interval as if from twenty. Films Triage would leave
untriaged (image statistics, then the chest-film check) never meet the threshold, so they do not choose it: a CT,
an MR and noise textures in a site folder once set it at 0.0004, specificity 17 % (a review); they are left out,
and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.errors import DatasetError, FolderNotAllowed
from core.films.folders import FilmSet, discover, split_folders
from core.films.roots import folder_label, resolve_label
from core.store.promotion import floor_for
from core.films.copies import first_of_each, groups_of, repeats_in_detail
from core.training.source_check import untriaged


@dataclass(frozen=True)
class SiteFolder:
    label: str  # root/relative: what records, messages and the audit log show
    path: Path  # the resolved server folder: shown to nobody
    films: FilmSet  # labelled in the model's classes (its names and order), one of each group of copies
    copies: int = 0  # films left out as copies of another film in the folder
    not_triaged: int = 0  # films left out as Triage would leave them untriaged
    unscreened: bool = False  # the chest-film check could not run: image statistics alone screened the films

    def _counts(self) -> str:
        return ", ".join(f"{n} {c}" for c, n in zip(self.films.classes, self.films.class_counts()))

    def _left_out(self) -> list[str]:
        films = f"{self.not_triaged} film{'s' if self.not_triaged > 1 else ''}"
        copies = "1 copy of another film" if self.copies == 1 else f"{self.copies} copies of other films"
        return [words for n, words in ((self.copies, f"{copies} in it"),
                                       (self.not_triaged, f"{films} Triage would not triage (not usable chest films)"))
                if n]

    def counts_text(self) -> str:
        said = [self._counts(), *(f"{words} left out" for words in self._left_out())]
        return "; ".join(said + (["the chest-film check could not run, so image statistics alone screened them"]
                                 if self.unscreened else []))

    def named(self, indices, most: int = 10) -> str:
        """The films at ``indices`` as messages name them (by the folder's label; at most ``most``, then a count), so
        that whoever must remove them can find them (a review: refusals counted the films and named none)."""
        from core.films.read import shown_name

        def inside(path: Path) -> str:  # a film outside the folder (a test's made-up one) by its name alone
            return path.relative_to(self.path).as_posix() if path.is_relative_to(self.path) else path.name

        names = [shown_name(f"{self.label}/{inside(self.films.paths[i])}") for i in list(indices)[:most]]
        more = len(list(indices)) - len(names)
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")

    def floor_text(self) -> str:
        if not self._left_out():
            return f"{self._counts()} films"
        verb = "is" if self.copies + self.not_triaged == 1 else "are"
        return f"{self._counts()} films once {' and '.join(self._left_out())} {verb} left out"


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
        if splits := split_folders(path):
            raise DatasetError(f"{label} holds split folders ({', '.join(splits)}): a site's films for calibration "
                               f"are one folder per class. Name one of them (e.g. {label}/{splits[-1]}), or put the "
                               "class folders at its top.")
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
    return _at_floor(SiteFolder(label, path, FilmSet(found.paths, mapping[found.labels], tuple(classes))), task)


def distinct_films(site: SiteFolder, task: str) -> SiteFolder:
    """``site`` with one film of each group of copies in it (the first listed), held to the floor again; a copy
    filed under two classes is refused. Call once the folder is known to hold none of the model's own films (a
    copy of a training film is refused as such, not counted here)."""
    pairs = repeats_in_detail(site.films)  # confirmed in detail: two children's films are not one (a review)
    if not len(pairs):
        return site
    labels = site.films.labels
    misfiled = [g for g in groups_of(len(site.films), pairs) if len(set(labels[g].tolist())) > 1]
    if misfiled:
        shown = "; ".join(_listed([site.named([i]) for i in group]) for group in misfiled[:3])
        more = len(misfiled) - 3
        more = f"; and {more} more such group{'s' if more > 1 else ''} of copies" if more > 0 else ""
        raise DatasetError(f"{site.label} holds the same film under two classes (copies of a film filed under more "
                           f"than one class folder: {shown}{more}); correct the labels and try again.")
    kept = first_of_each(len(site.films), pairs)
    return _at_floor(replace(site, films=site.films.subset(kept), copies=len(site.films) - len(kept)), task)


def _listed(names: list[str], shown: int = 4) -> str:
    """``a, b and c``; past ``shown`` names, how many more."""
    if len(names) > shown:
        more = len(names) - shown
        return f"{', '.join(names[:shown])} and {more} more cop{'ies' if more > 1 else 'y'}"
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]


def triaged_films(site: SiteFolder, task: str) -> SiteFolder:
    """``site`` without the films Triage would leave untriaged (an unreadable film stays, for the reading to name
    it), held to the floor again."""
    verdicts = untriaged(site.films, list(range(len(site.films))))
    kept = np.flatnonzero([verdict is not True for verdict in verdicts.not_chest])
    site = replace(site, unscreened=verdicts.unscreened)  # said in its report (a re-read)
    if len(kept) == len(site.films):
        return site
    return _at_floor(replace(site, films=site.films.subset(kept), not_triaged=len(site.films) - len(kept)), task)


def _at_floor(site: SiteFolder, task: str) -> SiteFolder:
    minimum = floor_for(task).min_films
    if min(site.films.class_counts()) < minimum:
        raise DatasetError(f"{site.label} holds {site.floor_text()}; choosing a threshold on a site's films needs "
                           f"at least {minimum} of each class (the promotion floor). Add labelled films and try "
                           "again.")
    return site


def hide_path(exc: DatasetError, path: Path, label: str) -> DatasetError:
    """The same error with the server folder ``path`` replaced by its label in the message."""
    return DatasetError(str(exc).replace(str(path), label))
