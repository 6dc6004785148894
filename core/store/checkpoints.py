"""Checkpoints: ``NAME.pt`` holds only tensors and the model's identity (loaded with ``weights_only=True``);
``NAME.json`` beside it is the :class:`~core.store.records.ModelRecord`, for people and the app.

Both are written to a temporary file and ``os.replace``d into place; the JSON is written last, so a
model exists for the registry only once both files are whole. The JSON records the SHA-256 of the
weights file, so a truncated, half-copied or mixed-up ``.pt`` is refused rather than half-loaded. That
hash guards against accidents, not people: whoever can replace the weights can replace the JSON beside
them. So a *shipped* model (one in the checkpoints folder) is also checked, both files, against the
checksum manifest tracked in git (core.store.manifest); a *site* model is only as safe as its folder's
permissions (the site folder belongs to the service account and the administrators).

A model may also carry its *population check* (core.store.records.PopulationCheck): ``NAME.population.pt``
beside the weights, tensors only, its SHA-256 in the JSON and, when shipped, in the manifest like every other
file. A separate file rather than JSON numbers: about 650 kB of tensors (a PCA basis), and it can be added to
an existing version (``python -m core fit-population``) without touching its weights. Version names end in
``-vN``, so ``NAME.population`` is never another model's name.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError
from core.models.build import build_model
from core.models.ensemble import ENSEMBLE, MemberSpec, build_ensemble, ensemble_input_size
from core.store import manifest
from core.store.manifest import MANIFEST_FILE
from core.store.atomic import atomic_write_bytes, atomic_write_json
from core.store.base import MAX_WEIGHTS_BYTES, read_regular_file
from core.models.features import GaussianScore
from core.store.records import Member, ModelRecord, PopulationCheck, read_model_record
from core.store.reports import OperatingPoint


@dataclass
class LoadedModel:
    record: ModelRecord
    model: nn.Module
    population: GaussianScore | None = None  # the population check's score; None: not checked

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


def save_checkpoint(directory: Path, model: nn.Module, record: ModelRecord,
                    population: GaussianScore | None = None) -> ModelRecord:
    """Write NAME.pt (and NAME.population.pt with ``population``, described by ``record.population_check``)
    then NAME.json; returns the record as written (with the files' hashes and the weights' size)."""
    json.dumps(record.to_json())  # fail before writing anything if the record cannot be stored
    if (population is None) != (record.population_check is None):
        raise ValueError("a population check needs both its description and its score")
    state = {k: _storage(v) for k, v in model.state_dict().items()}
    members = _stored_members(record, state)
    buffer = _to_bytes({"model": state, "identity": record.identity()})
    weights, json_path = directory / f"{record.name}.pt", directory / f"{record.name}.json"
    atomic_write_bytes(weights, buffer)
    try:
        check = None if population is None else save_population(directory, record.name, population,
                                                                  record.population_check)
        record = record.model_copy(update={"weights_sha256": hashlib.sha256(buffer).hexdigest(),
                                           "weights_bytes": len(buffer), "members": members,
                                           "population_check": check})
        atomic_write_json(json_path, record.to_json())
    except OSError:  # no description, no model (a new name, always): its other files would only fill the disk
        for written in (weights, population_file(json_path)):
            written.unlink(missing_ok=True)
        raise
    return record


def population_file(json_path: Path) -> Path:
    """Where the population check of the model described by ``json_path`` is stored."""
    return json_path.with_name(f"{json_path.stem}.population.pt")


def save_population(directory: Path, name: str, score: GaussianScore, check: PopulationCheck) -> PopulationCheck:
    buffer = _to_bytes(score.tensors())
    path = population_file(directory / f"{name}.json")
    atomic_write_bytes(path, buffer)
    return check.model_copy(update={"file": path.name, "sha256": hashlib.sha256(buffer).hexdigest()})


def _stored_members(record: ModelRecord, state: dict[str, torch.Tensor]) -> tuple[Member, ...]:
    """An ensemble's members as stored: all in ``NAME.pt`` (member K's tensors under ``members.K.``), each with
    the digest of its own tensors (:func:`member_digest`)."""
    found = {key.split(".")[1] for key in state if key.startswith("members.")}
    if found != {str(i) for i in range(len(record.members))}:
        raise ValueError(f"the record names {len(record.members)} ensemble members, the model has {len(found)}")
    return tuple(member.model_copy(update={"weights_file": f"{record.name}.pt",
                                           "weights_sha256": member_digest(state, i)})
                 for i, member in enumerate(record.members))


def member_digest(state: dict[str, torch.Tensor], index: int | None) -> str:
    """SHA-256 of ensemble member ``index``'s stored tensors (each name without its ``members.K.`` prefix, dtype,
    shape and bytes, in name order): the digest of that network's own stored state dict, with index None."""
    prefix = "" if index is None else f"members.{index}."
    digest = hashlib.sha256()
    for key in sorted(k for k in state if k.startswith(prefix)):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key[len(prefix):]}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def network_digest(model: nn.Module) -> str:
    """:func:`member_digest` of a loaded network as it would be stored: the digest its ensemble member records
    carry, so the same weights are recognised wherever they were loaded from."""
    return member_digest({key: _storage(tensor) for key, tensor in model.state_dict().items()}, None)


