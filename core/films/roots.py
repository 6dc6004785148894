"""Data roots: the only server folders anyone can choose in the app, each known by a name, never by its path.

The roots are ``../shared/data`` (settings().data) when it exists, plus those an administrator lists in
``data-roots.toml`` in the config home (``CXR_DATA_ROOTS`` names another file; ``.json`` is read as JSON)::

    [roots]
    pacs-export = "/srv/films/export"     # a relative path is taken from the file's own folder

A folder is always a root plus a relative path inside it. Whatever is wrong with a request (an unknown root,
``..``, an absolute path, a symlink leading out, a file, a missing folder) gets the one fixed sentence of
:class:`~core.errors.FolderNotAllowed`, so an answer never tells an existing server folder from a missing one.
What people see is a label, ``root-name/relative``, never the server path.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.config import settings
from core.errors import DataRootsUnreadable, FolderNotAllowed, UnreadableImage
from core.store.base import open_regular

SHARED_ROOT = "shared-data"  # the name of settings().data, the real films beside the checkout
ROOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_LISTED = 200  # folders a chooser offers
MAX_SCANNED = 20_000  # directory entries looked at to find them (a root may hold huge film folders)

log = logging.getLogger(__name__)
_said: set[str] = set()  # the roots' warnings, said once per process: one train command said one 12 times


def _warn_once(message: str, *args) -> None:
    text = message % args
    if text not in _said:
        _said.add(text)
        log.warning(text)


@dataclass(frozen=True)
class DataRoot:
    name: str
    path: Path  # resolved; shown to nobody


def data_roots() -> list[DataRoot]:
    """The shared data folder (when present), then the configured roots; a name is used once, first wins."""
    current = settings()
    found = [(SHARED_ROOT, current.data)] + _configured(current.data_roots_file)
    roots: dict[str, DataRoot] = {}
    for name, path in found:
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            _warn_once("data root %s (%s) does not exist; left out", name, path)
            continue
        if resolved.is_dir() and name not in roots:
            roots[name] = DataRoot(name, resolved)
    return list(roots.values())


def _configured(file: Path | None) -> list[tuple[str, Path]]:
    if file is None or not file.is_file():
        return []
    try:
        text = file.read_text(encoding="utf-8")
        table = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # TOML/JSONDecodeError included
        _warn_once("data roots file %s cannot be read: %s", file, exc)
        raise DataRootsUnreadable("The configured list of data roots cannot be read; ask an administrator "
                                  "to correct it (the server log says where).") from None
    roots = table.get("roots", {}) if isinstance(table, dict) else None
    if not isinstance(roots, dict) or not all(isinstance(p, str) for p in roots.values()) \
            or not all(ROOT_NAME.fullmatch(str(n)) for n in roots):
        _warn_once("data roots file %s: expected a [roots] table of name = \"path\" (names %s)",
                    file, ROOT_NAME.pattern)
        raise DataRootsUnreadable("The configured list of data roots is not a table of names and folders; "
                                  "ask an administrator to correct it (the server log says where).")
    return [(name, file.parent / Path(path).expanduser()) for name, path in roots.items()]


def find_root(name: str) -> DataRoot:
    for root in data_roots():
        if root.name == name:
            return root
    raise FolderNotAllowed()


def _relative_parts(relative: str) -> tuple[str, ...]:
    """The parts of a relative path as typed; anything that could step outside is refused."""
    text = (relative or "").strip()
    if "\x00" in text or "\\" in text or text.startswith(("/", "~")) or os.path.isabs(text):
        raise FolderNotAllowed()
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise FolderNotAllowed()
    return parts


def resolve_folder(root_name: str, relative: str = "") -> Path:
    """The existing folder ``relative`` inside the root named ``root_name``, resolved (symlinks followed and
    required to stay inside the root); FolderNotAllowed, with its one fixed sentence, for anything else."""
    root = find_root(root_name)
    try:
        folder = root.path.joinpath(*_relative_parts(relative)).resolve(strict=True)
        inside = folder == root.path or folder.is_relative_to(root.path)
        if inside and folder.is_dir():
            return folder
    except (OSError, RuntimeError, ValueError):
        pass
    raise FolderNotAllowed()


def resolve_label(label: str) -> Path:
    """``root-name/relative`` (what :func:`folder_label` gives) -> the folder, checked as resolve_folder does."""
    name, _, relative = (label or "").strip().partition("/")
    return resolve_folder(name, relative)


def film_label(path: str | Path) -> str:
    """A film as a message may name it: ``root-name/relative/film.png`` inside a data root; outside every root
    (a path someone typed on the command line) the path as given, which is theirs already."""
    try:
        return folder_label(path)
    except (FolderNotAllowed, DataRootsUnreadable):
        return str(path)


def folder_label(path: str | Path) -> str:
    """``root-name/relative`` for a folder inside a root (the innermost root that holds it), never the
    server path; FolderNotAllowed for a folder outside every root."""
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise FolderNotAllowed() from None
    holders = [r for r in data_roots() if resolved == r.path or resolved.is_relative_to(r.path)]
    if not holders:
        raise FolderNotAllowed()
    root = max(holders, key=lambda r: len(r.path.parts))
    relative = resolved.relative_to(root.path).as_posix()
    return root.name if relative == "." else f"{root.name}/{relative}"


def list_folders(root: DataRoot | str, relative: str = "", depth: int = 1, limit: int = MAX_LISTED) -> list[str]:
    """Folders under ``relative`` inside ``root``, as paths relative to the root, down to ``depth`` levels,
    breadth first, at most ``limit``, sorted; hidden folders and symlinks leading out of the root are left out."""
    root = root if isinstance(root, DataRoot) else find_root(root)
    start = resolve_folder(root.name, relative)
    found: list[str] = []
    level, scanned = [start], 0
    for _ in range(max(depth, 0)):
        below = []
        for folder in level:
            try:  # no further than the cap: a million films in one folder was read whole and sorted at every
                with os.scandir(folder) as listing:  # rerun of every folder picker (a resource review)
                    entries = sorted(itertools.islice(listing, MAX_SCANNED - scanned + 1), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                scanned += 1
                if scanned > MAX_SCANNED or len(found) >= limit:
                    return sorted(found)
                if _inside(root, entry):
                    found.append(Path(entry.path).relative_to(root.path).as_posix())
                    below.append(Path(entry.path))
        level = below
    return sorted(found)


def _inside(root: DataRoot, entry: os.DirEntry) -> bool:
    """A visible folder whose real place (symlinks followed) is inside the root."""
    try:
        return (not entry.name.startswith(".") and entry.is_dir()
                and Path(entry.path).resolve(strict=True).is_relative_to(root.path))
    except (OSError, RuntimeError):
        return False


def inside_roots(folder: Path, films: list[Path]) -> list[Path]:
    """``films`` found under ``folder`` less those whose real place (links followed) is outside every data root,
    when ``folder`` itself lies inside one: a link planted in a data root does not lead the app, or a run on that
    root, to files elsewhere on the server. A folder outside every root (named on the command line by whoever
    runs the server) is read as it is. Each folder is resolved once; a film is resolved only if it is a link."""
    start = real_path(folder)
    try:  # listed afresh (once a listing): a root made since the last listing counts at once
        roots = [r.path for r in data_roots()]
    except DataRootsUnreadable:  # the app offers no folder then; a run keeps to its own folder and the shared films
        # (it read every link, as outside all roots, so a broken roots file let one lead anywhere: a review)
        roots = [p for p in [real_path(settings().data), start] if p is not None]
    if start is None or not any(start.is_relative_to(r) for r in roots):
        return films
    inside: dict[Path, bool] = {}

    def within(path: Path | None) -> bool:
        return path is not None and any(path.is_relative_to(r) for r in roots)

    kept = []
    for film in films:
        parent = film.parent
        if parent not in inside:
            inside[parent] = within(real_path(parent))
        if inside[parent] and (not film.is_symlink() or within(real_path(film))):
            kept.append(film)
    if len(kept) < len(films):
        log.warning("%d file(s) under %s lead outside the data roots; left out", len(films) - len(kept), folder)
    return kept


def open_inside_roots(path: Path, label: str | None = None) -> BinaryIO:
    """``path`` opened for reading: a regular file (NotARegularFile, an OSError, for a FIFO or a device), and not
    a link leading out of the data roots when its folder lies inside one (UnreadableImage). Films are read long
    after their folder was listed (:func:`inside_roots` drops links out only then): one swapped since for a link
    out was read (found by a review). The real place is that of the open descriptor (/proc), not of the name."""
    handle = os.fdopen(open_regular(path), "rb")
    try:
        if leads_out(path, _opened(handle.fileno(), path)):
            raise UnreadableImage(f"{label or path.name} is a link leading outside the data roots, which is never "
                                  "read.")
    except BaseException:
        handle.close()
        raise
    return handle


def audit_label(source: str | Path) -> str:
    """A training source as the audit log names it (the log is shown on a page): a folder by its data-root label
    (``review/site2``), as calibrations name theirs; anything else (a manifest's name) by its last two parts. Before,
    every folder was named by its last two parts, so a folder at the top of a root showed the root's server folder
    (a review: ``data/site2`` for ``review/site2``)."""
    try:
        return folder_label(source)
    except (FolderNotAllowed, DataRootsUnreadable):
        return "/".join(Path(source).parts[-2:])


def leads_out(named: Path, real: Path) -> bool:
    """Whether a file opened as ``named`` really is (``real``) outside every data root while ``named``'s folder
    lies inside one, really or by its name (a review: a class folder swapped for a link out, after the listing, took
    its films' folder out of the roots as well); never when the roots cannot be read (the listing decided then)."""
    roots = _current_roots()
    folders = [folder for folder in (real_path(named.parent), Path(os.path.abspath(named.parent))) if folder]
    return roots is not None and any(folder.is_relative_to(r) for folder in folders for r in roots) and \
        not any(real.is_relative_to(r) for r in roots)


_recent_roots: tuple[tuple, list[Path] | None] | None = None


def _current_roots() -> list[Path] | None:
    """The data roots' real places for :func:`leads_out`, listed again only when the settings or the roots file
    change (a run reads thousands of films; listing them each time logged a missing root once a film); None when
    unreadable. A root folder made since is not seen until then: leads_out then lets its films' links be."""
    global _recent_roots
    current = settings()
    try:
        stat = current.data_roots_file.stat() if current.data_roots_file is not None else None
        stamp = (current, stat.st_mtime_ns, stat.st_size) if stat else (current,)
    except OSError:
        stamp = (current,)
    if _recent_roots is None or _recent_roots[0] != stamp:
        try:
            _recent_roots = (stamp, [r.path for r in data_roots()])
        except DataRootsUnreadable:
            _recent_roots = (stamp, None)
    return _recent_roots[1]


def _opened(fd: int, path: Path) -> Path:
    """Where the file open as ``fd`` really is: from /proc on Linux, else ``path`` resolved (a moment earlier)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return path.resolve()


def real_path(path: str | Path) -> Path | None:
    """Where ``path`` really is (links followed), or None when it does not exist."""
    try:
        return Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
