"""Checkpoints: ``NAME.pt`` holds only tensors and the model's identity (loaded with ``weights_only=True``);
``NAME.json`` beside it is the :class:`~core.store.records.ModelRecord`, for people and the app.

Both are written to a temporary file and ``os.replace``d into place; the JSON is written last, so a
model exists for the registry only once both files are whole. The JSON records the SHA-256 of the
weights file, so a truncated, half-copied or mixed-up ``.pt`` is refused rather than half-loaded. That
hash guards against accidents, not people: whoever can replace the weights can replace the JSON beside
them. So a *shipped* model (one in the checkpoints folder) is also checked, both files, against the
checksum manifest tracked in git (core.store.manifest); a *site* model is only as safe as its folder's
permissions (the site folder belongs to the service account and the administrators).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError
from core.models.build import build_model
from core.store import manifest
from core.store.atomic import atomic_write_bytes, atomic_write_json
from core.store.records import ModelRecord, read_model_record
from core.store.reports import OperatingPoint


@dataclass
class LoadedModel:
    record: ModelRecord
    model: nn.Module

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def classes(self) -> list[str]:
        return list(self.record.classes)

    @property
    def image_size(self) -> int:
        return self.record.image_size

    @property
    def operating_point(self) -> OperatingPoint:
        return self.record.operating_point


def save_checkpoint(directory: Path, model: nn.Module, record: ModelRecord) -> ModelRecord:
    """Write NAME.pt then NAME.json; returns the record as written (with the weights' hash and size)."""
    json.dumps(record.to_json())  # fail before writing anything if the record cannot be stored
    state = {k: _storage(v) for k, v in model.state_dict().items()}
    buffer = _to_bytes({"model": state, "identity": record.identity()})
    atomic_write_bytes(directory / f"{record.name}.pt", buffer)
    record = record.model_copy(update={"weights_sha256": hashlib.sha256(buffer).hexdigest(),
                                       "weights_bytes": len(buffer)})
    atomic_write_json(directory / f"{record.name}.json", record.to_json())
    return record


def _storage(tensor: torch.Tensor) -> torch.Tensor:
    """Floating tensors are stored as float16: half the size (the whole lineup must stay under 100 MB).

    Training rounds the model through float16 before its final evaluation (``round_to_storage``), so the
    stored report describes exactly the weights that are shipped.
    """
    tensor = tensor.detach().cpu().contiguous()
    return tensor.half() if tensor.is_floating_point() else tensor


@torch.no_grad()
def round_to_storage(model: nn.Module) -> None:
    """Round every floating parameter and buffer through the storage precision, in place."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())


def _to_bytes(obj) -> bytes:
    handle = io.BytesIO()
    torch.save(obj, handle)
    return handle.getvalue()


def load_checkpoint(json_path: Path) -> LoadedModel:
    """Load and verify one model; any problem is a CheckpointError naming the file. A shipped model's
    description and weights must also match the checksum manifest."""
    shipped = manifest.is_shipped(json_path)
    if shipped:
        manifest.read_verified(json_path)
    record = read_model_record(json_path)
    weights = json_path.with_suffix(".pt")
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"Weights file {weights.name} cannot be read ({exc.strerror or exc}).") from exc
    if shipped:
        manifest.verify(weights, data)
    if hashlib.sha256(data).hexdigest() != record.weights_sha256:
        raise CheckpointError(
            f"Weights file {weights.name} does not match its description (truncated, replaced or corrupt)."
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"Weights file {weights.name} was refused: it is corrupt or holds objects other than tensors ({exc})."
        ) from exc
    if not isinstance(payload, dict) or set(payload) != {"model", "identity"}:
        raise CheckpointError(f"Weights file {weights.name} is not a checkpoint written by this program.")
    if payload["identity"] != record.identity():
        raise CheckpointError(f"Weights file {weights.name} and its description disagree on the model's identity.")
    try:
        model, _ = build_model(record.arch, record.model_args.num_classes, record.image_size, pretrained=False)
    except ValueError as exc:
        raise CheckpointError(f"{json_path.name}: {exc}.") from exc
    try:
        model.load_state_dict(payload["model"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"Weights in {weights.name} do not fit architecture {record.arch}: {exc}") from exc
    model.eval()
    return LoadedModel(record, model)