def _storage(tensor: torch.Tensor) -> torch.Tensor:
    """Floating tensors are stored as float16: half the size (the whole lineup must stay within 150 MB).

    Training rounds the model through float16 before its final evaluation (``round_to_storage``), so the
    stored report describes exactly the weights that are shipped.
    """
    tensor = tensor.detach().cpu().contiguous()
    return tensor.half() if tensor.is_floating_point() else tensor


@torch.no_grad()
def round_to_storage(model: nn.Module) -> None:
    """Round every floating tensor that is stored (the state dict) through the storage precision, in place.

    Only what is stored: constants a model rebuilds when it is loaded (the ImageNet input normalisation, kept
    as non-persistent buffers) come back in float32, and rounding them here made validation read different
    probabilities from the app's (up to 0.006 on a shipped EfficientNet, enough to move a film across the
    threshold that sits on a validation film's score)."""
    for tensor in model.state_dict().values():  # the model's own tensors, not copies
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())


def kept_when_stored(model: nn.Module) -> bool:
    """Whether storing ``model`` keeps its weights exactly (false for an older float32 checkpoint: rounded)."""
    return all(_storage(t).to(t.dtype).equal(t.detach().cpu()) for t in model.state_dict().values())


def _to_bytes(obj) -> bytes:
    handle = io.BytesIO()
    torch.save(obj, handle)
    return handle.getvalue()


def load_checkpoint(json_path: Path) -> LoadedModel:
    """Load and verify one model; any problem is a CheckpointError naming the file. A shipped model's
    description and weights must also match the checksum manifest. A version's files are rewritten one after
    another (fit-population) and read so too, without a lock: a refusal while any of them changed is tried
    again, twice at most (found by a review: a load spanning a rewrite refused the model as corrupt)."""
    for tries in range(1, 4):
        before = _stamps(json_path)
        try:
            return _load_checkpoint(json_path)
        except CheckpointError:
            if tries == 3 or _stamps(json_path) == before:
                raise


