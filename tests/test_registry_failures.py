"""Version names never given twice, and registry failures (a held lock, a full disk) as messages without paths."""
from __future__ import annotations

import json

import pytest

from core.errors import CheckpointError
from core.store.registry import REGISTRY_FILE
from core.store.versions import next_version_name


def test_a_deleted_version_s_name_is_never_given_to_the_next_one(tmp_path):
    """Deleting a default version by hand left its pointer; the next training took the same name and with it
    the default, past the promotion floor and the audit log. Any name the folder has held counts."""
    from core.store.registry_file import Promotion, RegistryFile

    for name in ("base-v1.json", "base-v2.json", "base-v5.pt"):  # v5: weights whose JSON was lost
        (tmp_path / name).write_text("{}")
    assert next_version_name("base", tmp_path) == "base-v6"
    registry = RegistryFile(task_defaults={"pneumonia": "base-v7"},
                            promotions=[Promotion(task="pneumonia", name="base-v9", previous="base-v8", at="x")])
    (tmp_path / REGISTRY_FILE).write_text(json.dumps(registry.to_json()))
    assert next_version_name("base", tmp_path) == "base-v10"
    (tmp_path / REGISTRY_FILE).write_text("{damaged")  # its files still count
    assert next_version_name("base", tmp_path) == "base-v6"


def test_registry_failures_are_messages_without_paths(tmp_path, monkeypatch):
    """A registry lock another process keeps, or a registry that cannot be written, is a CheckpointError a
    page can show, never filelock's or the OS's text (both name the server path)."""
    import errno
    from types import SimpleNamespace

    from filelock import Timeout

    from core.store import lock, manifest, registry

    class Held:
        def __init__(self, path, timeout):
            self.path = path

        def acquire(self):
            raise Timeout(self.path)

    monkeypatch.setattr(lock, "FileLock", Held)
    with pytest.raises(CheckpointError) as busy:
        with lock.registry_lock(tmp_path):
            pass
    assert "busy" in str(busy.value) and str(tmp_path) not in str(busy.value)
    monkeypatch.undo()

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(manifest, "atomic_write_bytes", full)  # how the registry is written, signed or not
    entry = SimpleNamespace(task="pneumonia", name="base-v1", is_default=False)
    with pytest.raises(CheckpointError, match="could not be written [(]No space left on device[)]; the default is "
                                              "unchanged") as refused:
        registry._promote(entry, [entry], tmp_path)
    assert str(tmp_path) not in str(refused.value) and not (tmp_path / REGISTRY_FILE).exists()


def test_description_changes_wait_for_the_registry_lock(copied_model):
    """Figures attached to a version (other reports, measured elsewhere, a population check) read and rewrite
    its JSON under the registry lock: a change made meanwhile by another writer (here, by hand, under the lock)
    is kept, not overwritten by a copy read before it."""
    import threading

    from core.store.atomic import atomic_write_json
    from core.store.descriptions import attach_other_reports
    from core.store.lock import registry_lock
    from core.store.records import read_model_record

    before = read_model_record(copied_model)
    report = before.report.model_copy(update={"split": "a site's films"})
    with registry_lock(copied_model.parent):
        attaching = threading.Thread(target=attach_other_reports, args=(copied_model, {"site": report}))
        attaching.start()
        attaching.join(timeout=1.0)
        assert attaching.is_alive()  # it waits for the lock ...
        other = before.model_copy(update={"other_reports": {**before.other_reports, "other": report}})
        atomic_write_json(copied_model, other.to_json())  # ... while another writer changes the description
    attaching.join(timeout=30)
    stored = read_model_record(copied_model)
    assert {"site", "other"} <= set(stored.other_reports)  # both changes kept
    assert stored.weights_sha256 == before.weights_sha256 and stored.operating_point == before.operating_point


def test_a_version_whose_description_cannot_be_written_leaves_no_files(trained_model, tmp_path, monkeypatch):
    """A full disk while the JSON is written: the version's weights and population check are removed again
    (no description, no model), and the message names no server path."""
    import errno

    from core.store import checkpoints
    from core.store.checkpoints import load_checkpoint
    from core.training.shipping import ship_version

    loaded = load_checkpoint(trained_model.json_path)
    assert loaded.population is not None  # the session model carries a population check, so its file is tested

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoints, "atomic_write_json", full)
    with pytest.raises(CheckpointError, match="could not be written [(]No space left on device[)]; nothing was "
                                              "registered") as refused:
        ship_version(loaded.model, loaded.record, "base", directory=tmp_path, population=loaded.population)
    assert str(tmp_path) not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []


