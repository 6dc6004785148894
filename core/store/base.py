"""What every stored record shares: frozen, typed, validated once where JSON is read (pydantic).

Older JSON keeps loading: keys a record no longer has are ignored and keys it gained have defaults.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

Interval = tuple[float, float]  # a 95 % bootstrap interval (low, high)
R = TypeVar("R", bound="Record")


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, protected_namespaces=())

    def to_json(self) -> dict:
        """The JSON-able form written to disk and printed by the CLI (aliases such as ``at_0.5`` kept)."""
        return self.model_dump(mode="json", by_alias=True)


def parse_record(kind: type[R], data: object, what: str) -> R:
    """``data`` validated as ``kind``; ValueError naming ``what`` and the first problem otherwise."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise ValueError(f"{what} is not a valid {kind.__name__}: {where}: {first['msg']}") from None


def read_record(kind: type[R], path: Path, what: str | None = None) -> R:
    """Read and validate one JSON file; OSError or ValueError (with the file's name) when it cannot be."""
    what = what or path.name
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} cannot be read (not JSON: {exc})") from None
    return parse_record(kind, data, what)