def _stamps(json_path: Path) -> tuple:
    """(mtime, size, inode) of a version's files and its folder's manifest, None for one missing."""
    paths = (json_path, json_path.with_suffix(".pt"), population_file(json_path), json_path.parent / MANIFEST_FILE)
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) if (s := _stat(p)) else None for p in paths)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _load_checkpoint(json_path: Path) -> LoadedModel:
    shipped = manifest.is_shipped(json_path)
    record = read_model_record(json_path, manifest.read_verified(json_path) if shipped else None)
    weights = json_path.with_suffix(".pt")
    try:
        data = read_regular_file(weights, MAX_WEIGHTS_BYTES)  # a FIFO: refused, not waited on
    except OSError as exc:
        raise CheckpointError(f"Weights file {weights.name} cannot be read ({exc.strerror or exc}).") from exc
    if shipped:
        manifest.verify(weights, data)
    if hashlib.sha256(data).hexdigest() != record.weights_sha256:
        raise CheckpointError(
            f"Weights file {weights.name} does not match its description (truncated, replaced or corrupt)."
        )
    try:
        payload = _load_tensors(data)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        # torch's own text would advise loading with weights_only=False, i.e. running the file's code: never
        raise CheckpointError(
            f"Weights file {weights.name} was refused: it is corrupt or holds objects other than tensors "
            f"({type(exc).__name__}). Restore it from where the model came from."
        ) from exc
    if not isinstance(payload, dict) or set(payload) != {"model", "identity"}:
        raise CheckpointError(f"Weights file {weights.name} is not a checkpoint written by this program.")
    if payload["identity"] != record.identity():
        raise CheckpointError(f"Weights file {weights.name} and its description disagree on the model's identity.")
    try:
        model = _build(record)
    except ValueError as exc:
        raise CheckpointError(f"{json_path.name}: {exc}.") from exc
    _verify_members(record, payload["model"], weights.name)
    try:
        model.load_state_dict(payload["model"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:  # torch's text: many lines of tensor names, for the log
        logging.getLogger(__name__).warning("weights %s do not fit %s: %s", weights.name, record.arch, exc)
        raise CheckpointError(f"Weights in {weights.name} do not fit architecture {record.arch} as this program "
                              "builds it (written by another version of it?); restore them from where the model "
                              "came from, or train it again.") from None
    model.eval()
    return LoadedModel(record, model, _load_population(json_path, record, shipped))


def _load_population(json_path: Path, record: ModelRecord, shipped: bool) -> GaussianScore | None:
    """The population check's score, verified like the weights (its hash in the JSON; the manifest when
    shipped); None when the version has none. A damaged or swapped file refuses the model: a check that
    silently changed what it warns on would be worse than none. A *site* version copied as the usual pair
    (NAME.json, NAME.pt) without its population file is served unchecked, as older versions are; a shipped
    one must have every file its manifest lists."""
    check = record.population_check
    if check is None:
        return None
    path = population_file(json_path)
    if check.file != path.name:
        raise CheckpointError(f"{json_path.name} names population-check file {check.file}, not {path.name}; the "
                              "description was not written by this program.")
    if not shipped and not path.exists():
        return None
    try:
        data = manifest.read_verified(path) if shipped else read_regular_file(path, MAX_WEIGHTS_BYTES)
    except OSError as exc:
        raise CheckpointError(f"Population-check file {path.name} cannot be read ({exc.strerror or exc}).") from exc
    if hashlib.sha256(data).hexdigest() != check.sha256:
        raise CheckpointError(f"Population-check file {path.name} does not match its description (replaced or "
                              "corrupt), so the model is refused. Restore it, or fit it again with "
                              "`python -m core fit-population NAME --refit`.")
    try:
        return GaussianScore.from_tensors(_load_tensors(data))
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"Population-check file {path.name} was refused: it is corrupt or holds objects "
                              f"other than tensors ({type(exc).__name__}).") from exc


def _load_tensors(data: bytes):
    """``torch.load`` of tensors only (``weights_only``), without the warnings it prints about refused objects."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _build(record: ModelRecord) -> nn.Module:
    """The untrained network a record describes: its architecture, or an ensemble of its members."""
    if not record.members:
        return build_model(record.arch, record.model_args.num_classes, record.image_size, pretrained=False)[0]
    if record.arch != ENSEMBLE:
        raise ValueError(f"it names ensemble members but its architecture is {record.arch}")
    specs = [MemberSpec(member.arch, member.image_size) for member in record.members]
    if ensemble_input_size([spec.image_size for spec in specs]) != record.image_size:
        raise ValueError(f"its input size {record.image_size} px does not fit its members' sizes")
    return build_ensemble(specs, record.model_args.num_classes)


def _verify_members(record: ModelRecord, state: dict, weights_name: str) -> None:
    """Each ensemble member's tensors must match the digest its description records."""
    for index, member in enumerate(record.members):
        if member.weights_file != weights_name:
            raise CheckpointError(f"Member {index + 1} of {record.name} names weights file {member.weights_file}, "
                                  f"not {weights_name}; the description was not written by this program.")
        try:
            digest = member_digest(state, index)
        except (AttributeError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"Weights file {weights_name} holds something other than tensors.") from exc
        if digest != member.weights_sha256:
            raise CheckpointError(f"Member {index + 1} ({member.arch}) in {weights_name} does not match its "
                                  "description (replaced or corrupt), so the ensemble is refused.")
