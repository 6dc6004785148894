"""Data roots: the only server folders anyone can choose, by root name and relative path; one fixed refusal.

The shared films (../shared/data) are the default root; an extra root is configured through a TOML or JSON
file in a temporary config home. The picker is driven through AppTest on a tiny page of its own.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import DataRootsUnreadable, DatasetError, FolderNotAllowed
from core.films.roots import (SHARED_ROOT, audit_label, data_roots, find_root, folder_label, list_folders,
                              resolve_folder, resolve_label)

REFUSAL = FolderNotAllowed.MESSAGE


@pytest.fixture
def site(tmp_path, data_dir, settings_env):
    """A config home listing one extra root, ``site``, with a class tree, a file, a hidden folder and two
    symlinks (one staying inside, one leading out to a secret folder beside the root)."""
    root = tmp_path / "site-films"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / "batch-1" / cls).mkdir(parents=True)
    (root / "batch-1" / "NORMAL" / "film.png").write_bytes(b"x")
    (root / ".hidden").mkdir()
    (tmp_path / "secret" / "inside").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "alias").symlink_to(root / "batch-1")
    config = tmp_path / "config" / "cxr-triage"
    config.mkdir(parents=True)
    (config / "data-roots.toml").write_text(f'[roots]\nsite = "{root}"\nmissing = "{tmp_path / "gone"}"\n'
                                            'relative = "../../site-films/batch-1"\n')
    settings_env(XDG_CONFIG_HOME=str(tmp_path / "config"), CXR_DATA=str(data_dir))
    return root


def test_the_shared_films_and_the_configured_roots_are_the_roots(site, data_dir):
    roots = data_roots()
    assert [r.name for r in roots] == [SHARED_ROOT, "site", "relative"]  # a missing folder is left out
    assert roots[0].path == data_dir.resolve() and roots[1].path == site.resolve()
    assert roots[2].path == (site / "batch-1").resolve()  # relative to the file's own folder


def test_a_missing_root_is_said_once_per_process_however_often_the_roots_are_read(site, caplog):
    """Found by a review: one train command printed the same warning twelve times."""
    with caplog.at_level("WARNING", logger="core.films.roots"):
        for _ in range(3):
            assert [r.name for r in data_roots()] == [SHARED_ROOT, "site", "relative"]
    assert [r.getMessage() for r in caplog.records].count(f"data root missing ({site.parent / 'gone'}) does not "
                                                          "exist; left out") == 1


def test_a_folder_inside_a_root_resolves(site, data_dir):
    assert resolve_folder(SHARED_ROOT, "kermany-224/train") == (data_dir / "kermany-224" / "train").resolve()
    assert resolve_folder("site", "") == resolve_folder("site", ".") == site.resolve()
    assert resolve_folder("site", "./batch-1/NORMAL/") == (site / "batch-1" / "NORMAL").resolve()
    assert resolve_folder("site", "alias") == (site / "batch-1").resolve()  # a symlink that stays inside
    assert resolve_label("site/batch-1") == (site / "batch-1").resolve()


@pytest.mark.parametrize("root, relative", [
    ("site", "../secret"),  # climbing out
    ("site", "batch-1/../../secret"),
    ("site", "escape"),  # a symlink leading out of the root
    ("site", "escape/inside"),
    ("site", "/etc"),  # absolute paths
    ("site", "~/"),
    ("site", "batch-1\\NORMAL"),
    ("site", "batch-1/NORMAL/film.png"),  # a file, not a folder
    ("site", "no-such-folder"),  # missing: told apart from nothing else
    ("site", "nul\x00l"),
    ("nowhere", ""),  # an unknown root
    ("missing", ""),  # a configured root whose folder is gone
])
def test_anything_else_gets_one_fixed_sentence(site, root, relative):
    with pytest.raises(FolderNotAllowed) as refused:
        resolve_folder(root, relative)
    assert str(refused.value) == REFUSAL  # the same words for a missing folder as for a forbidden one


def test_labels_name_the_root_and_never_the_server_path(site, data_dir, tmp_path):
    assert folder_label(data_dir / "films") == f"{SHARED_ROOT}/films"
    assert folder_label(site) == "site"
    assert folder_label(site / "batch-1" / "NORMAL") == "relative/NORMAL"  # the innermost root holds it
    for outside in (tmp_path / "secret", Path("/etc"), tmp_path / "gone"):
        with pytest.raises(FolderNotAllowed):
            folder_label(outside)


def test_the_audit_log_names_a_training_folder_by_its_label(site, tmp_path):
    """A browser review: a job's dataset in the audit log was its last two server folders (``site-films/batch-1``
    here, ``data/site2`` there), where calibrations give the label."""
    (site / "ward").mkdir()
    assert audit_label(site / "ward") == "site/ward" and audit_label(str(site / "batch-1")) == "relative"
    assert audit_label("four-class") == "four-class"  # a shipped manifest by its name
    assert audit_label(tmp_path / "secret" / "inside") == "secret/inside"  # outside every root: as before


def test_the_chooser_lists_subfolders_only_and_within_the_root(site, data_dir):
    assert list_folders("site") == ["alias", "batch-1"]  # no file, no hidden folder, no escaping symlink
    assert list_folders("site", "batch-1") == ["batch-1/NORMAL", "batch-1/PNEUMONIA"]
    assert list_folders("site", depth=2) == ["alias", "alias/NORMAL", "alias/PNEUMONIA", "batch-1",
                                             "batch-1/NORMAL", "batch-1/PNEUMONIA"]
    shared = list_folders(SHARED_ROOT, depth=2)
    assert {"films", "kermany-224", "kermany-224/train", "films/NORMAL"} <= set(shared)
    assert all(not Path(p).is_absolute() for p in shared)
    first = list_folders(find_root(SHARED_ROOT), depth=2, limit=3)  # breadth first: the top level comes first
    assert len(first) == 3 and all("/" not in p for p in first)
    with pytest.raises(FolderNotAllowed):
        list_folders("site", "escape")


def test_films_linked_from_a_root_to_elsewhere_are_not_read(site, films_dir, tmp_path):
    """A data root may hold links: to films inside a root they are read, to files outside every root they are
    not (one link to a film, one class folder linked out whole); a folder outside every root (named on the
    command line) is read as it is, links and all."""
    from core.films.folders import discover

    elsewhere = tmp_path / "secret" / "films"  # beside the root, not inside any
    elsewhere.mkdir(parents=True)
    normal, pneumonia = sorted((films_dir / "NORMAL").iterdir())[:2], sorted((films_dir / "PNEUMONIA").iterdir())[:2]
    for film in normal + pneumonia:
        (elsewhere / film.name).write_bytes(film.read_bytes())
    tree = site / "linked"
    (tree / "NORMAL").mkdir(parents=True)
    (tree / "NORMAL" / "own.jpeg").write_bytes(normal[0].read_bytes())
    (tree / "NORMAL" / "shared.jpeg").symlink_to(normal[1])  # into the shared root: read
    (tree / "NORMAL" / "out.jpeg").symlink_to(elsewhere / normal[1].name)  # out of every root: not read
    (tree / "PNEUMONIA").mkdir()
    (tree / "PNEUMONIA" / "own.jpeg").write_bytes(pneumonia[0].read_bytes())
    (tree / "PNEUMONIA" / "out.jpeg").symlink_to(elsewhere / pneumonia[0].name)
    found = discover(tree)
    assert [p.name for p in found.paths] == ["own.jpeg", "shared.jpeg", "own.jpeg"]
    assert found.class_counts() == [2, 1]
    assert [p.relative_to(tree).as_posix() for p in found.links_out] == ["NORMAL/out.jpeg", "PNEUMONIA/out.jpeg"]

    whole = site / "whole"
    (whole / "PNEUMONIA").mkdir(parents=True)
    (whole / "PNEUMONIA" / "own.jpeg").write_bytes(pneumonia[1].read_bytes())
    (whole / "NORMAL").symlink_to(elsewhere)  # a class folder linked out: none of its films is read
    with pytest.raises(DatasetError, match="NORMAL .*hold no films. 4 film file[(]s[)] there are links leading "
                                           "outside the data roots, which are never read.$"):
        discover(whole)

    outside = tmp_path / "operator-tree"  # named on the command line, outside every root
    (outside / "PNEUMONIA").mkdir(parents=True)
    (outside / "PNEUMONIA" / "own.jpeg").write_bytes(pneumonia[1].read_bytes())
    (outside / "NORMAL").symlink_to(elsewhere)
    assert discover(outside).class_counts() == [len(list(elsewhere.iterdir())), 1]
    # the roots file broken since (found by a review): the root's links out were then read; they stay unread
    (tmp_path / "config" / "cxr-triage" / "data-roots.toml").write_text("[roots\n")
    assert [p.name for p in discover(tree).paths] == ["own.jpeg", "shared.jpeg", "own.jpeg"]

def test_a_folder_gone_from_a_root_is_still_named_by_its_label(site, tmp_path):
    """A job's dataset folder moved away since: its failure names where it was (root/relative), never the
    server path, and a folder outside every root stays unnamed."""
    from dashboard.labels import source_label, without_server_paths

    gone = site.resolve() / "batch-2" / "NORMAL"
    assert source_label(gone) == "site/batch-2/NORMAL"
    assert without_server_paths(f"Dataset folder {gone} does not exist.", gone) == \
        "Dataset folder site/batch-2/NORMAL does not exist."
    for outside in (tmp_path / "elsewhere", site.resolve() / ".." / "secret"):
        assert source_label(outside) == "a folder outside the data roots"

def test_a_json_roots_file_named_by_the_environment(tmp_path, data_dir, settings_env):
    (tmp_path / "films").mkdir()
    file = tmp_path / "roots.json"
    file.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "films")}}))
    settings_env(CXR_DATA_ROOTS=str(file), CXR_DATA=str(data_dir))
    assert [r.name for r in data_roots()] == [SHARED_ROOT, "ward-7"]


@pytest.mark.parametrize("text", ['[roots\nsite = "x"', '[roots]\n"../bad name" = "/tmp"', '[roots]\nsite = 3',
                                  'roots = ["a"]', "x = " + "[" * 100_000 + "]" * 100_000],
                         ids=["torn", "bad name", "not a path", "not a table", "nested too deeply"])
def test_a_broken_roots_file_is_refused_in_words_without_its_path(tmp_path, settings_env, text):
    file = tmp_path / "data-roots.toml"
    file.write_text(text)
    settings_env(CXR_DATA_ROOTS=str(file))
    with pytest.raises(DataRootsUnreadable) as refused:
        data_roots()
    assert "ask an administrator" in str(refused.value) and str(tmp_path) not in str(refused.value)


def test_without_the_shared_films_or_a_file_there_are_no_roots(tmp_path, settings_env):
    settings_env(CXR_DATA=str(tmp_path / "none"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    assert data_roots() == []


# --- the picker -------------------------------------------------------------------------------------------


def _picker_page():
    import streamlit as st

    from dashboard.components.folder_picker import folder_choice

    chosen = folder_choice("Dataset folder", key="data", default=st.session_state.get("default"),
                           help="One sub-folder per class.")
    st.session_state["chosen"] = None if chosen is None else str(chosen)


def _picker(default=None, typed: str | None = None) -> AppTest:
    """The picker page run once; ``typed``: what a person typed into the folder box of root ``site``
    (set before the run: AppTest cannot send a value that is not among a selectbox's options)."""
    at = AppTest.from_function(_picker_page, default_timeout=60)
    if default is not None:
        at.session_state["default"] = default
    if typed is not None:
        at.session_state["data-folder-site"] = typed
    at.run()
    assert not at.exception
    return at


def _shown(at: AppTest) -> str:
    boxes = [f"{b.label} {b.options} {b.help}" for b in at.selectbox]
    return "\n".join([e.value for e in at.error] + [w.value for w in at.warning] + boxes)


def test_the_picker_offers_roots_and_the_folders_inside_without_paths(site, data_dir):
    at = _picker(str(data_dir / "kermany-224" / "train"))  # a server path as default is shown as its label
    root, folder = at.selectbox
    assert root.options == [SHARED_ROOT, "site", "relative"] and root.value == SHARED_ROOT
    assert folder.value == "kermany-224/train" and "films/NORMAL" in folder.options
    assert at.session_state["chosen"] == str((data_dir / "kermany-224" / "train").resolve())
    root.set_value("site")
    at.run()
    folder = at.selectbox[1]
    assert folder.options == ["(the whole data root)", "alias", "alias/NORMAL", "alias/PNEUMONIA", "batch-1",
                              "batch-1/NORMAL", "batch-1/PNEUMONIA"]
    folder.set_value("batch-1/PNEUMONIA")
    at.run()
    assert at.session_state["chosen"] == str((site / "batch-1" / "PNEUMONIA").resolve())
    assert str(data_dir) not in _shown(at) and str(site) not in _shown(at) and not at.error


@pytest.mark.parametrize("typed", ["../secret", "escape/inside", "/etc", "no-such-folder"])
def test_a_typed_folder_outside_or_missing_gets_the_fixed_sentence(site, typed):
    at = _picker("site", typed)
    assert [e.value for e in at.error] == [REFUSAL] and at.session_state["chosen"] is None
    assert str(site.parent) not in _shown(at)


def test_a_typed_folder_inside_the_root_is_taken(site):
    at = _picker("site", "alias/NORMAL")  # typed, not listed at this depth
    assert not at.error and at.session_state["chosen"] == str((site / "batch-1" / "NORMAL").resolve())
    assert at.selectbox[1].value == "alias/NORMAL"


def test_a_default_outside_the_roots_falls_back_to_the_first_root(site, tmp_path):
    at = _picker(str(tmp_path / "secret"))
    assert at.selectbox[0].value == SHARED_ROOT and at.selectbox[1].value == ""
    assert not at.error


def test_without_roots_the_picker_says_how_to_add_one(tmp_path, settings_env):
    settings_env(CXR_DATA=str(tmp_path / "none"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    at = _picker()
    assert not at.selectbox and "data-roots.toml" in at.warning[0].value
    assert at.session_state["chosen"] is None
    assert os.fspath(tmp_path) not in at.warning[0].value


def test_training_names_films_by_their_label_and_refuses_an_oversized_one_before_reading_it(site, films_dir):
    """Found by a CLI audit: a manifest's films were named by their server paths in training errors, and a 3 GB
    file was read whole (38 s, 7 GB) before being refused for its size."""
    from core.films.film import MAX_FILE_BYTES
    from core.films.tensor import load_tensors
    from core.store.records import TrainConfig
    from core.training.train import split_films

    folder = site / "batch-1"  # also the root "relative": the innermost root names it
    for cls in ("NORMAL", "PNEUMONIA"):
        for k, film in enumerate(sorted((films_dir / cls).glob("*.jpeg"))):
            (folder / cls / f"{cls.lower()}-{k}.jpeg").write_bytes(film.read_bytes())
    huge = folder / "PNEUMONIA" / "huge.png"
    with huge.open("wb") as sparse:
        sparse.truncate(MAX_FILE_BYTES + 1)  # no disk used, nothing worth reading
    config = TrainConfig(arch="logistic", epochs=1, image_size=32)
    with pytest.raises(DatasetError) as refused:
        split_films(folder, config)
    assert str(refused.value) == ("Cannot use relative/PNEUMONIA/huge.png: huge.png is 200.1 MB, over the 200 MB "
                                  "limit for one film. Take it out of the folder.")
    huge.unlink()
    films = split_films(folder, config)[0]
    with pytest.raises(DatasetError) as refused:
        load_tensors(films, 32)  # the fixture's two-byte "film.png" cannot be decoded
    assert str(refused.value).startswith("Cannot use relative/NORMAL/film.png: ")
    assert str(site) not in str(refused.value)


def test_a_folder_whose_name_is_not_utf8_is_listed_escaped_and_picked_as_itself(site):
    os.mkdir(os.fsencode(site) + b"/M\xfcller")  # a Latin-1 name from an export: Streamlit cannot carry it raw
    raw = os.fsdecode(b"M\xfcller")
    at = _picker("site")
    folder = at.selectbox[1]
    assert "M\\udcfcller" in folder.options  # the page drew (before: UnicodeEncodeError, the page stopped)
    folder.set_value(raw)
    at.run()
    assert not at.exception and at.session_state["chosen"] == str((site / raw).resolve())
    from dashboard.labels import source_label, without_server_paths
    from dashboard.training_source import source_stamp, training_preview
    with pytest.raises(DatasetError, match="no class folders|not a class-folder"):  # cached per folder: Streamlit's
        # hashing refused the name (a browser check); the folder itself is read and refused as what it is
        training_preview(str(site / raw), source_stamp(site / raw))
    refusal = DatasetError(f"Dataset folder {site / raw} has no class folders.")
    assert source_label(site / raw) == "site/M\\udcfcller"
    assert without_server_paths(str(refusal), site / raw) == "Dataset folder site/M\\udcfcller has no class folders."


def test_a_huge_flat_folder_is_read_no_further_than_the_scan_cap(site, monkeypatch):
    """Found by a resource review: the listing of each folder was read whole and sorted before the cap counted, so
    a million films one level under a root cost 300 MB and seconds at every rerun of every folder picker."""
    import core.films.roots as roots

    for k in range(40):
        (site / "batch-1" / "NORMAL" / f"{k}.png").write_bytes(b"x")
    read, real = [], os.scandir

    class Counted:
        def __init__(self, folder):
            self.entries = real(folder)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.entries.close()

        def __iter__(self):
            for entry in self.entries:
                read.append(entry.name)
                yield entry

    monkeypatch.setattr(roots, "MAX_SCANNED", 10)
    monkeypatch.setattr(roots.os, "scandir", Counted)
    assert list_folders("site", "batch-1/NORMAL") == []
    assert len(read) == roots.MAX_SCANNED + 1  # read up to the cap and no further (nothing read passed before)