def test_a_shipped_description_whose_manifest_cannot_be_signed_is_put_back(copied_model, settings_env, monkeypatch):
    """Found by a CLI review: the JSON was rewritten first and the manifest re-signed after, outside the restore; a
    full disk (or a stop signal) between them left a shipped version its manifest refuses (a default: its task
    with it)."""
    import errno

    from core.store import manifest
    from core.store.descriptions import attach_other_reports
    from core.store.records import read_model_record

    settings_env(CXR_CHECKPOINTS=str(copied_model.parent))
    manifest.write_manifest(copied_model.parent)
    before = copied_model.read_bytes()
    report = read_model_record(copied_model).report.model_copy(update={"split": "a site's films"})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest, "write_manifest", full)
    with pytest.raises(OSError):
        attach_other_reports(copied_model, {"site": report})
    assert copied_model.read_bytes() == before and manifest.check(copied_model.parent) == []


def test_a_stop_during_a_late_check_lands_after_its_figures_and_audit_line_and_the_cli_reports_them(
        copied_model, settings_env, tmp_path, monkeypatch, capsys):
    """Found by reviews of the day's diff: a stop during the change was first swallowed (fit-population over
    several versions went on and exited 0), then raised before the audit line and the version's output line, so the
    answer was "interrupted" alone with the change stored and unaudited."""
    import os
    import signal
    from types import SimpleNamespace

    import core.training.late_checks as late_checks
    from core.admin.audit import read_actions
    from core.stop_signals import StoppedAfter
    from core.store.records import read_model_record
    from core.training.commands import _late_check

    settings_env(CXR_MODELS=str(copied_model.parent), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    attach = late_checks.attach_other_reports

    def then_stopped(json_path, reports, then):
        def stopped_then_audited(stored):
            os.kill(os.getpid(), signal.SIGINT)  # held: the audit line is still to come
            then(stored)
        return attach(json_path, reports, then=stopped_then_audited)

    monkeypatch.setattr(late_checks, "attach_other_reports", then_stopped)
    monkeypatch.setattr(late_checks, "load_checkpoint", lambda path: SimpleNamespace(model=None))
    monkeypatch.setattr(late_checks, "place_model", lambda model, device: model)
    report = read_model_record(copied_model).report.model_copy(update={"split": "framed"})
    with pytest.raises(StoppedAfter) as stopped:
        late_checks._add(copied_model.stem, "framing-check", lambda model, loaded: {"tighter-framing": report},
                         "cpu", "cli:test")
    assert stopped.value.done.other_reports["tighter-framing"].split == "framed"
    assert [(a.action, a.model) for a in read_actions(limit=5)] == [("framing-check", copied_model.stem)]

    def add(name, data, device, who):
        raise StoppedAfter(stopped.value.done)

    with pytest.raises(KeyboardInterrupt):  # the CLI: the version's line first, then the stop
        _late_check(SimpleNamespace(models=[copied_model.stem, "never-reached"], data=None, device="cpu"), add,
                    ("tighter-framing",))
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["name"] == copied_model.stem


def test_fit_population_reports_a_version_before_a_stop_held_while_it_was_stored(copied_model, settings_env,
                                                                                   tmp_path, monkeypatch):
    import os
    import signal

    import core.training.fit_population as fitting
    from core.admin.audit import read_actions
    from core.store.descriptions import update_record

    settings_env(CXR_MODELS=str(copied_model.parent), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    check = type("Check", (), {"fitted_on": "films", "threshold": 1.0, "validation_warn_rate": 0.0})()
    monkeypatch.setattr(fitting, "FilmFeatures", lambda: None)
    monkeypatch.setattr(fitting, "recorded_training_split", lambda record, data_dir: (None, None))
    monkeypatch.setattr(fitting, "fit_population_check", lambda *a, **k: (None, check))

    def attach(json_path, score, check, then):  # the description as it is, the stop held inside
        return update_record(json_path, lambda record: {}, then=lambda stored: (
            os.kill(os.getpid(), signal.SIGINT), then(stored)))

    monkeypatch.setattr(fitting, "attach_population_check", attach)
    versions = fitting.fit_for_registered([copied_model.stem], refit=True)
    assert next(versions).name == copied_model.stem  # reported first (the CLI prints it) ...
    assert [a.action for a in read_actions(limit=5)] == ["fit-population"]  # ... audited ...
    with pytest.raises(KeyboardInterrupt):  # ... and then stopped
        next(versions)


def test_a_stop_while_waiting_for_the_registry_lock_stops_at_once_with_nothing_changed(copied_model, settings_env,
                                                                                      tmp_path):
    """Found by a review: the hold began before the lock was taken, so Ctrl+C while another process held the registry
    was ignored for up to 30 s, and then the change was made anyway."""
    import os
    import signal
    import threading

    from filelock import FileLock

    from types import SimpleNamespace

    import core.training.late_checks as late_checks
    from core.stop_signals import StoppedAfter
    from core.store.records import read_model_record

    settings_env(CXR_MODELS=str(copied_model.parent), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    report = read_model_record(copied_model).report.model_copy(update={"split": "framed"})
    before = copied_model.read_bytes()
    held, done = threading.Event(), threading.Event()

    def another_writer():  # another holder of the folder's registry lock, for longer than the stop takes
        with FileLock(str(copied_model.parent / ".registry.lock")):
            held.set()
            done.wait(20)

    threading.Thread(target=another_writer, daemon=True).start()
    assert held.wait(10)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt) as stopped:
            patch.setattr(late_checks, "load_checkpoint", lambda path: SimpleNamespace(model=None))
            patch.setattr(late_checks, "place_model", lambda model, device: model)
            late_checks._add(copied_model.stem, "framing-check", lambda model, loaded: {"tighter-framing": report},
                             "cpu", "cli:test")
    finally:
        done.set()
    assert not isinstance(stopped.value, StoppedAfter) and copied_model.read_bytes() == before
    assert not (tmp_path / "audit.jsonl").exists() or "framing-check" not in (tmp_path / "audit.jsonl").read_text()


def test_an_unreadable_registry_file_says_whose_it_is_and_never_to_delete_it(copied_model, tmp_path, settings_env):
    """A review: "restore it or delete it to rebuild" named neither folder, and deleting the site's registry drops
    its default models and promotions, rebuilding nothing; deleting the shipped one leaves no shipped default."""
    from core.store import manifest
    from core.store.registry import list_models

    (copied_model.parent / REGISTRY_FILE).write_text("{oops")
    with pytest.raises(CheckpointError, match="registry.json") as refused:
        list_models(copied_model.parent)
    said = str(refused.value)  # once, not "registry.json cannot be read (registry.json cannot be read (...))"
    assert said.count("cannot be read") == 1 and said.startswith("This models folder's registry.json cannot be read")
    assert "Restore it from a backup" in said and "delete it to rebuild" not in said
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / REGISTRY_FILE).write_text("[]")
    manifest.write_manifest(shipped)  # signed as shipped: the bytes pass their check and are still no registry
    settings_env(CXR_CHECKPOINTS=str(shipped))
    (said,) = list_models(shipped)[1]  # said, and no shipped default, while the models are still listed
    assert said.startswith("The shipped models' registry.json is not a valid")
    assert "git checkout -- checkpoints/registry.json" in said and str(tmp_path) not in said


def test_fit_population_refuses_to_replace_a_check_unless_asked_to(copied_model, settings_env, tmp_path, monkeypatch):
    """A CLI review: one mistaken call rewrote a shipped version's check, its file and the manifest (and a refit
    on the same films moved its threshold in the fourth decimal). Refused before minutes of features."""
    from core.errors import CommandRefused
    from core.training import fit_population as fitting

    settings_env(CXR_MODELS=str(copied_model.parent), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))

    class Started(Exception):
        pass

    def features():
        raise Started

    monkeypatch.setattr(fitting, "FilmFeatures", features)
    before = copied_model.read_bytes()
    with pytest.raises(CommandRefused, match=f"^{copied_model.stem} already has a population check; add --refit"):
        next(fitting.fit_for_registered([copied_model.stem]))
    assert copied_model.read_bytes() == before
    with pytest.raises(Started):  # asked for: it goes on to the work
        next(fitting.fit_for_registered([copied_model.stem], refit=True))
