"""What a hand-edited or damaged site models folder, and odd files named on the command line, get: a refusal in
words, before any work, never a silently wrong reading or a server path (found by a CLI audit)."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from core.config import reload
from core.errors import CheckpointError, DatasetError, InvalidModelName, ModelNotFound, SettingOutOfRange
from core.films.manifest import load_manifest
from core.store.base import read_record
from core.store.names import MAX_BASE_LENGTH, check_base_name
from core.store.records import MeasuredElsewhere, read_model_record
from core.store.registry import find_model
from core.store.writable import ensure_models_writable


@pytest.fixture
def site_copy(trained_model, tmp_path, settings_env):
    """The session's trained model copied into a private site folder: its JSON is ours to edit."""
    folder = tmp_path / "site"
    folder.mkdir()
    for path in trained_model.directory.glob(f"{trained_model.record.name}.*"):
        shutil.copy(path, folder / path.name)
    settings_env(CXR_MODELS=str(folder))
    return folder / f"{trained_model.record.name}.json"


def _edit(json_path: Path, change) -> None:
    record = json.loads(json_path.read_text())
    change(record)
    json_path.write_text(json.dumps(record))  # NaN is written as the bare word NaN, as a hand edit would


@pytest.mark.parametrize("change, words", [
    (lambda r: r["operating_point"].update(threshold=math.nan), "the threshold must be a number from 0 to 1"),
    (lambda r: r["operating_point"].update(threshold=5.0), "the threshold must be a number from 0 to 1"),
    (lambda r: r["operating_point"].update(normal_index=7), "normal_index must name one of the 2 classes"),
    (lambda r: r["operating_point"].update(normal_index=-1), "normal_index must name one of the 2 classes"),
    # in range but the wrong class: normal films were read urgent and pneumonia routine (found by a review)
    (lambda r: r["operating_point"].update(normal_index=1), "normal_index must be 0, the NORMAL class"),
    (lambda r: r["operating_point"].update(normal_index=None), "normal_index must be 0, the NORMAL class"),
    (lambda r: r["model_args"].update(image_size=1), "image_size must be 32 to 512 pixels"),
    (lambda r: r["model_args"].update(image_size=60000), "image_size must be 32 to 512 pixels"),
    (lambda r: r.update(classes=["NORMAL", "NORMAL"]), "the classes must each be named once"),
    (lambda r: r["operating_point"].update(classes=["PNEUMONIA", "NORMAL"], normal_index=1),
     "the operating point's classes"),
    # a pneumonia model said to be a tuberculosis one could become that task's default and call TB "PNEUMONIA"
    (lambda r: r.update(task="tuberculosis"), "the task must be 'pneumonia', the one its classes name"),
])
def test_an_edited_description_that_would_triage_wrongly_is_refused_by_name(site_copy, change, words):
    _edit(site_copy, change)
    with pytest.raises(CheckpointError, match=words):
        read_model_record(site_copy)
    with pytest.raises(ModelNotFound) as refused:
        find_model(site_copy.stem)
    assert str(refused.value).startswith(f"Model '{site_copy.stem}' cannot be used: Model description "
                                         f"{site_copy.name} is not a valid ModelRecord")


def test_an_untouched_description_still_reads(site_copy):
    assert find_model(site_copy.stem).name == site_copy.stem


def test_a_models_setting_naming_a_file_is_refused(tmp_path, monkeypatch):
    afile = tmp_path / "film.jpeg"
    afile.write_bytes(b"not a folder")
    monkeypatch.setenv("CXR_MODELS", str(afile))
    try:
        with pytest.raises(SettingOutOfRange, match="CXR_MODELS names a file, not a folder"):
            reload()
    finally:
        monkeypatch.undo()
        reload()


@pytest.mark.parametrize("variable", ["CXR_MODELS", "CXR_JOBS", "CXR_CHECKPOINTS", "CXR_DECODE_CACHE",
                                      "CXR_AUDIT_LOG", "XDG_DATA_HOME"])
def test_a_setting_that_goes_round_a_loop_of_links_is_refused_in_words(tmp_path, variable, run_cli, monkeypatch):
    (tmp_path / "a").symlink_to(tmp_path / "b")  # a review: "a fault in the program" before
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(SettingOutOfRange, match="loop of symbolic links") as refused:
        reload({variable: str(tmp_path / "a" / "inside")})
    assert str(tmp_path) not in str(refused.value)
    reload()
    if variable == "CXR_JOBS":  # and the command line says so as a refusal, not as a fault in the program
        monkeypatch.setenv(variable, str(tmp_path / "a" / "inside"))
        done = run_cli("models", checkpoints=tmp_path / "site")
        assert done.returncode == 1 and "loop of symbolic links" in done.stdout and str(tmp_path) not in done.stdout


def test_a_models_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, settings_env):
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")
    with pytest.raises(CheckpointError) as refused:
        ensure_models_writable(blocked / "models")  # cannot be made: a file is in the way
    assert str(refused.value).startswith("The models folder cannot be written (Not a directory)")
    assert str(tmp_path) not in str(refused.value) and "(CXR_MODELS)" in str(refused.value)
    settings_env(CXR_CHECKPOINTS=str(blocked / "shipped"))  # the shipped folder: its own setting is named
    with pytest.raises(CheckpointError, match=r"\(CXR_CHECKPOINTS\)"):
        ensure_models_writable(blocked / "shipped")
    ensure_models_writable(tmp_path / "fresh" / "models")  # a folder that can be made: not made here
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "fresh").mkdir()
    ensure_models_writable(tmp_path / "fresh")  # one that exists and can be written
    assert not any((tmp_path / "fresh").iterdir())  # leaves nothing behind


