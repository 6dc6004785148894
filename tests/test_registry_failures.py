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

    from core.store import lock, registry

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

    monkeypatch.setattr(registry, "atomic_write_json", full)
    entry = SimpleNamespace(task="pneumonia", name="base-v1", is_default=False)
    with pytest.raises(CheckpointError, match="could not be written [(]No space left on device[)]; the default is "
                                              "unchanged") as refused:
        registry._promote(entry, [entry], tmp_path)
    assert str(tmp_path) not in str(refused.value) and not (tmp_path / REGISTRY_FILE).exists()
