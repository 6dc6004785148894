"""Changing an existing version's description (never its weights): figures measured after it was registered,
its population check. Each change reads, edits and rewrites ``NAME.json`` under its folder's registry lock, so
two at once (``fit-population`` while ``measured-elsewhere`` runs, or while a job ships a version and clears
the folder's stale temporary files) neither loses the other's update nor deletes the other's temporary file.
A shipped version's checksum manifest is re-signed under the same lock.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from core.errors import AuditLogUnavailable
from core.models.features import GaussianScore
from core.store import manifest
from core.store.atomic import atomic_write_json, restored_on_failure
from core.store.checkpoints import population_file, save_population
from core.store.lock import registry_lock
from core.store.records import HoldoutRun, MeasuredElsewhere, ModelRecord, PopulationCheck, read_model_record
from core.store.reports import OUT_OF_BATCH, Report
from core.stop_signals import StoppedAfter, stops_held


def update_record(json_path: Path, change, also_signed: tuple[Path, ...] = (),
                  then: Callable[[ModelRecord], None] | None = None) -> ModelRecord:
    """Read the description at ``json_path``, apply ``change`` (the record as read -> the fields to replace) and
    write it atomically, all under the registry lock; a shipped version's manifest is re-signed for it and for
    ``also_signed`` (files ``change`` writes beside it, put back as they were when the description cannot be
    written); ``then`` (the change's audit line) follows. Returns the record as stored.

    Ctrl+C and the stop signals are held from the lock taken to ``then`` done (waiting for the lock, a stop still
    stops at once), then delivered as StoppedAfter carrying the record, so the command reports the change before
    it says it was interrupted (reviews: a stop between the JSON and its manifest left a shipped version refused;
    one raised before the audit line left the change unaudited and unreported). Inside another hold, or off the
    main thread, nothing is held here."""
    with registry_lock(json_path.parent), stops_held() as stops:
        # a shipped description as its manifest signed it: one edited on disk was re-signed as read (a review)
        current = read_model_record(json_path, manifest.read_verified(json_path, manifest.shipped_dir())
                                    if manifest.is_shipped(json_path) else None)
        with ExitStack() as beside:  # the description too: a manifest that cannot be signed leaves all as it was
            for path in (json_path, *also_signed):
                beside.enter_context(restored_on_failure(path))
            record = current.model_copy(update=change(current))
            atomic_write_json(json_path, record.to_json())
            if manifest.is_shipped(json_path):
                manifest.write_manifest(manifest.shipped_dir(), [json_path, *also_signed])
        try:
            if then is not None:
                then(record)
        except AuditLogUnavailable as exc:  # the change is whole, and said to be (its version named)
            raise AuditLogUnavailable(f"{exc} {record.name} was changed without its audit line.") from exc
    if stops:
        raise StoppedAfter(record)
    return record


def attach_population_check(json_path: Path, score: GaussianScore, check: PopulationCheck,
                            then: Callable[[ModelRecord], None] | None = None) -> ModelRecord:
    """Add (or replace) the population check of an existing version: its file, then its description in the
    JSON, under one lock (the file as it was when the JSON cannot be written); the weights and every other field
    are unchanged."""
    return update_record(json_path, lambda record: {
        "population_check": save_population(json_path.parent, json_path.stem, score, check)},
        also_signed=(population_file(json_path),), then=then)


def attach_holdout_run(json_path: Path, out_of_batch: Report, run: HoldoutRun,
                       then: Callable[[ModelRecord], None] | None = None) -> ModelRecord:
    """Set the other-batch figures of an existing version from another run of its recipe (``run``, whose
    ``out_of_batch`` report they are); the weights, the operating point and every other field are unchanged."""
    return update_record(json_path, lambda record: {
        "other_reports": {**record.other_reports, OUT_OF_BATCH: out_of_batch}, "holdout_run": run}, then=then)


def attach_other_reports(json_path: Path, reports: dict[str, Report],
                         then: Callable[[ModelRecord], None] | None = None) -> ModelRecord:
    """Add (or replace) entries of an existing version's ``other_reports``; the weights, the operating point and
    every other field are unchanged."""
    return update_record(json_path, lambda record: {"other_reports": {**record.other_reports, **reports}}, then=then)


def attach_measured_elsewhere(json_path: Path, measured: MeasuredElsewhere,
                              then: Callable[[ModelRecord], None] | None = None) -> ModelRecord:
    """Add figures measured elsewhere to an existing version, replacing its earlier ones from the same films and
    measurer, or the same measurer's under the same title (two kept under one title showed as one row on Compare,
    with two points: a review; another measurer's under the title is refused before this, by
    core.training.measured_elsewhere); the weights and every other field are unchanged."""
    def change(record: ModelRecord) -> dict:
        kept = tuple(m for m in record.measured_elsewhere if m.measured_by != measured.measured_by
                     or (m.title != measured.title and m.films != measured.films))
        return {"measured_elsewhere": (*kept, measured)}
    return update_record(json_path, change, then=then)
