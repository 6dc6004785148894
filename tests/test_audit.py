"""The audit log (core/admin/audit.py): JSON lines, appended only, UTC, readable newest first even when a
line is damaged, safe with many writers, kept outside the code tree, and never the user's during tests."""
from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from core import clock, config
from core.admin.audit import AuditEntry, audit_log_path, cli_user, read_actions, record_action
from core.errors import AuditLogUnavailable, SettingOutOfRange

UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def log(tmp_path, settings_env) -> Path:
    path = tmp_path / "admin" / "audit.jsonl"
    settings_env(CXR_AUDIT_LOG=str(path))
    return path


def test_the_session_never_writes_the_users_audit_log(isolated_audit_log):
    assert config.settings().audit_log == isolated_audit_log.resolve()
    assert not isolated_audit_log.resolve().is_relative_to(Path.home() / ".local" / "share")


def test_an_action_is_one_json_line_with_utc_time_who_what_model_and_figures(log):
    entry = record_action("default.change", "admin:alice", model="pneumonia-cnn5-v2", task="pneumonia",
                          sensitivity=0.962, specificity=0.81, auc=0.97, override=False, path=Path("/x/y"))
    (line,) = log.read_text().splitlines()
    stored = json.loads(line)
    assert stored == {"time": entry.time, "who": "admin:alice", "action": "default.change",
                      "model": "pneumonia-cnn5-v2",
                      "details": {"task": "pneumonia", "sensitivity": 0.962, "specificity": 0.81, "auc": 0.97,
                                  "override": False, "path": "/x/y"}}
    assert UTC.match(entry.time) and abs((clock.now() - clock.parse(entry.time)).total_seconds()) < 120
    assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700
    assert read_actions() == [entry]


def test_appending_never_rewrites_what_is_there(log):
    record_action("job.start", "local", job="20261130-000000-aaaa")
    first = log.read_bytes()
    record_action("job.cancel", "admin:bob", job="20261130-000000-aaaa")
    assert log.read_bytes().startswith(first) and len(log.read_bytes().splitlines()) == 2


def test_read_actions_is_newest_first_limited_and_skips_damaged_lines(log):
    for index in range(5):
        record_action("evaluate", "local", model=f"m-v{index}", n=index)
    lines = log.read_bytes().splitlines()
    damaged = [lines[0], b'{"time": "2026-11-30T00:00:00Z", "who": "x", "act', lines[1], b"\xff\xfe not json",
               b'{"time": 1, "who": [], "action": null}', lines[2], b"", lines[3], b"[1, 2]",
               b"[" * 100_000 + b"]" * 100_000, lines[4]]  # the last: deeper than the JSON parser recurses
    log.write_bytes(b"\n".join(damaged) + b"\n")
    assert [e.model for e in read_actions()] == ["m-v4", "m-v3", "m-v2", "m-v1", "m-v0"]
    assert [e.details["n"] for e in read_actions(limit=2)] == [4, 3]
    assert read_actions(limit=0) == []
    assert all(isinstance(e, AuditEntry) for e in read_actions())


def test_a_log_larger_than_one_read_chunk_reads_back_in_order(log):
    padding = "x" * 3000  # about 3 KB a line: 60 lines cross the 64 KiB chunks of the backwards reader
    for index in range(60):
        record_action("calibrate", "local", model=f"m-v{index}", note=padding)
    assert log.stat().st_size > 2 * 64 * 1024
    assert [e.model for e in read_actions(limit=1000)] == [f"m-v{i}" for i in reversed(range(60))]
    assert [e.model for e in read_actions(limit=3)] == ["m-v59", "m-v58", "m-v57"]


def test_no_log_yet_reads_as_no_actions(log):
    assert not log.exists() and read_actions() == []


WRITER = ("import sys; sys.path.insert(0, sys.argv[1]); from core.admin.audit import record_action\n"
          "for i in range(int(sys.argv[3])): record_action('job.start', sys.argv[2], job=i, pad='y' * 5000)")


