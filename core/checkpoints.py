"""Checkpoints: ``NAME.pt`` holds only tensors and plain metadata (loaded with ``weights_only=True``);
``NAME.json`` beside it holds the same metadata plus the evaluation report, for people and the app.

Both are written to a temporary file and ``os.replace``d into place; the JSON is written last, so a
model exists for the registry only once both files are whole. The JSON records the SHA-256 of the
weights file, so a truncated or swapped ``.pt`` is refused rather than half-loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError
from core.models import build_model
from core.operating_point import OperatingPoint

FORMAT_VERSION = 1
# Fields that must agree between the weights file and its JSON, or the pair is refused.
_IDENTITY_FIELDS = ("name", "arch", "model_args", "classes", "format_version")


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    metadata: dict

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def image_size(self) -> int:
        return int(self.metadata["model_args"]["image_size"])

    @property
    def operating_point(self) -> OperatingPoint:
        return OperatingPoint.from_dict(self.metadata["operating_point"])


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shared, read-only data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries a killed writer left behind. Call only under the registry lock (no live writer)."""
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def save_checkpoint(directory: Path, model: nn.Module, metadata: dict) -> Path:
    """Write NAME.pt then NAME.json; returns the JSON path. ``metadata`` must be JSON-able."""
    metadata = dict(metadata, format_version=FORMAT_VERSION)
    identity = {k: metadata[k] for k in _IDENTITY_FIELDS}
    json.dumps(metadata)  # fail before writing anything if it is not JSON-able
    state = {k: _storage(v) for k, v in model.state_dict().items()}
    buffer = _to_bytes({"model": state, "identity": identity})
    name = metadata["name"]
    atomic_write_bytes(directory / f"{name}.pt", buffer)
    metadata["weights_sha256"] = hashlib.sha256(buffer).hexdigest()
    metadata["weights_bytes"] = len(buffer)
    atomic_write_json(directory / f"{name}.json", metadata)
    return directory / f"{name}.json"


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


def read_metadata(json_path: Path) -> dict:
    try:
        metadata = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Model description {json_path.name} cannot be read ({exc}).") from exc
    missing = [k for k in (*_IDENTITY_FIELDS, "operating_point", "weights_sha256") if k not in metadata]
    if missing:
        raise CheckpointError(f"Model description {json_path.name} lacks {', '.join(missing)}.")
    return metadata


def load_checkpoint(json_path: Path) -> LoadedModel:
    """Load and verify one model; any problem is a CheckpointError naming the file."""
    metadata = read_metadata(json_path)
    weights = json_path.with_suffix(".pt")
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"Weights file {weights.name} cannot be read ({exc.strerror or exc}).") from exc
    if hashlib.sha256(data).hexdigest() != metadata["weights_sha256"]:
        raise CheckpointError(
            f"Weights file {weights.name} does not match its description (truncated, replaced or corrupt)."
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"Weights file {weights.name} was refused: it is corrupt or holds objects other than tensors ({exc})."
        ) from exc
    if not isinstance(payload, dict) or "model" not in payload or "identity" not in payload:
        raise CheckpointError(f"Weights file {weights.name} is not a checkpoint written by this program.")
    expected = {k: metadata[k] for k in _IDENTITY_FIELDS}
    if payload["identity"] != expected:
        raise CheckpointError(f"Weights file {weights.name} and its description disagree on the model's identity.")
    args = metadata["model_args"]
    model, _ = build_model(metadata["arch"], args["num_classes"], args["image_size"], pretrained=False)
    try:
        model.load_state_dict(payload["model"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"Weights in {weights.name} do not fit architecture {metadata['arch']}: {exc}") from exc
    model.eval()
    return LoadedModel(metadata["name"], model, metadata)
