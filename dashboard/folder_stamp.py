"""A folder's stamp: what changes when the films a folder holds change, for caches keyed on a folder's state
(Compare's evaluation on a folder, the Retrain form's preview)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core.films.folders import SPLITS


def folder_stamp(folder: str | Path) -> str:
    """A digest of every file under a dataset folder (its place, size and modification time): changes when films
    come, go, or are replaced in place (which leaves the folders' own times alone). "" when it cannot be read."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return ""  # missing or unreadable: evaluate_folder says so in words
    lines, visited = [], set()

    def unreadable(exc: OSError) -> None:
        """The root's own listing failing ends the stamp; a sub-folder's is a line, like an unreadable file's: one
        unreadable folder anywhere (lost+found, a private .folder) made the whole folder read as gone (found by a
        review; discover names one it needs)."""
        if exc.filename is None or Path(exc.filename) == root:
            raise exc
        lines.append(f"{os.path.relpath(exc.filename, root)}\0unreadable folder")

    try:  # linked class (and split) folders followed, as discover reads them, each real folder once
        for here, folders, files in os.walk(root, onerror=unreadable, followlinks=True):
            facts, inside = os.stat(here), Path(here).relative_to(root).parts
            if (facts.st_dev, facts.st_ino) in visited or visited.add((facts.st_dev, facts.st_ino)):
                folders[:] = []
                continue
            if inside and not (len(inside) == 1 and inside[0] in SPLITS):  # deeper links: discover stays out
                folders[:] = [f for f in folders if not os.path.islink(os.path.join(here, f))]
            for name in files:
                try:
                    facts = os.stat(os.path.join(here, name))
                    seen = f"{facts.st_size}\0{facts.st_mtime_ns}"
                except OSError:  # a dangling link, a film gone meanwhile: named, and the rest still counts
                    seen = "unreadable"
                lines.append(f"{os.path.relpath(here, root)}/{name}\0{seen}")
    except RecursionError:  # folders nested past Python's limit: read, discover says so in words (a review: Compare
        return "nested too deeply"  # called such a folder "moved, renamed or deleted")
    except OSError:
        return ""
    return hashlib.sha256("\n".join(sorted(lines)).encode("utf-8", "surrogateescape")).hexdigest()