def test_a_base_name_must_leave_room_for_its_version():
    assert check_base_name("a" * MAX_BASE_LENGTH) == "a" * MAX_BASE_LENGTH
    with pytest.raises(InvalidModelName, match="its version .* is added to it"):
        check_base_name("a" * (MAX_BASE_LENGTH + 1))
    with pytest.raises(InvalidModelName):
        check_base_name("../x")


def test_a_fifo_is_not_waited_on(tmp_path):
    fifo = tmp_path / "measured.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_record(MeasuredElsewhere, fifo)
    manifest = tmp_path / "site.toml"
    os.mkfifo(manifest)
    with pytest.raises(DatasetError, match="cannot be read [(]not a regular file[)]"):
        load_manifest(manifest)


def test_a_fifo_in_place_of_weights_a_shipped_file_or_the_audit_log_is_refused_not_waited_on(
        site_copy, tmp_path, settings_env):
    """Found by a CLI review: predict, models, set-default and evaluate waited for ever on a FIFO where the weights,
    a shipped model's description or the audit log belong (each opened for a plain read or write)."""
    import signal

    from core.admin.audit import ensure_writable, read_actions
    from core.errors import AuditLogUnavailable
    from core.store import manifest
    from core.store.checkpoints import load_checkpoint

    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("waited on a FIFO"))
    signal.alarm(60)
    try:
        weights = site_copy.with_suffix(".pt")
        weights.unlink()
        os.mkfifo(weights)
        with pytest.raises(CheckpointError, match=f"^Weights file {weights.name} cannot be read [(]not a regular"):
            load_checkpoint(site_copy)
        shipped = tmp_path / "shipped"
        shipped.mkdir()
        os.mkfifo(shipped / "a-v1.json")
        with pytest.raises(CheckpointError, match="^Shipped file a-v1.json cannot be read [(]not a regular file"):
            manifest.read_verified(shipped / "a-v1.json", shipped)
        os.mkfifo(shipped / manifest.MANIFEST_FILE)
        with pytest.raises(CheckpointError, match="checksum manifest .* cannot be read"):
            manifest.read_manifest(shipped)
        log = tmp_path / "audit.jsonl"
        os.mkfifo(log)
        settings_env(CXR_AUDIT_LOG=str(log))
        with pytest.raises(AuditLogUnavailable, match="^The audit log cannot be written [(]No such device"):
            ensure_writable()  # no reader at the other end: refused by the kernel at once
        with pytest.raises(AuditLogUnavailable, match="^The audit log cannot be read [(]not a regular file[)]"):
            read_actions()
    finally:
        signal.alarm(0)


def test_a_manifest_nested_past_the_parsers_stack_is_refused_in_words(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="^Manifest deep is not a manifest: its values are nested too deeply.$"):
        load_manifest(deep)


def test_an_unforeseen_os_error_reaches_the_cli_without_its_path(monkeypatch, capsys):
    from core import cli

    def failing(args):
        raise FileExistsError(17, "File exists", "/srv/hospital/models/secret.json")

    monkeypatch.setattr(cli, "_models", failing)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["models"])
    assert stopped.value.code == 1
    said = capsys.readouterr().out
    assert "/srv/hospital" not in said and "FileExistsError: File exists" in said


def test_weights_holding_other_objects_are_refused_without_advice_to_run_them(site_copy, capfd):
    """Found by a CLI audit: the refusal quoted torch's advice to load the file again with weights_only=False,
    which would run whatever the file holds, and torch printed a warning of its own."""
    import argparse
    import hashlib
    import io

    import torch

    from core.store.checkpoints import load_checkpoint

    buffer = io.BytesIO()
    torch.save({"model": argparse.Namespace(payload="would run"), "identity": {}}, buffer)
    site_copy.with_suffix(".pt").write_bytes(buffer.getvalue())
    _edit(site_copy, lambda r: r.update(weights_sha256=hashlib.sha256(buffer.getvalue()).hexdigest()))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(site_copy)
    assert str(refused.value) == (f"Weights file {site_copy.stem}.pt was refused: it is corrupt or holds objects "
                                  "other than tensors (UnpicklingError). Restore it from where the model came from.")
    assert "weights_only" not in capfd.readouterr().err


def test_a_class_folder_the_server_may_not_read_is_named_as_such_not_as_empty(tmp_path, monkeypatch):
    """Found by a CLI audit (as an unprivileged user; the tests may run as root, so the refusal is simulated)."""
    import core.films.folders as folders

    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "set" / cls).mkdir(parents=True)
    (tmp_path / "set" / "NORMAL" / "a.png").write_bytes(b"x")
    real_access = os.access
    monkeypatch.setattr(folders.os, "access", lambda path, mode: Path(path).name != "PNEUMONIA" and
                        real_access(path, mode))
    with pytest.raises(DatasetError, match=r"Class folder\(s\) PNEUMONIA in .* cannot be read by this server "
                                           r"\(permission denied\)"):
        folders.discover(tmp_path / "set")


@pytest.mark.parametrize("size", [-7, 60000])
def test_an_ensemble_member_at_a_size_training_refuses_is_refused_by_name(tmp_path, size):
    """A review: a member's input size was not checked, so an edited -7 loaded as ready and failed every film at
    reading (a plain ValueError), and 60000 would have exhausted memory."""
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "pneumonia-resnet18-224-wide-ensemble-v1.json"
    copy = tmp_path / shipped.name
    record = json.loads(shipped.read_text())
    record["members"][1]["image_size"] = size
    copy.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="image_size must be 32 to 512 pixels"):
        read_model_record(copy)
