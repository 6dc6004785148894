"""Did a model learn from the films an evaluation reads? Figures measured on a model's own training (or
validation) films overstate what it does on new films, and a folder chooser makes that easy to do by mistake
(``kermany-224/train`` is right there). Read without torch, from the model's record: the folders its training
source reads (a class-folder tree's ``train/`` and ``val/``, or the tree itself; a manifest's folders) against
the folder an evaluation reads (``evaluate_folder``: the tree's ``test/`` split when it has split folders).
Folders overlap when one lies inside the other, links followed; and an evaluated folder whose class folders or
films are links into a training folder reads the films the model learned from (a review: a site folder of links
to the training films got no warning). Up to ``LINKS_LOOKED_AT`` of its films are followed.
"""
from __future__ import annotations

import os
from itertools import islice
from pathlib import Path
from typing import Iterator

from core.errors import TriageError
from core.films.folders import evaluation_split, split_folders
from core.films.manifest import find_manifest, load_manifest, recorded_source
from core.films.roots import real_path, resolve_label
from core.store.records import ModelRecord


def training_folders(record: ModelRecord) -> list[Path]:
    """The folders ``record``'s training read, resolved; empty when it has no training record or they are gone."""
    source = record.training.data_dir if record.training is not None else ""
    if not str(source).strip():
        return []
    source = recorded_source(source)
    try:
        manifest = find_manifest(source)
        if manifest is not None:
            return [folder for folder in map(_label_folder, load_manifest(manifest).folders) if folder is not None]
        root = Path(source).expanduser()
        splits = split_folders(root)
        folders = [root / name for name in ("train", "val") if name in splits] if splits else [root]
    except (TriageError, OSError):  # a manifest or folder that is gone or changed: nothing to compare
        return []
    return [folder for folder in map(real_path, folders) if folder is not None]


def evaluated_folder(folder: str | Path, split: str | None = None) -> Path | None:
    """The folder an evaluation of ``folder`` reads its class folders from, resolved (None when it is gone)."""
    try:
        chosen = evaluation_split(folder, split)
    except TriageError:
        return None
    return real_path(Path(folder).expanduser() / chosen if chosen else Path(folder).expanduser())


LINKS_LOOKED_AT = 2000


def trained_on(record: ModelRecord, folder: str | Path, split: str | None = None) -> bool:
    """Whether evaluating ``record``'s model on ``folder`` reads films it was trained or validated on."""
    evaluated = evaluated_folder(folder, split)
    if evaluated is None:
        return False
    trained = training_folders(record)
    if any(evaluated.is_relative_to(place) or place.is_relative_to(evaluated) for place in trained):
        return True
    return bool(trained) and any(place.is_relative_to(folder) for place in _linked_places(evaluated)
                                 for folder in trained)


def _linked_places(evaluated: Path) -> Iterator[Path]:
    """The real places of the class folders and (the first ``LINKS_LOOKED_AT``) films under ``evaluated`` that are
    links, or lie under a linked folder: where the evaluation really reads."""
    def walked():
        for here, folders, files in os.walk(evaluated, followlinks=True):
            for name in [*folders, *files]:
                path = Path(here) / name
                if path.is_symlink() or Path(here) != Path(os.path.realpath(here)):
                    yield path
    return (place for place in map(real_path, islice(walked(), LINKS_LOOKED_AT)) if place is not None)


def calibrated_on(record: ModelRecord, folder: str | Path, split: str | None = None) -> bool:
    """Whether ``record``'s threshold was chosen on a site folder that evaluating ``folder`` reads (its
    sensitivity there is met by construction)."""
    calibration = record.calibration
    if calibration is None or calibration.source != "site folder" or not calibration.folder:
        return False
    evaluated = evaluated_folder(folder, split)
    try:
        chosen_on = real_path(resolve_label(calibration.folder))
    except TriageError:  # a root no longer configured, a folder gone: nothing to compare
        return False
    if evaluated is None or chosen_on is None:
        return False
    if evaluated.is_relative_to(chosen_on) or chosen_on.is_relative_to(evaluated):
        return True
    # a folder of links to the site films reads them too (a review: trained_on followed links, this did not)
    return any(place.is_relative_to(chosen_on) for place in _linked_places(evaluated))


def overlap_notes(record: ModelRecord, folder: str | Path, split: str | None = None) -> list[str]:
    """What an evaluation of ``folder`` with ``record``'s model must say beside its figures (the CLI's words;
    Compare says the same per page): films it learned from, or the site films its threshold was chosen on."""
    notes = []
    if trained_on(record, folder, split):
        notes.append(f"{record.name} learned from films in this folder (it holds the films it was trained or "
                     "validated on), so its figures here overstate what it does on new films. Evaluate on films "
                     "kept out of training, such as another batch or a site's own films.")
    if calibrated_on(record, folder, split):
        notes.append(f"{record.name} had its threshold chosen on films in this folder (its site calibration), so "
                     "its sensitivity here is met by construction and its specificity is not a fresh measurement.")
    return notes


def _label_folder(entry) -> Path | None:
    try:
        return resolve_label(entry.label)  # resolved already
    except TriageError:  # FolderNotAllowed: a folder gone since, or a root no longer configured
        return None
