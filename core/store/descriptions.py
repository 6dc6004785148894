"""Changing an existing version's description (never its weights): figures measured after it was registered,
its population check. Each change reads, edits and rewrites ``NAME.json`` under its folder's registry lock, so
two at once (``fit-population`` while ``measured-elsewhere`` runs, or while a job ships a version and clears
the folder's stale temporary files) neither loses the other's update nor deletes the other's temporary file.
A shipped version's checksum manifest is re-signed under the same lock.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

from core.models.features import GaussianScore
from core.store import manifest
from core.store.atomic import atomic_write_json, restored_on_failure
from core.store.checkpoints import population_file, save_population
from core.store.lock import registry_lock
from core.store.records import HoldoutRun, MeasuredElsewhere, ModelRecord, PopulationCheck, read_model_record
from core.store.reports import OUT_OF_BATCH, Report
from core.stop_signals import stops_held

log = logging.getLogger(__name__)


def update_record(json_path: Path, change, also_signed: tuple[Path, ...] = ()) -> ModelRecord:
    """Read the description at ``json_path``, apply ``change`` (the record as read -> the fields to replace) and
    write it atomically, all under the registry lock; a shipped version's manifest is re-signed for it and for
    ``also_signed`` (files ``change`` writes beside it, put back as they were when the description cannot be
    written). Returns the record as stored."""
    with registry_lock(json_path.parent), stops_held() as stops:  # Ctrl+C or SIGTERM waits for the manifest too
        # (callers hold it across their audit line too, and deliver it after: core.stop_signals.StoppedAfter)
        current = read_model_record(json_path)
        with ExitStack() as beside:  # the description too: a manifest that cannot be signed leaves all as it was
            for path in (json_path, *also_signed):  # (a shipped version no longer matching it is refused, the
                beside.enter_context(restored_on_failure(path))  # default's task with it: a CLI review)
            record = current.model_copy(update=change(current))
            atomic_write_json(json_path, record.to_json())
            if manifest.is_shipped(json_path):
                manifest.write_manifest(manifest.shipped_dir(), [json_path, *also_signed])
    if stops:  # no caller holding it: the change is whole, and said to be
        log.warning("a stop was asked for while %s was being changed; the change is stored", json_path.stem)
    return record


def attach_population_check(json_path: Path, score: GaussianScore, check: PopulationCheck) -> ModelRecord:
    """Add (or replace) the population check of an existing version: its file, then its description in the
    JSON, under one lock (the file as it was when the JSON cannot be written); the weights and every other field
    are unchanged."""
    return update_record(json_path, lambda record: {
        "population_check": save_population(json_path.parent, json_path.stem, score, check)},
        also_signed=(population_file(json_path),))


def attach_holdout_run(json_path: Path, out_of_batch: Report, run: HoldoutRun) -> ModelRecord:
    """Set the other-batch figures of an existing version from another run of its recipe (``run``, whose
    ``out_of_batch`` report they are); the weights, the operating point and every other field are unchanged."""
    return update_record(json_path, lambda record: {
        "other_reports": {**record.other_reports, OUT_OF_BATCH: out_of_batch}, "holdout_run": run})


def attach_other_reports(json_path: Path, reports: dict[str, Report]) -> ModelRecord:
    """Add (or replace) entries of an existing version's ``other_reports``; the weights, the operating point and
    every other field are unchanged."""
    return update_record(json_path, lambda record: {"other_reports": {**record.other_reports, **reports}})


def attach_measured_elsewhere(json_path: Path, measured: MeasuredElsewhere) -> ModelRecord:
    """Add figures measured elsewhere to an existing version, replacing its earlier ones from the same films and
    measurer, or the same measurer's under the same title (two kept under one title showed as one row on Compare,
    with two points: a review; another measurer's under the title is refused before this, by
    core.training.measured_elsewhere); the weights and every other field are unchanged."""
    def change(record: ModelRecord) -> dict:
        kept = tuple(m for m in record.measured_elsewhere if m.measured_by != measured.measured_by
                     or (m.title != measured.title and m.films != measured.films))
        return {"measured_elsewhere": (*kept, measured)}
    return update_record(json_path, change)
