"""``python -m core collection-check NAME...``: add the other-collection report to versions trained before it.

Training, ``ensemble`` and ``calibrate`` compute it with the other reports (core.training.other_reports); a version
from before keeps its weights, threshold and every other report and gains this one, read at its own threshold on
the collection's films that are not copies of a film its run drew from (its training folder, rebuilt from its
training record and checked against the stored validation fingerprint). A shipped version's checksum manifest is
re-signed.
"""
from __future__ import annotations

from pathlib import Path

from core.admin.audit import record_action
from core.errors import CommandRefused
from core.models.device import place_model, resolve_device
from core.store.checkpoints import attach_other_report, load_checkpoint
from core.store.records import ModelRecord
from core.store.registry import find_model
from core.training.calibrate import recorded_split
from core.training.other_collection import CLASSES, FOLDER
from core.training.other_reports import OTHER_COLLECTION, collection_report


def add_collection_report(name: str, data_dir: str | Path | None = None, device: str = "auto",
                          who: str = "cli") -> ModelRecord:
    """Measure version ``name`` on the other collection's films and store the report in its JSON; returns the
    record. CommandRefused when the version does not read NORMAL and PNEUMONIA or the collection is absent."""
    entry = find_model(name)
    loaded = load_checkpoint(entry.json_path)
    record = loaded.record
    if not set(CLASSES) <= set(record.classes):
        raise CommandRefused(f"{record.name} does not read {' and '.join(CLASSES)}, so the other collection's "
                             "films cannot be read as its classes.")
    _, _, training_folder = recorded_split(record, data_dir)  # CalibrationError / DatasetError say what is missing
    model = place_model(loaded.model, resolve_device(device))
    report = collection_report(model, training_folder, loaded.image_size, record.operating_point,
                               record.training.config.seed)
    if report is None:
        raise CommandRefused(f"The other collection ({FOLDER.as_posix()} in the shared data folder) is not on this "
                             "server.")
    stored = attach_other_report(entry.json_path, OTHER_COLLECTION, report)
    record_action("collection-check", who, model=stored.name, task=stored.task, threshold=report.threshold,
                  auc=report.auc, sensitivity=report.sensitivity, specificity=report.specificity, n=report.n)
    return stored
