"""Server paths put in words for the pages: a training source by its data-root label or manifest name, and a
core error's message with every data root's path replaced by the root's name. Nothing on a page names a
server folder (core.films.roots); these are the helpers that keep it so where a message comes from core.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import DataRootsUnreadable, FolderNotAllowed, TriageError
from core.films.roots import data_roots, folder_label
from core.wording import valid_text

# For st.cache_data functions given a folder: a name that is not valid UTF-8 reaches them as lone surrogates, which
# Streamlit's own hashing of a str refuses (the Retrain page stopped on such a folder: a browser check).
PATHS_HASHED = {str: lambda text: text.encode("utf-8", "surrogateescape")}
MANIFEST_SUFFIX = ".toml"  # a training source that is a manifest (core.films.manifest), not a class folder
UNPLACED = "a folder (the list of data roots cannot be read)"  # a label while the roots file is broken


def source_label(source: str | Path) -> str:
    """A training source as people see it: a shipped manifest by name, a folder by its data-root label; never
    a server path."""
    path = Path(source)
    if path.suffix == MANIFEST_SUFFIX:
        return valid_text(f"{path.stem} (manifest)")
    try:
        return valid_text(folder_label(path))  # a name that is not valid UTF-8 escaped, as in core's messages
    except FolderNotAllowed:
        return _missing_inside_a_root(path) or "a folder outside the data roots"
    except DataRootsUnreadable:  # the folder picker says so and what to do; a label must not stop the page
        return UNPLACED


def inside_a_root(folder: str | Path) -> bool:
    """Whether ``folder`` is (still) inside a configured data root: a folder chosen earlier in a session is read
    again only while it is (found by a review: Compare kept evaluating one whose root an administrator removed)."""
    try:
        folder_label(folder)
    except FolderNotAllowed:
        return False
    except DataRootsUnreadable:  # perhaps only for a moment: the evaluation says so in words, and nothing is lost
        return True
    return True


def _missing_inside_a_root(path: Path) -> str | None:
    """The label a folder had inside a data root when it is gone (moved, deleted): read from its path alone."""
    try:
        roots = sorted(data_roots(), key=lambda root: len(root.path.parts), reverse=True)
    except TriageError:
        return None
    for root in roots:
        if path.is_absolute() and ".." not in path.parts and path.is_relative_to(root.path) and not path.exists():
            relative = path.relative_to(root.path).as_posix()
            return root.name if relative == "." else f"{root.name}/{relative}"
    return None


def without_server_paths(text: str, source: str | Path | None = None) -> str:
    """``text`` (a core error's message) with ``source`` and every data root's server path put in words."""
    if source is not None:  # as the message has it: escaped where its name is not valid UTF-8 (core.errors)
        for spelled in {str(source), valid_text(str(source))}:
            text = text.replace(spelled, source_label(source))
    try:
        roots = sorted(data_roots(), key=lambda root: len(str(root.path)), reverse=True)
    except TriageError:
        roots = []
    for root in roots:
        text = text.replace(str(root.path), root.name)
    return valid_text(text)
