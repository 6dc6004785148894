"""Re-choose a model's operating point on its own validation films, without retraining.

A site that wants a different sensitivity target (or a model trained under an older policy) gets a new
version with the same weights, a threshold chosen by the same rule on the same patient-disjoint validation
split, and a fresh report. Versions stay immutable: the app caches models and results per version.

The validation split is rebuilt from the training record (data folder, validation fraction, seed, subset)
and must hash to the fingerprint stored at training time; otherwise the films differ and calibrating on
them could put training films into the choice, so it is refused.
"""
from __future__ import annotations

import re
from pathlib import Path

from core.admin.audit import record_action
from core.errors import CalibrationError, DatasetError
from core.models.device import place_model, resolve_device, to_device
from core.store.checkpoints import load_checkpoint
from core.store.promotion import promote
from core.store.records import Calibration, ModelRecord
from core.store.registry import checkpoint_dir, find_model
from core.films.folders import FilmSet
from core.films.tensor import load_tensors
from core.training.data import fingerprint
from core.training.shipping import ship_version
from core.training.train import split_films, validate_for_shipping

_VERSION = re.compile(r"-v\d+$")


def calibrate(
    name: str | None, target_sensitivity: float, data_dir: str | Path | None = None,
    directory: Path | None = None, make_default: bool = False, device: str = "auto", who: str = "cli",
) -> ModelRecord:
    """Register ``<base>-vN+1``: the weights of ``name`` with a threshold for ``target_sensitivity``; the
    validation films run on ``device`` (in fp32, as at training). The calibration is written to the audit log
    as done by ``who``; ``make_default`` goes through the promotion floor (PromotionRefused: the new version
    stays registered, not the default)."""
    directory = directory or checkpoint_dir()
    where = resolve_device(device)
    loaded = load_checkpoint(find_model(name, directory).json_path)
    record = loaded.record
    val_set = recorded_validation_split(record, data_dir)
    try:
        config = record.training.config.model_copy(update={"target_sensitivity": target_sensitivity}).resolved()
    except ValueError as exc:
        raise CalibrationError(str(exc)) from exc
    model = place_model(loaded.model, where)  # older checkpoints were float32; the new version is float16
    split = record.report.split if record.report else f"validation: {len(val_set)} films"
    films = to_device(load_tensors(val_set, loaded.image_size), where)
    point, report = validate_for_shipping(model, films, val_set, config, split)
    previous = record.operating_point
    calibrated = record.model_copy(update={
        "operating_point": point, "report": report,
        "calibration": Calibration(from_model=loaded.name, previous_threshold=previous.threshold,
                                   previous_policy=previous.policy, target_sensitivity=target_sensitivity),
    })
    stored = ship_version(model, calibrated, _VERSION.sub("", loaded.name), directory, who=who)
    record_action("calibrate", who, model=stored.name, from_model=loaded.name, task=stored.task,
                  target_sensitivity=target_sensitivity, previous_threshold=previous.threshold,
                  threshold=point.threshold, sensitivity=report.sensitivity, specificity=report.specificity,
                  n=report.n)
    if make_default:
        promote(stored.name, who=who, directory=directory)
    return stored


def recorded_validation_split(record: ModelRecord, data_dir: str | Path | None = None) -> FilmSet:
    """The validation films ``record`` was validated on, rebuilt from its training record and checked
    against the stored fingerprint (DatasetError when the films changed)."""
    if record.training is None or record.data is None:
        raise CalibrationError(f"{record.name} has no training record to rebuild its validation split from.")
    data_dir = Path(data_dir or record.training.data_dir)
    _, _, val_set = split_films(data_dir, record.training.config.resolved())
    if fingerprint(val_set).sha256 != record.data.validation.sha256:
        raise DatasetError(f"The validation films in {data_dir} are not the ones {record.name} was validated "
                           f"on (files added, removed or changed); use the original training folder.")
    return val_set
