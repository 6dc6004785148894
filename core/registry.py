"""The model registry: every ``NAME.json`` + ``NAME.pt`` pair in the checkpoints folder, plus
``registry.json`` naming the default model per task and overall.

Writes happen under a file lock and atomically, so a killed training job can never leave a half-written
registry or change the default model.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from core.checkpoints import atomic_write_json, read_metadata
from core.errors import CheckpointError, ModelNotFound

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY_FILE = "registry.json"


def checkpoint_dir() -> Path:
    """The checkpoints folder: ``$CXR_CHECKPOINTS`` or the repo's ``checkpoints/``."""
    return Path(os.environ.get("CXR_CHECKPOINTS", REPO_ROOT / "checkpoints")).resolve()


def registry_lock(directory: Path | None = None) -> FileLock:
    directory = directory or checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return FileLock(str(directory / ".registry.lock"), timeout=30)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    arch: str
    classes: tuple[str, ...]
    metadata: dict
    is_default: bool
    json_path: Path


def _read_registry(directory: Path) -> dict:
    path = directory / REGISTRY_FILE
    if not path.exists():
        return {"default": None, "task_defaults": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); restore it or delete it to rebuild.") from exc


def list_models(directory: Path | None = None) -> tuple[list[ModelEntry], list[str]]:
    """All readable models (default first, then by name) and a message for each broken one."""
    directory = directory or checkpoint_dir()
    registry = _read_registry(directory) if directory.exists() else {"default": None, "task_defaults": {}}
    entries, problems = [], []
    for json_path in sorted(directory.glob("*.json")) if directory.exists() else []:
        if json_path.name == REGISTRY_FILE:
            continue
        try:
            meta = read_metadata(json_path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if not json_path.with_suffix(".pt").exists():
            problems.append(f"{json_path.name} has no weights file beside it.")
            continue
        entries.append(ModelEntry(meta["name"], meta.get("task", "?"), meta["arch"], tuple(meta["classes"]),
                                  meta, meta["name"] == registry.get("default"), json_path))
    entries.sort(key=lambda e: (not e.is_default, e.name))
    return entries, problems


def find_model(name: str | None, directory: Path | None = None) -> ModelEntry:
    """The named model, or the default when ``name`` is None."""
    entries, problems = list_models(directory)
    if not entries:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise ModelNotFound(f"No usable model in {directory or checkpoint_dir()}{detail}. Train one first.")
    if name is None:
        return next((e for e in entries if e.is_default), entries[0])
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
    """Make ``name`` the default for its task and overall."""
    directory = directory or checkpoint_dir()
    with registry_lock(directory):
        _write_default(name, directory)


def ensure_default(name: str, directory: Path | None = None) -> None:
    """Make ``name`` the default only when there is none yet (first model of a fresh registry)."""
    directory = directory or checkpoint_dir()
    with registry_lock(directory):  # check and write under one lock: two first trainings cannot race
        registry = _read_registry(directory)
        if not (registry.get("default") and (directory / f"{registry['default']}.json").exists()):
            _write_default(name, directory)


def _write_default(name: str, directory: Path) -> None:
    entry = find_model(name, directory)
    registry = _read_registry(directory)
    registry.setdefault("task_defaults", {})[entry.task] = name
    registry["default"] = name
    atomic_write_json(directory / REGISTRY_FILE, registry)
