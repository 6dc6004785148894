"""Choosing a server folder: a data root, then a folder inside it. No server path is ever shown.

Folders come only from the configured data roots (core.films.roots); the folder box lists what is there
(two levels down) and also takes a typed path inside the root. Anything not allowed gets the one fixed
sentence of FolderNotAllowed. Put the picker outside an ``st.form``: the folder list follows the chosen
root only when the page reruns, which a form delays until it is submitted.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.errors import FolderNotAllowed, TriageError
from core.films.roots import DataRoot, data_roots, folder_label, list_folders, resolve_folder
from core.wording import valid_text

LISTED_DEPTH = 2  # e.g. kermany-224/train; deeper folders can be typed
WHOLE_ROOT = ""
NO_ROOTS = ("No data folders are set up on this server, so none can be chosen: the shared data folder beside the "
            "code was not found, and no other data root is configured. An administrator points CXR_DATA at the "
            "shared data folder, or adds data roots in the server's configuration (data-roots.toml in its "
            "cxr-triage configuration folder), then restarts the dashboard.")


def folder_choice(label: str, key: str, *, default: str | Path | None = None,
                  help: str | None = None) -> Path | None:
    """The folder chosen (resolved, inside a data root), or None after saying in words why there is none.

    ``default``: a label ``root-name/relative`` or a server folder inside a root (shown as its label).
    ``key`` keeps this picker's widgets apart from others on the page.
    """
    try:
        roots = data_roots()
    except TriageError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    if not roots:
        st.warning(NO_ROOTS, icon=":material/folder_off:")
        return None
    names = [root.name for root in roots]
    default_root, default_relative = _default(default, roots)
    root_column, folder_column = st.columns([1, 2])
    root_name = root_column.selectbox(
        "Data root", names, index=names.index(default_root), key=f"{key}-root",
        help="Folders an administrator made available on this server. Others are added in the configuration.")
    try:
        listed = list_folders(root_name, depth=LISTED_DEPTH)
    except TriageError:
        listed = []  # the root went away since it was listed: the choice below says so
    options = [WHOLE_ROOT, *listed]
    if root_name == default_root and default_relative not in options:
        options.append(default_relative)  # deeper than listed, but known to be allowed
    chosen = folder_column.selectbox(
        label, options, index=options.index(default_relative) if root_name == default_root else 0,
        key=f"{key}-folder-{root_name}", accept_new_options=True,
        format_func=lambda relative: valid_text(relative) or "(the whole data root)",  # a raw non-UTF-8 name stops
        # the page; escaped it is shown and still picked as the folder it names
        help=(help + " " if help else "") + "Pick a folder inside the data root, or type its path "
                                            "inside the root (e.g. kermany-224/train).")
    try:
        return resolve_folder(root_name, chosen or WHOLE_ROOT)
    except FolderNotAllowed as exc:
        st.error(str(exc), icon=":material/folder_off:")
        return None


def _default(default: str | Path | None, roots: list[DataRoot]) -> tuple[str, str]:
    """(root name, relative path) of ``default`` when it is allowed, else the first root itself."""
    if default:
        try:
            label = folder_label(default) if Path(default).is_absolute() else str(default)
            name, _, relative = label.partition("/")
            resolve_folder(name, relative)
            return name, relative
        except FolderNotAllowed:
            pass
    return roots[0].name, WHOLE_ROOT
