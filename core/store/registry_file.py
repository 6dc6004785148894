"""``registry.json``'s record: one default model per task, and every promotion that made one (core.store.registry
reads and writes it)."""
from __future__ import annotations

from pydantic import Field, computed_field

from core.store.base import Record


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
