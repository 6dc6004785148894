"""``python -m core framing-check NAME...`` and ``collection-check NAME...``: add a check's report to versions
trained before it existed.

Training, ``ensemble`` and ``calibrate`` compute both with the other reports (core.training.other_reports). A
version from before keeps its weights, threshold and every other report and gains the one asked for, read at its
own threshold on the films training would have used, rebuilt from its training record and checked against the
stored validation fingerprint: for the tighter framing, the batch it held out or its validation films; for the
other collection, that collection's films that are not copies of a film its run drew from, as collected and
framed tighter (two reports). A shipped version's checksum manifest is re-signed; the audit log records the action,
one entry per report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from core.admin.audit import ensure_writable, record_action
from core.errors import CommandRefused
from core.models.device import place_model, resolve_device
from core.store.checkpoints import LoadedModel, load_checkpoint
from core.store.descriptions import attach_other_reports
from core.store.records import ModelRecord
from core.store.registry import find_model
from core.store.writable import ensure_models_writable
from core.store.reports import Report
from core.training.calibrate import SITE_FOLDER, recorded_split
from core.training.holdout import holdout_rule
from core.training.other_collection import CLASSES, FOLDER
from core.training.other_reports import TIGHTER_FRAMING, collection_reports, framing_report


def add_framing_report(name: str, data_dir: str | Path | None = None, device: str = "auto",
                       who: str = "cli") -> ModelRecord:
    """Measure version ``name`` on its films framed tighter and store the report in its JSON; returns the record."""
    def measure(model: nn.Module, loaded: LoadedModel) -> dict[str, Report]:
        record = loaded.record
        val_set, held_out, _ = recorded_split(record, data_dir)  # CalibrationError / DatasetError say what is missing
        holdout = holdout_rule(record.training.config.holdout).description if held_out is not None else ""
        return {TIGHTER_FRAMING: framing_report(model, held_out, holdout, val_set, loaded.image_size,
                                                record.operating_point, record.training.config.seed)}

    return _add(name, "framing-check", measure, device, who)


def add_collection_report(name: str, data_dir: str | Path | None = None, device: str = "auto",
                          who: str = "cli") -> ModelRecord:
    """Measure version ``name`` on the other collection's films, as collected and framed tighter, and store both
    reports in its JSON; returns the record. CommandRefused when the version does not read NORMAL and PNEUMONIA or
    the collection is absent."""
    def measure(model: nn.Module, loaded: LoadedModel) -> dict[str, Report]:
        record = loaded.record
        if not set(CLASSES) <= set(record.classes):
            raise CommandRefused(f"{record.name} does not read {' and '.join(CLASSES)}, so the other collection's "
                                 "films cannot be read as its classes.")
        if record.calibration is not None and record.calibration.source == SITE_FOLDER:
            # calibrate left these reports out when the site folder held the collection's films (they would be
            # read on the films the threshold was chosen on); this command brought them back (a review)
            raise CommandRefused(f"{record.name}'s threshold was chosen on a site's films, which may be the other "
                                 "collection's: the other-collection figures it carries are the ones calibration "
                                 "stored, if any. Read "
                                 "the collection with the version it was calibrated from "
                                 f"({record.calibration.from_model}).")
        _, _, training_folder = recorded_split(record, data_dir)
        reports = collection_reports(model, training_folder, loaded.image_size, record.operating_point,
                                     record.training.config.seed)
        if not reports:
            raise CommandRefused(f"The other collection ({FOLDER.as_posix()} in the shared data folder) gave no "
                                 "figures: it is not on this server, holds only copies of the training films, or one "
                                 "of its films cannot be read (a warning above says which).")
        return reports

    return _add(name, "collection-check", measure, device, who)


def _add(name: str, action: str, measure: Callable[[nn.Module, LoadedModel], dict[str, Report]], device: str,
         who: str) -> ModelRecord:
    entry = find_model(name)
    ensure_writable()
    ensure_models_writable(entry.json_path.parent)  # before minutes of scoring whose result is written there
    loaded = load_checkpoint(entry.json_path)
    reports = measure(place_model(loaded.model, resolve_device(device)), loaded)
    def audit(stored: ModelRecord) -> None:  # with the reports, a stop held between (StoppedAfter after both)
        for key, report in reports.items():
            record_action(action, who, model=stored.name, task=stored.task, report=key, threshold=report.threshold,
                          auc=report.auc, sensitivity=report.sensitivity, specificity=report.specificity, n=report.n)

    return attach_other_reports(entry.json_path, reports, then=audit)
