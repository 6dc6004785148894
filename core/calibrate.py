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
import time
from dataclasses import fields
from pathlib import Path

from core.checkpoints import load_checkpoint, remove_stale_temporaries, save_checkpoint
from core.data import fingerprint, load_tensors
from core.errors import DatasetError, TriageError
from core.registry import checkpoint_dir, find_model, next_version_name, registry_lock, set_default
from core.timing import inference_ms_per_film
from core.train import TrainConfig, split_films, validate_for_shipping

_VERSION = re.compile(r"-v\d+$")


class CalibrationError(TriageError):
    """The model cannot be calibrated as asked (no training record, bad target, films changed)."""


def calibrate(
    name: str | None, target_sensitivity: float, data_dir: str | Path | None = None,
    directory: Path | None = None, make_default: bool = False,
) -> Path:
    """Register ``<base>-vN+1``: the weights of ``name`` with a threshold for ``target_sensitivity``."""
    directory = directory or checkpoint_dir()
    loaded = load_checkpoint(find_model(name, directory).json_path)
    metadata = loaded.metadata
    training, stored = metadata.get("training") or {}, (metadata.get("data") or {}).get("validation") or {}
    if not training.get("config") or not stored.get("sha256"):
        raise CalibrationError(f"{loaded.name} has no training record to rebuild its validation split from.")
    known = {f.name for f in fields(TrainConfig)}
    stored_config = {k: v for k, v in training["config"].items() if k in known}
    try:
        config = TrainConfig(**{**stored_config, "target_sensitivity": target_sensitivity}).resolved()
    except ValueError as exc:
        raise CalibrationError(f"{exc}.") from exc
    data_dir = Path(data_dir or training["data_dir"])
    _, _, val_set = split_films(data_dir, config)
    if fingerprint(val_set)["sha256"] != stored["sha256"]:
        raise DatasetError(f"The validation films in {data_dir} are not the ones {loaded.name} was validated "
                           f"on (files added, removed or changed); calibrate on the original training folder.")
    model = loaded.model  # older checkpoints were stored in float32; the new version is rounded to float16
    point, report = validate_for_shipping(model, load_tensors(val_set, loaded.image_size), val_set, config)
    report["split"] = metadata["report"].get("split", f"validation: {len(val_set)} films")
    previous = metadata["operating_point"]
    new = {k: v for k, v in metadata.items() if k not in ("weights_sha256", "weights_bytes", "name")}
    new.update(operating_point=point.to_dict(), report=report,
               inference_ms_per_film=inference_ms_per_film(model, loaded.image_size),
               created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               calibration={"from": loaded.name, "previous_threshold": previous.get("threshold"),
                            "previous_policy": previous.get("policy"), "target_sensitivity": target_sensitivity})
    with registry_lock(directory):
        remove_stale_temporaries(directory)
        new["name"] = next_version_name(_VERSION.sub("", loaded.name), directory)
        json_path = save_checkpoint(directory, model, new)
    if make_default:
        set_default(new["name"], directory)
    return json_path
