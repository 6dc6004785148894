"""``python -m core framing-check NAME...``: add the tighter-framing report to versions trained before it existed.

Training, ``ensemble`` and ``calibrate`` compute it with the other reports (core.training.other_reports); a version
from before keeps its weights, threshold and every other report and gains this one, read at its own threshold on
the films training would have used: the batch it held out, or its validation films (rebuilt from its training
record and checked against their stored fingerprint). A shipped version's checksum manifest is re-signed.
"""
from __future__ import annotations

from pathlib import Path

from core.admin.audit import record_action
from core.models.device import place_model, resolve_device
from core.store.checkpoints import attach_other_report, load_checkpoint
from core.store.records import ModelRecord
from core.store.registry import find_model
from core.training.calibrate import recorded_split
from core.training.holdout import holdout_rule
from core.training.other_reports import TIGHTER_FRAMING, framing_report


def add_framing_report(name: str, data_dir: str | Path | None = None, device: str = "auto",
                       who: str = "cli") -> ModelRecord:
    """Measure version ``name`` on its films framed tighter and store the report in its JSON; returns the record."""
    entry = find_model(name)
    loaded = load_checkpoint(entry.json_path)
    record = loaded.record
    val_set, held_out, _ = recorded_split(record, data_dir)  # CalibrationError / DatasetError say what is missing
    model = place_model(loaded.model, resolve_device(device))
    holdout = holdout_rule(record.training.config.holdout).description if held_out is not None else ""
    seed = record.training.config.seed
    report = framing_report(model, held_out, holdout, val_set, loaded.image_size, record.operating_point, seed)
    stored = attach_other_report(entry.json_path, TIGHTER_FRAMING, report)
    record_action("framing-check", who, model=stored.name, task=stored.task, threshold=report.threshold,
                  auc=report.auc, sensitivity=report.sensitivity, specificity=report.specificity, n=report.n)
    return stored
