"""The model registry: every ``NAME.json`` + ``NAME.pt`` pair in the checkpoints folder, plus
``registry.json`` naming one default model per task and recording every promotion.

Writes happen under a file lock and atomically, so a killed training job can never leave a half-written
registry or change a default. Imports no torch: pages list models before any model loads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from core import clock
from core.config import settings
from core.errors import CheckpointError, ModelNotFound
from core.store.atomic import atomic_write_json
from core.store.base import read_record
from core.store.records import ModelRecord, Promotion, RegistryFile, read_model_record

REGISTRY_FILE = "registry.json"


def checkpoint_dir() -> Path:
    """The checkpoints folder (``CXR_CHECKPOINTS``, see core.config)."""
    return settings().checkpoints


def registry_lock(directory: Path | None = None) -> FileLock:
    directory = directory or checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return FileLock(str(directory / ".registry.lock"), timeout=30)


@dataclass(frozen=True)
class ModelEntry:
    record: ModelRecord
    is_default: bool  # the default of its task
    json_path: Path

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def arch(self) -> str:
        return self.record.arch

    @property
    def classes(self) -> tuple[str, ...]:
        return self.record.classes


def read_registry(directory: Path) -> RegistryFile:
    path = directory / REGISTRY_FILE
    if not path.exists():
        return RegistryFile()
    try:
        return read_record(RegistryFile, path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{REGISTRY_FILE} cannot be read ({exc}); restore it or delete it to rebuild.") from exc


def list_models(directory: Path | None = None) -> tuple[list[ModelEntry], list[str]]:
    """All readable models (the last promoted default first, then by name) and a message per broken one."""
    directory = directory or checkpoint_dir()
    if not directory.exists():
        return [], []
    registry = read_registry(directory)
    entries, problems = [], []
    for json_path in sorted(directory.glob("*.json")):
        if json_path.name == REGISTRY_FILE:
            continue
        try:
            record = read_model_record(json_path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if not json_path.with_suffix(".pt").exists():
            problems.append(f"{json_path.name} has no weights file beside it.")
            continue
        entries.append(ModelEntry(record, registry.task_defaults.get(record.task) == record.name, json_path))
    entries.sort(key=lambda e: (e.name != registry.default, not e.is_default, e.name))
    return entries, problems


def find_model(name: str | None, directory: Path | None = None, task: str | None = None) -> ModelEntry:
    """The named model; without a name, the default of ``task`` (or the most recently promoted default)."""
    directory = directory or checkpoint_dir()
    entries, problems = list_models(directory)
    if not entries:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise ModelNotFound(f"No usable model in the checkpoints folder{detail}. Train one first.")
    if name is None:
        wanted = [e for e in entries if task is None or e.task == task]
        if not wanted:
            raise ModelNotFound(f"No model for task '{task}'. Tasks with models: "
                                f"{', '.join(sorted({e.task for e in entries}))}.")
        return next((e for e in wanted if e.is_default), wanted[0])  # list_models puts the last promoted first
    for entry in entries:
        if entry.name == name:
            return entry
    raise ModelNotFound(f"No model named '{name}'. Available: {', '.join(e.name for e in entries)}.")


def next_version_name(base: str, directory: Path | None = None) -> str:
    """``base-vN`` with N one past the highest existing version; call under ``registry_lock``."""
    directory = directory or checkpoint_dir()
    pattern = re.compile(rf"^{re.escape(base)}-v(\d+)\.json$")
    versions = [int(m.group(1)) for p in directory.glob(f"{base}-v*.json") if (m := pattern.match(p.name))]
    return f"{base}-v{max(versions, default=0) + 1}"


def set_default(name: str, directory: Path | None = None) -> None:
    """Make ``name`` the default of its task, and record the promotion."""
    directory = directory or checkpoint_dir()
    with registry_lock(directory):
        _promote(find_model(name, directory), directory)


def ensure_default(name: str, directory: Path | None = None) -> None:
    """Make ``name`` its task's default only when the task has none yet (its first model)."""
    directory = directory or checkpoint_dir()
    with registry_lock(directory):  # check and write under one lock: two first trainings cannot race
        entry = find_model(name, directory)
        current = read_registry(directory).task_defaults.get(entry.task)
        if not (current and (directory / f"{current}.json").exists()):
            _promote(entry, directory)


def _promote(entry: ModelEntry, directory: Path) -> None:
    registry = read_registry(directory)
    previous = registry.task_defaults.get(entry.task)
    promotion = Promotion(task=entry.task, name=entry.name, previous=previous, at=clock.iso())
    updated = registry.model_copy(update={"task_defaults": {**registry.task_defaults, entry.task: entry.name},
                                          "promotions": [*registry.promotions, promotion]})
    atomic_write_json(directory / REGISTRY_FILE, updated.to_json())
