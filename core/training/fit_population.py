"""``python -m core fit-population NAME``: fit (or refit) a registered version's population check from its
recorded training data, for versions trained before the check existed (the shipped lineup included).

The training and validation films are rebuilt from the version's training record (folder or manifest, split,
seeds, subset, holdout) and must hash to the fingerprints it stored, so the check describes the films the model
really learnt from. The version's weights and operating point are unchanged; its JSON gains the check's
description and ``NAME.population.pt`` appears beside it. A shipped version's checksum manifest is re-signed
(the shipping path); a running app reads the check when it next loads the model.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from core.admin.audit import ensure_writable, record_action
from core.errors import CommandRefused, DatasetError
from core.films.folders import FilmSet
from core.films.manifest import find_manifest, recorded_source
from core.models.features import FilmFeatures
from core.store.descriptions import attach_population_check
from core.store.records import ModelRecord, read_model_record
from core.store.registry import find_model
from core.store.writable import ensure_models_writable
from core.stop_signals import held_through
from core.training.data import fingerprint
from core.training.calibrate import folder_shown
from core.training.population import TooFewFilms, fit_population_check
from core.training.site_folder import hide_path
from core.training.train import split_films


def fit_for_registered(names: list[str], data_dir: str | Path | None = None, seed: int = 0,
                       who: str = "cli", refit: bool = False) -> Iterator[ModelRecord]:
    """Fit the population check of each registered version in ``names`` (one with a check and its file there only
    when ``refit``: CommandRefused otherwise) on its recorded training films and store it beside its weights; a
    shipped version's checksum manifest is re-signed. The films are rebuilt from each training record and must
    hash to its fingerprints (DatasetError otherwise). Versions trained on the same films share their features
    (computed once). Yields each version as stored."""
    entries = [find_model(name) for name in names]  # every name known before minutes of features
    ensure_writable()
    for folder in dict.fromkeys(entry.json_path.parent for entry in entries):  # a shipped and a site version: both
        ensure_models_writable(folder)
    fitted = [e.name for e in entries if e.record.population_check is not None and not e.population_missing]
    if fitted and not refit:  # a review: one mistaken call rewrote a shipped version's check and its manifest
        raise CommandRefused(f"{', '.join(fitted)} already {'has' if len(fitted) == 1 else 'have'} a population "
                             "check; add --refit to replace it.")
    features = FilmFeatures()
    for entry in entries:
        record = read_model_record(entry.json_path)
        train_set, val_set = recorded_training_split(record, data_dir)
        try:
            score, check = fit_population_check(train_set, val_set,
                                                data_dir or recorded_source(record.training.data_dir), seed,
                                                features=features)
        except TooFewFilms as exc:
            raise DatasetError(f"{record.name} cannot have a population check: its {exc}.") from exc
        def audit(stored: ModelRecord) -> None:
            record_action("fit-population", who, model=stored.name, task=stored.task, fitted_on=check.fitted_on,
                          threshold=check.threshold, validation_warn_rate=check.validation_warn_rate)

        # the check and its audit line, both; a stop that came meanwhile lands once the version is reported
        stored, stopped = held_through(lambda: attach_population_check(entry.json_path, score, check, then=audit))
        yield stored
        if stopped:
            raise KeyboardInterrupt


def recorded_training_split(record: ModelRecord, data_dir: str | Path | None = None) -> tuple[FilmSet, FilmSet]:
    """(training films, validation films) of ``record``, rebuilt from its training record (from ``data_dir``,
    a folder or manifest, when its training data moved)."""
    if record.training is None or record.data is None:
        raise DatasetError(f"{record.name} has no training record, so its training films are unknown.")
    source = data_dir or recorded_source(record.training.data_dir)
    try:
        gone = data_dir is None and find_manifest(source) is None and not Path(source).is_dir()
    except (DatasetError, OSError):  # a manifest gone, a name too long: said below as before, wrapped
        gone = False
    if gone:  # a review: hide_path made "Dataset folder a folder outside the data roots does not exist" of it
        raise DatasetError(f"The training folder of {record.name} ({folder_shown(Path(source))}) is not on this "
                           "server; name the folder it moved to (command line: --data).")
    try:
        _, train_set, val_set, _ = split_films(source, record.training.config.resolved(), recorded=record.data)
    except DatasetError as exc:  # its folder as typed (--data), or by data-root label, never by a recorded path
        manifest = find_manifest(source)
        shown = (exc if data_dir is not None else  # "Dataset folder a folder outside the data roots" (a review)
                 hide_path(exc, manifest, f"the {manifest.stem} manifest") if manifest is not None
                 else hide_path(exc, Path(source), folder_shown(Path(source))))
        raise DatasetError(f"The training data of {record.name} cannot be read ({shown}); if it moved, name it "
                           "(command line: --data).") from None
    if (fingerprint(train_set).sha256, fingerprint(val_set).sha256) != (record.data.train.sha256,
                                                                          record.data.validation.sha256):
        raise DatasetError(f"The films in the training data of {record.name} are not the ones it was trained and "
                           "validated on (files added, removed or changed); use the original training data.")
    return train_set, val_set
