"""The checksum manifest of the shipped models: ``checkpoints/MANIFEST.sha256``, tracked in git.

Why a separate file: a model's JSON records the SHA-256 of its weights, but whoever can replace the weights
can replace the JSON beside them too. The manifest lists the SHA-256 of every shipped weights file *and*
description (the description holds the operating point: a swapped threshold is as dangerous as swapped
weights), and of ``registry.json`` (its pointers choose each task's default: an edit could serve a weaker
shipped version), and it changes only through the shipping path (``train --shipped``, ``make models``), so a change
shows up in ``git diff`` and review. A shipped file whose bytes differ from the manifest, or that the
manifest does not list, is refused with a :class:`CheckpointError`; so is every shipped file when the
manifest itself is missing or malformed. What it does not protect against: someone who can rewrite the
manifest and the files together in the deployed checkout; keep that checkout read-only to the app.

The format is ``sha256sum``'s, one ``HEX  relative/path`` line per file, so
``cd checkpoints && sha256sum -c MANIFEST.sha256`` checks it without Python.

``python -m core.store.manifest`` rewrites it from the files now in the shipped folder (the last step of
``make models``); ``--check`` verifies every listed file and every shipped file against it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from core.config import settings
from core.errors import CheckpointError, TriageError
from core.store.atomic import atomic_write_bytes, restored_on_failure
from core.store.base import MAX_RECORD_BYTES, MAX_WEIGHTS_BYTES, read_regular_file

MANIFEST_FILE = "MANIFEST.sha256"
REGISTRY_FILE = "registry.json"  # the shipped default pointers: not a model, never loaded as one, but signed
SHIPPED_SUFFIXES = (".pt", ".json")
_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S.*)")


SHIPPED_FOLDER_MISSING = "The shipped models folder (CXR_CHECKPOINTS) does not exist"  # a mistyped setting


def shipped_dir() -> Path:
    """The shipped models' folder (``CXR_CHECKPOINTS``, see core.config): the repository's ``checkpoints``."""
    return settings().checkpoints


def is_shipped(path: Path, directory: Path | None = None) -> bool:
    """Whether ``path`` lies in the shipped folder (the detector's sub-folder included), as written: a linked
    file there is shipped wherever its link points (and refused when read, :func:`read_verified`)."""
    return _relative(path, directory or shipped_dir()) is not None


def shipped_files(directory: Path) -> list[Path]:
    """Every weights file and description under ``directory`` the manifest covers, sorted."""
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and p.suffix in SHIPPED_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _relative(path: Path, directory: Path) -> str | None:
    """``path`` relative to ``directory``, compared as written, or else with the links of the folders above
    the file resolved (the folder reached by another spelling); never through a link that is the file itself,
    which would name its target's path instead (a ValueError naming server paths, or a shipped link missed)."""
    written, folder = Path(os.path.abspath(path)), Path(os.path.abspath(directory))
    for inside, root in ((written, folder), (written.parent.resolve() / written.name, folder.resolve())):
        if root in inside.parents:
            return inside.relative_to(root).as_posix()
    return None


def _key(path: Path, directory: Path) -> str:
    key = _relative(path, directory)
    if key is None:
        raise CheckpointError(f"{path.name} is not in the shipped models folder, so the checksum manifest cannot "
                              "vouch for it.")
    return key


def _refuse_link(path: Path) -> None:
    """Shipped files are the bytes in the folder: a link's target is not covered by review of the checkout."""
    if path.is_symlink():
        raise CheckpointError(f"Shipped file {path.name} is refused: shipped files must be regular files, not "
                              "links. Restore the checkpoints folder from the repository.")


def read_manifest(directory: Path | None = None) -> dict[str, str]:
    """``relative path -> SHA-256`` of the shipped folder; CheckpointError when missing or malformed."""
    directory = directory or shipped_dir()
    try:
        text = read_regular_file(directory / MANIFEST_FILE, MAX_RECORD_BYTES).decode()
    except FileNotFoundError:
        raise CheckpointError(f"The shipped models have no checksum manifest ({MANIFEST_FILE}), so none of them "
                              "can be trusted; restore the checkpoints folder from the repository.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"The checksum manifest {MANIFEST_FILE} cannot be read; restore the checkpoints "
                              "folder from the repository.") from exc
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.fullmatch(line.strip())
        if not match:
            raise CheckpointError(f"Line {number} of the checksum manifest {MANIFEST_FILE} is malformed; restore "
                                  "the checkpoints folder from the repository.")
        entries[match.group(2)] = match.group(1)
    return entries


def has_manifest(directory: Path) -> bool:
    """Whether ``directory``'s manifest can be read (without one, every shipped file is refused)."""
    try:
        read_manifest(directory)
    except CheckpointError:
        return False
    return True


def write_manifest(directory: Path | None = None, files: list[Path] | None = None) -> dict[str, str]:
    """Record ``files`` (default: every shipped file, the whole manifest rebuilt) and keep the other entries
    of files that still exist. Part of the shipping path only: the app never writes the shipped folder."""
    directory = directory or shipped_dir()
    entries = {} if files is None else _existing_entries(directory)
    for path in shipped_files(directory) if files is None else files:
        entries[_key(path, directory)] = _digest(path.read_bytes())
    entries = {key: digest for key, digest in entries.items() if (directory / key).is_file()}
    text = "".join(f"{digest}  {key}\n" for key, digest in sorted(entries.items()))
    atomic_write_bytes(directory / MANIFEST_FILE, text.encode())
    return entries


def write_signed(path: Path, data: bytes) -> None:
    """Write ``path`` whole; a shipped one is signed in the manifest too (the shipping path's registry), and put
    back as it was when it cannot be, so no shipped file is ever left refused. Call under the registry lock."""
    if not is_shipped(path):
        atomic_write_bytes(path, data)
        return
    with restored_on_failure(path):
        atomic_write_bytes(path, data)
        write_manifest(shipped_dir(), [path])


def _existing_entries(directory: Path) -> dict[str, str]:
    try:
        return read_manifest(directory)
    except CheckpointError:  # no manifest yet (a new shipped folder) or an unreadable one: start afresh
        return {}


def verify(path: Path, data: bytes, directory: Path | None = None) -> bytes:
    """``data`` (the bytes read from shipped ``path``) when the manifest lists them; else CheckpointError."""
    directory = directory or shipped_dir()
    _refuse_link(path)
    try:
        expected = read_manifest(directory).get(_key(path, directory))
    except CheckpointError as exc:  # named, so that what cannot be used says which model it is
        raise CheckpointError(f"Shipped file {path.name} is refused: {exc}") from exc
    if expected is None:
        raise CheckpointError(f"{path.name} is in the shipped models folder but not in its checksum manifest "
                              f"({MANIFEST_FILE}), so it is refused. Shipped models come only from "
                              "`make models`; site-trained models belong in the site models folder.")
    if _digest(data) != expected:
        raise CheckpointError(f"{path.name} does not match the checksum manifest of the shipped models: it was "
                              "replaced or damaged after shipping, so it is refused. Restore the checkpoints "
                              "folder from the repository.")
    return data


def read_verified(path: Path, directory: Path | None = None) -> bytes:
    """The bytes of shipped ``path``, checked against the manifest (CheckpointError when unreadable or wrong)."""
    _refuse_link(path)  # before reading: a link whose target is gone is refused as a link, not as unreadable
    try:
        data = read_regular_file(path, MAX_WEIGHTS_BYTES)  # a FIFO: refused, not waited on
    except OSError as exc:
        raise CheckpointError(f"Shipped file {path.name} cannot be read ({exc.strerror or 'read error'}).") from exc
    return verify(path, data, directory)


def check(directory: Path | None = None) -> list[str]:
    """A sentence per shipped file that fails the manifest, and per listed file that is missing."""
    directory = directory or shipped_dir()
    problems = []
    try:
        listed = read_manifest(directory)
    except CheckpointError as exc:
        return [str(exc)]
    for path in shipped_files(directory):
        try:
            read_verified(path, directory)
        except CheckpointError as exc:
            problems.append(str(exc))
    problems += [f"{key} is listed in {MANIFEST_FILE} but missing." for key in listed
                 if not (directory / key).is_file()]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.store.manifest",
                                     description="Rewrite (or --check) the shipped models' checksum manifest.")
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args(argv)
    if not shipped_dir().is_dir():  # a mistyped CXR_CHECKPOINTS was made, signed empty, and reported done (a review)
        print(json.dumps({"error": f"{SHIPPED_FOLDER_MISSING}: nothing to sign or check."}))
        return 1
    try:
        if args.check:
            problems = check()
            print(json.dumps({"manifest": MANIFEST_FILE, "problems": problems}))
            return 1 if problems else 0
        entries = write_manifest()
    except TriageError as exc:
        print(json.dumps({"error": f"The checksum manifest could not be written: {exc}"}))
        return 1
    except OSError as exc:  # its text names the server path: the reason alone
        print(json.dumps({"error": "The checksum manifest could not be written "
                                   f"({exc.strerror or type(exc).__name__})."}))
        return 1
    print(json.dumps({"manifest": MANIFEST_FILE, "files": sorted(entries)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
