"""What every stored record shares: frozen, typed, validated once where JSON is read (pydantic).

Older JSON keeps loading: keys a record no longer has are ignored and keys it gained have defaults.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

Interval = tuple[float, float]  # a 95 % interval (low, high): Wilson for a share of films, else resampled
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
        raise ValueError(f"{what} is not a valid {kind.__name__}: {where}: {_problem(first)}") from None


def _problem(error: dict) -> str:
    """A validation error in words, with the value found where it is short (a CLI review: an AUC of NaN read
    "Input should be less than or equal to 1"; a JSON list "a valid dictionary or instance of MeasurementsFile")."""
    kind, message, found = (error.get(key) for key in ("type", "msg", "input"))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"it should be a JSON object ({{...}}), not {_json_kind(found)}"
    if isinstance(found, float) and found != found:  # NaN: no comparison holds, so every bound "failed"
        return "it should be a number, not NaN"
    # a number or true/false as the file spells it; never a string, which a record may have taken from anyone
    shown = json.dumps(found) if isinstance(found, (bool, int, float)) and len(json.dumps(found)) <= 40 else None
    return f"{message} (it is {shown})" if shown is not None else message


def _json_kind(value: object) -> str:
    kinds = {list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), "something else")


MAX_WEIGHTS_BYTES = 2**30  # far over any model here (the largest is ~25 MB); read whole, then hashed
MAX_RECORD_BYTES = 64 * 2**20  # the largest description is a few hundred KB; anything this size is not one


def read_record(kind: type[R], path: Path, what: str | None = None) -> R:
    """Read and validate one JSON file; OSError or ValueError (with the file's name) when it cannot be. A file
    over :data:`MAX_RECORD_BYTES`, or nested deeper than the JSON parser recurses, is a ValueError too: a record
    file may come from anyone (a measurements file, a job's folder), so neither exhausts memory nor the stack."""
    what = what or path.name
    try:
        raw = read_regular_file(path, MAX_RECORD_BYTES + 1)
    except NotARegularFile:
        raise ValueError(f"{what} cannot be read (not a regular file)") from None
    return record_from_bytes(kind, raw, what)


class NotARegularFile(OSError):
    """A FIFO, a device or a folder where a file was named."""


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of ``path`` opened with ``flags``, without blocking (a FIFO would otherwise wait for its other
    end for ever), when it is a regular file; closed and NotARegularFile otherwise (a FIFO, a device, a folder)."""
    fd = os.open(path, flags | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not a regular file")
    return fd


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``, a regular file (:func:`open_regular`). Any file someone may name (a
    record, a manifest, weights)."""
    with os.fdopen(open_regular(path), "rb") as handle:
        return handle.read(limit)


def record_from_bytes(kind: type[R], raw: bytes, what: str) -> R:
    """:func:`read_record` on bytes already read (e.g. the very bytes a checksum was verified on)."""
    if len(raw) > MAX_RECORD_BYTES:
        raise ValueError(f"{what} cannot be read (larger than {MAX_RECORD_BYTES // 2**20} MiB)")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} cannot be read (not JSON: {exc})") from None
    except UnicodeDecodeError:  # the codec's own words ("'utf-16-le' codec can't decode byte 0x7b") said nothing
        raise ValueError(f"{what} cannot be read (not JSON: not text in UTF-8, UTF-16 or UTF-32)") from None
    except ValueError:  # Python's own guard: an integer of thousands of digits
        raise ValueError(f"{what} cannot be read (it holds a number too long to be a figure)") from None
    except RecursionError:
        raise ValueError(f"{what} cannot be read (nested too deeply to be a record)") from None
    return parse_record(kind, data, what)
