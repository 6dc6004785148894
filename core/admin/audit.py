"""The audit log: every administrative action (a job started or cancelled, a default changed, a calibration,
a folder evaluated) as one JSON line: UTC time, who, what, which model, and the figures that mattered.

The file lives outside the code tree (``settings().audit_log``, ``CXR_AUDIT_LOG``). It is only ever appended
to: each line is one ``write`` on a descriptor opened with ``O_APPEND``, under an ``flock``, so lines from
concurrent writers (the app, a job runner, the CLI) never interleave or overwrite one another. Readers skip a
damaged line rather than fail: a torn or hand-edited line must not hide the rest of the trail.
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

from core import clock
from core.config import settings
from core.errors import AuditLogUnavailable
from core.store.base import Record, open_regular, parse_record

READ_CHUNK = 64 * 1024
REFUSED_SIGN_IN = "sign-in.refused"  # a wrong admin passphrase (core.access.signin)
LOCK_WAIT_S = 10.0  # a writer holds the lock for one write: longer means a stuck process, refused in words


class AuditEntry(Record):
    """One line of the audit log."""

    time: str  # UTC, core.clock.iso
    who: str  # "cli:<account>", "job", a signed-in admin, "local", ...
    action: str  # e.g. "job.start", "job.cancel", "default.change", "default.refused", "calibrate", "evaluate"
    model: str | None = None
    details: dict[str, Any] = {}


def audit_log_path() -> Path:
    return settings().audit_log


def record_action(action: str, who: str, *, model: str | None = None, **details) -> AuditEntry:
    """Append one action to the audit log; AuditLogUnavailable when it cannot be written."""
    entry = AuditEntry(time=clock.iso(), who=who or "unknown", action=action, model=model,
                       details=json.loads(json.dumps(details, default=str)))  # JSON-able, whatever was passed
    line = (json.dumps(entry.to_json(), ensure_ascii=True) + "\n").encode()
    fd = _open_for_appending()
    try:
        _lock(fd)  # one writer at a time, even where O_APPEND alone is not atomic
        written = os.write(fd, line)
    except OSError as exc:
        raise _unavailable(exc) from exc
    finally:
        os.close(fd)  # closing drops the lock
    if written != len(line):
        raise AuditLogUnavailable("The audit log could not be written in full (is its disk full?); "
                                  "ask an administrator to check it.")
    return entry


def _lock(fd: int) -> None:
    """The log's lock, waited on for LOCK_WAIT_S at most: callers write inside the registry lock with Ctrl+C
    held (core.stop_signals), where a wait without end could not be stopped."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
    raise AuditLogUnavailable(f"The audit log is busy: another process has held it for {LOCK_WAIT_S:g} s (a stuck "
                              "process); ask an administrator to check it.")


def ensure_writable() -> None:
    """AuditLogUnavailable now when the audit log cannot be appended to. Called before an action that changes a
    model, whose entry is written once the action is done (with its outcome): so a log that cannot be written
    stops the action instead of letting it happen unrecorded."""
    os.close(_open_for_appending(" Nothing was changed."))


def _open_for_appending(then: str = "") -> int:
    path = audit_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # a FIFO or device: refused
    except OSError as exc:
        raise _unavailable(exc, then) from exc


def _unavailable(exc: OSError, then: str = "") -> AuditLogUnavailable:
    return AuditLogUnavailable(f"The audit log cannot be written ({exc.strerror or type(exc).__name__}); ask an "
                               f"administrator to check the audit log setting (CXR_AUDIT_LOG).{then}")


def read_actions(limit: int = 100, refused_sign_ins: bool | None = None, within: int = 20_000) -> list[AuditEntry]:
    """The last ``limit`` actions, newest first; damaged lines are skipped. No log yet: an empty list.
    ``refused_sign_ins``: only those (True) or all but those (False), from the last ``within`` lines: a guessing
    spree (30 checked attempts per 15 minutes) must not push every change out of a viewer's last lines."""
    if limit <= 0:
        return []
    entries = []
    for seen, line in enumerate(_lines_from_the_end(audit_log_path())):
        if refused_sign_ins is not None and seen >= within:
            break
        entry = _parse(line)
        if entry is not None and (refused_sign_ins is None or (entry.action == REFUSED_SIGN_IN) == refused_sign_ins):
            entries.append(entry)
            if len(entries) >= limit:
                break
    return entries


def find_action(job_id: str, action: str, until: tuple[str, ...], key: str = "job") -> AuditEntry | None:
    """Job ``job_id``'s newest ``action``, looking back no further than its newest action in ``until`` (e.g. its
    start: what it did comes after); None when there is none, or no log. ``key``: the detail naming it (``run``:
    a training run's id, command-line runs too)."""
    for line in _lines_from_the_end(audit_log_path()):
        entry = _parse(line)
        if entry is None or entry.details.get(key) != job_id:
            continue
        if entry.action == action:
            return entry
        if entry.action in until:
            return None
    return None


def _parse(line: bytes) -> AuditEntry | None:
    try:
        return parse_record(AuditEntry, json.loads(line), "An audit log line")
    except (ValueError, UnicodeDecodeError, RecursionError):  # torn, edited, nested or not ours: others count
        return None


def _lines_from_the_end(path: Path):
    """The file's non-empty lines, last first, read backwards a chunk at a time (the log only grows)."""
    try:
        handle = os.fdopen(open_regular(path), "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditLogUnavailable(f"The audit log cannot be read ({exc.strerror or type(exc).__name__}); ask an "
                                  "administrator to check the audit log setting (CXR_AUDIT_LOG).") from exc
    with handle:
        position = handle.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(READ_CHUNK, position)
            position -= step
            handle.seek(position)
            lines = (handle.read(step) + rest).split(b"\n")
            rest = lines.pop(0)  # may be the tail of a line that starts in the previous chunk
            yield from (line for line in reversed(lines) if line.strip())
        if rest.strip():
            yield rest


def cli_user() -> str:
    """Who runs the CLI: ``cli:<account>``, from the process's user id (not from the environment)."""
    try:
        return f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:
        return f"cli:uid {os.getuid()}"
