"""``registry.json``'s record: one default model per task, and every promotion that made one (core.store.registry
writes it)."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, computed_field

from core.errors import CheckpointError
from core.store.base import Record, read_record, record_from_bytes
from core.store.manifest import REGISTRY_FILE, has_manifest, is_shipped, read_verified


class Promotion(Record):
    """One change of a task's default model: who replaced whom, when (UTC)."""

    task: str
    name: str
    previous: str | None = None
    at: str


class RegistryFile(Record):
    """``registry.json``: one default model per task, and the record of every promotion."""

    task_defaults: dict[str, str] = {}
    promotions: list[Promotion] = []
    legacy_default: str | None = Field(default=None, alias="default", exclude=True)  # read, never written

    @computed_field
    @property
    def default(self) -> str | None:
        """The most recently promoted model: what `predict` uses when no model or task is named."""
        if self.promotions:
            return self.promotions[-1].name
        return self.legacy_default or next(iter(self.task_defaults.values()), None)


def read_registry(directory: Path) -> RegistryFile:
    path = directory / REGISTRY_FILE
    if not path.exists():
        return RegistryFile()
    try:
        verified = _verified(path) if is_shipped(path) else None  # shipped: signed in the manifest like the models
        return read_record(RegistryFile, path) if verified is None else \
            record_from_bytes(RegistryFile, verified, REGISTRY_FILE)
    except OSError as exc:  # its text would name the server path: only its reason
        raise CheckpointError(_unreadable(directory, f"{REGISTRY_FILE} cannot be read ({exc.strerror})")) from exc
    except ValueError as exc:  # already "registry.json cannot be read (why)"
        raise CheckpointError(_unreadable(directory, str(exc))) from exc


def shipped_registry(directory: Path, problems: list[str]) -> RegistryFile:
    """The shipped folder's registry, or none (no shipped defaults) when it is damaged or fails its signature, said in
    ``problems``: a CLI review found every listing refused, the site's models and pointers too, while the message
    said only that no shipped task had a default. A site's own registry still refuses every listing: the shipped
    defaults must not stand in, unsaid, for the ones the site chose."""
    try:
        return read_registry(directory)
    except CheckpointError as exc:
        problems.append(str(exc))
        return RegistryFile()


def _verified(path: Path) -> bytes | None:
    """The shipped registry's bytes as signed (the manifest read once, as every listing reads it); None without a
    readable manifest: then every shipped model is refused, each a problem, and the registry's pointers still say
    which defaults are broken while the site's models are served. Else, like a damaged registry, a CheckpointError
    (which a listing says, the shipped tasks then without a default: :func:`shipped_registry`)."""
    try:
        return read_verified(path, path.parent)
    except CheckpointError as exc:  # its words say what is wrong; what it costs, and the one file to restore
        if not has_manifest(path.parent):  # only on a refusal: the manifest is read again to tell which
            return None
        raise CheckpointError(f"{exc} Until {REGISTRY_FILE} is restored (git checkout -- checkpoints/"
                              f"{REGISTRY_FILE}), no shipped task has a default model.") from exc


def _unreadable(directory: Path, why: str) -> str:
    """What to do about an unreadable registry file, by whose it is. A review: "restore it or delete it to rebuild"
    named neither folder, and deleting the site's drops its defaults and promotions, rebuilding nothing."""
    if is_shipped(directory / REGISTRY_FILE):
        return (f"The shipped models' {why}. Restore it from the repository (git checkout -- "
                f"checkpoints/{REGISTRY_FILE}): without it no shipped task has a default model.")
    return (f"This models folder's {why}. Restore it from a backup: it holds the folder's default model of each "
            "task and every promotion, and deleting it drops them (the shipped defaults apply again).")