def test_concurrent_writers_never_interleave_lines(log):
    """Six processes appending 5 KB lines at once: every line whole, none lost."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), f"writer-{n}", "60"]) for n in range(6)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 6
    lines = log.read_text().splitlines()
    assert len(lines) == 360 and all(json.loads(line)["details"]["pad"] == "y" * 5000 for line in lines)
    by_writer = {f"writer-{n}": [json.loads(x)["details"]["job"] for x in lines if f'"writer-{n}"' in x]
                 for n in range(6)}
    assert all(jobs == list(range(60)) for jobs in by_writer.values())  # each writer's lines in its order
    assert len(read_actions(limit=1000)) == 360


def test_an_unwritable_log_is_refused_with_a_message_and_no_path(tmp_path, settings_env):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings_env(CXR_AUDIT_LOG=str(blocker / "audit.jsonl"))
    with pytest.raises(AuditLogUnavailable, match="audit log cannot be written") as caught:
        record_action("job.start", "local")
    assert str(tmp_path) not in str(caught.value)


def test_refused_sign_ins_are_read_apart_so_a_guessing_spree_cannot_hide_the_changes(log):
    """30 checked guesses per 15 minutes reach the log: the viewer's last 50 lines held nothing else after 25
    minutes of guessing (a review). Actions read apart, each list newest first, the scan bounded."""
    from core.admin.audit import REFUSED_SIGN_IN

    record_action("default.change", "local", model="m-v1")
    for n in range(60):
        record_action(REFUSED_SIGN_IN, f"client 192.0.2.{n}", reason="wrong passphrase")
    changes = read_actions(limit=5, refused_sign_ins=False)
    assert [(e.action, e.model) for e in changes] == [("default.change", "m-v1")]
    refused = read_actions(limit=3, refused_sign_ins=True)
    assert [e.who for e in refused] == ["client 192.0.2.59", "client 192.0.2.58", "client 192.0.2.57"]
    assert len(read_actions(limit=100)) == 61  # unfiltered, as before
    assert read_actions(limit=5, refused_sign_ins=False, within=60) == []  # no further than 60 lines back


def test_a_log_held_by_a_stuck_writer_is_refused_in_words_not_waited_on_forever(log, monkeypatch):
    """record_action runs inside the registry lock with Ctrl+C held: a wait without end could not be stopped."""
    import fcntl

    from core.admin import audit

    record_action("job.start", "local")
    monkeypatch.setattr(audit, "LOCK_WAIT_S", 0.3)
    stuck = os.open(log, os.O_WRONLY | os.O_APPEND)  # another open file: its lock conflicts, as another process's
    fcntl.flock(stuck, fcntl.LOCK_EX)
    try:
        with pytest.raises(AuditLogUnavailable, match=r"^The audit log is busy: another process has held it for "
                                                      r"0\.3 s") as caught:
            record_action("job.cancel", "local")
    finally:
        os.close(stuck)
    assert str(log.parent) not in str(caught.value)
    record_action("job.cancel", "local")  # free again: written
    assert [entry.action for entry in read_actions()] == ["job.cancel", "job.start"]


def test_the_default_place_is_the_users_data_folder_never_the_code_tree(tmp_path):
    try:
        assert config.reload({}).audit_log == Path.home() / ".local" / "share" / "cxr-triage" / "audit.jsonl"
        assert config.reload({"XDG_DATA_HOME": str(tmp_path)}).audit_log == tmp_path / "cxr-triage" / "audit.jsonl"
        assert config.reload({"XDG_DATA_HOME": "relative"}).audit_log.is_relative_to(Path.home())
        with pytest.raises(SettingOutOfRange, match="CXR_AUDIT_LOG must name a file outside the code tree"):
            config.reload({"CXR_AUDIT_LOG": str(REPO / "audit.jsonl")})
    finally:
        config.reload()  # the session's settings again
    assert audit_log_path() == config.settings().audit_log


def test_the_cli_names_its_account_without_reading_the_environment(monkeypatch):
    for variable in ("USER", "LOGNAME", "LNAME", "USERNAME"):  # what getpass.getuser() would read (a test review)
        monkeypatch.setenv(variable, "mallory")
    assert cli_user() == f"cli:{pwd.getpwuid(os.getuid()).pw_name}" != "cli:mallory"


def test_evaluating_a_folder_from_the_cli_is_recorded(trained_model, films_dir, run_cli, log):
    done = run_cli("evaluate", films_dir, "--model", trained_model.name, "--json",
                   checkpoints=trained_model.directory)
    assert done.returncode == 0, done.stdout + done.stderr
    report = done.json_lines()[0]
    (entry,) = read_actions()
    assert (entry.action, entry.who, entry.model) == ("evaluate", cli_user(), trained_model.name)
    assert entry.details["folder"] == "films" and entry.details["n"] == report["n"] == 16
    assert entry.details["auc"] == pytest.approx(report["auc"])
    assert str(films_dir) not in json.dumps(entry.to_json())  # a label, never the server path


def test_a_log_that_cannot_be_read_says_what_to_do(tmp_path, settings_env):
    (tmp_path / "audit-folder").mkdir()  # a folder where the log should be: no regular file
    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit-folder"))
    with pytest.raises(AuditLogUnavailable) as refused:
        read_actions()
    assert str(refused.value) == ("The audit log cannot be read (not a regular file); ask an administrator to check "
                                  "the audit log setting (CXR_AUDIT_LOG).")


def test_the_retrain_page_shows_recorded_figures_as_a_person_reads_them_and_the_log_keeps_every_digit():
    """A review: the page's audit table showed "auc: 0.9973684210526316", "site: None" and Python lists."""
    from core.admin.audit import AuditEntry
    from dashboard.components.job_view import audit_table

    entry = AuditEntry(time="2026-12-07T20:00:00Z", who="admin", action="calibrate", model="m-v2",
                       details={"auc": 0.9973684210526316, "site": None, "jobs": ["a", "b"], "settled": True,
                                "films": 132, "figures": {"sensitivity": 0.98, "specificity": None}})
    assert audit_table([entry]).loc[0, "Details"] == ("auc: 0.997368, jobs: a; b, settled: yes, films: 132, figures: "
                                                      "sensitivity 0.98")
    moved = AuditEntry(time="t", who="admin", action="calibrate", details={"before": 0.47098, "after": 0.47104})
    assert audit_table([moved]).loc[0, "Details"] == "before: 0.47098, after: 0.47104"  # a threshold's move shows
    assert entry.details["auc"] == 0.9973684210526316
