"""Limits on background jobs: a time limit after which the runner stops the training (or, stuck, its whole
process group) and marks the job so; old job folders pruned; starts and cancels in the audit log with who."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import corpus
import pytest
from e2e_support import wait_for

from conftest import REPO
from core import clock
from core.admin.audit import read_actions
from core.errors import JobError
from core.jobs import lock
from core.jobs.jobs import CANCELLED, FAILED, RUNNING, cancel_job, list_jobs, read_job, start_job
from core.jobs.prune import prune_old_jobs
from core.jobs.records import JobSettings, read_status, write_settings, write_status
from core.jobs.time_limit import describe
from core.store.records import TrainConfig
from core.training.events import EpochEvent

LONG = TrainConfig(arch="mlp", epochs=200, image_size=64, max_films=200, patience=100)
LIMIT_MESSAGE = ("Training was stopped after its time limit of {}; nothing was saved. "
                 "An administrator can change the limit (CXR_JOB_TIME_LIMIT).")
KEPT_MESSAGE = ("Training was stopped after its time limit of {}; no model was registered. Its state after epoch {} "
                "of {} is kept: an administrator can resume it (Resume). An administrator can change the limit "
                "(CXR_JOB_TIME_LIMIT).")  # once an epoch has finished, its saved state stays (core.training.resume)


@pytest.fixture
def places(trained_model, tmp_path, settings_env) -> tuple[Path, Path]:
    """A private registry (the session model, its default), an empty jobs folder and audit log."""
    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    return corpus.copy_registry(trained_model.directory, tmp_path / "checkpoints"), tmp_path / "jobs"


def _snapshot(checkpoints: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(checkpoints.iterdir()) if not p.name.startswith(".")}


def _ended(folder: Path):
    job = read_job(folder)
    return None if job.is_active else job


def _old_job(jobs: Path, job_id: str, days: float, state: str = "succeeded", **status) -> Path:
    """A job folder whose last change was ``days`` ago, as its status records it."""
    folder = jobs / job_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": job_id, "data_dir": "/data",
                                                    "config": {"arch": "mlp", "epochs": 1}}))
    then = clock.iso(clock.now() - timedelta(days=days))
    (folder / "status.json").write_text(json.dumps({"state": state, "updated": then, "finished_at": then, **status}))
    return folder


def test_a_job_past_its_time_limit_is_stopped_saves_nothing_and_says_so(places, kermany_train, settings_env):
    checkpoints, jobs = places
    settings_env(CXR_JOB_TIME_LIMIT="0.25")  # 15 s from the runner's start: mid-decoding or mid-training
    before = _snapshot(checkpoints)
    job = start_job(kermany_train, LONG, directory=checkpoints, root=jobs, who="admin:alice")
    assert job.settings.time_limit_minutes == 0.25 and job.settings.started_by == "admin:alice"
    done = wait_for(lambda: _ended(job.folder), timeout=240, what="the time limit to stop the job")
    epochs = len([e for e in done.events() if isinstance(e, EpochEvent)])
    assert done.state == FAILED and done.message == (KEPT_MESSAGE.format("15 s", epochs, LONG.epochs) if epochs
                                                     else LIMIT_MESSAGE.format("15 s"))
    assert done.model is None and _snapshot(checkpoints) == before and lock.held_by(jobs) is None
    assert len([e for e in done.events() if isinstance(e, EpochEvent)]) < LONG.epochs
    assert any("The time limit of 15 s is reached: stopping." in line for line in done.log_tail())
    (start,) = read_actions()
    assert (start.action, start.who, start.model) == ("job.start", "admin:alice", None)
    assert start.details["job"] == job.job_id and start.details["time_limit_minutes"] == 0.25
    assert start.details["dataset"] == "shared-data/kermany-224/train" and start.details["config"]["epochs"] == 200
    assert str(kermany_train) not in json.dumps(start.to_json())


STUCK = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[2])
import core.jobs.time_limit as time_limit
import core.training.train as training
from core.jobs import runner

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time_limit.GRACE_SECONDS = 1.0
training.train = lambda *args, **kwargs: time.sleep(600)  # a step stuck in native code: never asks to stop
sys.exit(runner.main([sys.argv[1]]))
"""


def test_a_training_that_does_not_stop_is_ended_with_its_process_group(tmp_path, settings_env):
    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    folder = tmp_path / "jobs" / "20261130-000000-stuk"
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=folder.name, data_dir=tmp_path, config=LONG, time_limit_minutes=0.02))
    write_status(folder, "queued", message="Waiting for the training process to start.")
    stuck = subprocess.Popen([sys.executable, "-c", STUCK, str(folder), str(REPO)], stdout=subprocess.PIPE,
                             text=True, start_new_session=True)  # as start_job starts a runner: its own group
    child = int(stuck.stdout.readline())
    try:
        assert stuck.wait(timeout=60) == -9  # killed, with the process it had started
        wait_for(lambda: not Path(f"/proc/{child}").exists() or "Z" in _state(child), timeout=10,
                 what="the runner's child to end")
    finally:
        for pid in (stuck.pid, child):
            _kill_if_ours(pid)
    status = read_job(folder).status
    assert status.state == FAILED and status.message == LIMIT_MESSAGE.format("1 s")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def _kill_if_ours(pid: int) -> None:
    try:
        if b"core" in Path(f"/proc/{pid}/cmdline").read_bytes() or b"sleep(600)" in Path(
                f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, 9)
    except (FileNotFoundError, ProcessLookupError):
        pass


def test_a_cancel_is_recorded_with_who_asked_and_a_start_prunes_old_folders(places, kermany_train):
    checkpoints, jobs = places
    old = _old_job(jobs, "20250101-000000-aaaa", days=45)
    job = start_job(kermany_train, LONG, directory=checkpoints, root=jobs, who="admin:alice")
    assert not old.exists() and [j.job_id for j in list_jobs(jobs)] == [job.job_id]
    wait_for(lambda: read_job(job.folder).state == RUNNING, timeout=60, what="the runner to start")
    cancel_job(job.job_id, jobs, who="admin:bob")
    done = wait_for(lambda: _ended(job.folder), timeout=60, what="the job to stop")
    assert done.state == CANCELLED
    cancel, start, pruned = read_actions()  # newest first: the start pruned the old folder, and said so
    assert (cancel.action, cancel.who, cancel.details["job"]) == ("job.cancel", "admin:bob", job.job_id)
    assert cancel.details["started_by"] == "admin:alice" and start.who == "admin:alice"
    assert (pruned.action, pruned.who, pruned.details["jobs"]) == ("job.prune", "system", [old.name])
    with pytest.raises(JobError, match="There is no job '../jobs'"):
        cancel_job("../jobs", jobs, who="admin:bob")
    assert len(read_actions()) == 3  # a refused cancel is not an action


HOLDER = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
          "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.write(fd, sys.argv[2].encode()); "
          "print('held', flush=True); time.sleep(600)")


def test_only_finished_job_folders_past_the_age_limit_are_pruned(tmp_path, settings_env):
    jobs = tmp_path / "jobs"
    gone = [_old_job(jobs, "20250101-000000-aaaa", days=31), _old_job(jobs, "20250102-000000-bbbb", 400, "failed")]
    legacy = _old_job(jobs, "20250103-000000-old", days=0)
    (legacy / "status.json").write_text(json.dumps({"state": "succeeded", "running_at": "2025-01-03T00:00:00Z"}))
    month_ago = time.time() - 40 * 86400
    os.utime(legacy / "status.json", (month_ago, month_ago))  # no recorded change: its file's age counts
    gone.append(legacy)
    kept = [_old_job(jobs, "20261101-000000-cccc", days=29), _old_job(jobs, "20250104-000000-dddd", 90, "running"),
            _old_job(jobs, "notes", days=90)]
    no_config = _old_job(jobs, "20250105-000000-eeee", days=90)
    (no_config / "config.json").unlink()
    elsewhere = _old_job(tmp_path / "elsewhere", "20250106-000000-ffff", days=90)
    (jobs / "20250106-000000-ffff").symlink_to(elsewhere, target_is_directory=True)
    held = _old_job(jobs, "20250107-000000-abcd", days=90)
    kept += [no_config, jobs / "20250106-000000-ffff", held, elsewhere]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(jobs / lock.LOCK_FILE), held.name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        settings_env(CXR_JOB_MAX_AGE_DAYS="0")  # 0 keeps every folder
        assert prune_old_jobs(jobs) == [] and all(f.exists() for f in gone)
        settings_env(CXR_JOB_MAX_AGE_DAYS="30")
        assert sorted(prune_old_jobs(jobs)) == sorted(f.name for f in gone)
        (line,) = [e for e in read_actions() if e.action == "job.prune"]  # the removal leaves a trace (a review)
        assert line.who == "system" and sorted(line.details["jobs"]) == sorted(f.name for f in gone)
    finally:
        holder.kill()
        holder.wait()
    assert not any(f.exists() for f in gone) and all(f.exists() for f in kept)
    # Listing prunes too: the job no longer held goes; the one marked running whose runner is gone is
    # settled by the listing instead (a change, so it is kept a while longer).
    listed = {j.job_id: j.state for j in list_jobs(jobs)}
    assert not held.exists() and held.name not in listed
    assert listed["20250104-000000-dddd"] == FAILED and listed["20261101-000000-cccc"] == "succeeded"
    assert prune_old_jobs(jobs) == []


def test_limits_are_read_from_the_environment_and_described_in_words(settings_env):
    from core import config
    from core.errors import SettingOutOfRange

    settings_env(CXR_JOB_TIME_LIMIT="90", CXR_JOB_MAX_AGE_DAYS="7")
    assert config.settings().job_time_limit_minutes == 90 and config.settings().job_max_age_days == 7
    assert [describe(m) for m in (720, 90, 45, 0.05)] == ["12 h", "1 h 30 min", "45 min", "3 s"]
    for bad, words in [({"CXR_JOB_TIME_LIMIT": "0"}, "time limit must be at least 0.01 minutes"),
                       ({"CXR_JOB_TIME_LIMIT": "soon"}, "CXR_JOB_TIME_LIMIT must be a number"),
                       ({"CXR_JOB_MAX_AGE_DAYS": "-1"}, "must be at least 0 days")]:
        with pytest.raises(SettingOutOfRange, match=words):
            config.reload(bad)
    config.reload()


def test_a_dashboard_started_with_a_setting_out_of_range_says_which_and_stops_without_a_traceback():
    """`make run` with, say, CXR_UPLOADS_MAX_MB=-5 printed a 20-line traceback naming no variable."""
    for variable, value, words in [("CXR_UPLOADS_MAX_MB", "-5", "CXR_UPLOADS_MAX_MB: The uploads held for all "
                                    "sessions must be between 1 and 1000000 MB; -5 was asked for."),
                                   ("CXR_DECODE_SECONDS", "abc", "CXR_DECODE_SECONDS must be a number of seconds"),
                                   ("CXR_PROMOTION_MIN_FILMS_BY_TASK", "covid=0",
                                    "CXR_PROMOTION_MIN_FILMS_BY_TASK: The promotion floor"),
                                   # the passphrase pasted in place of its hash: a sign-in offered that can never
                                   # work, with local administration left on (a review); the value is never quoted
                                   ("CXR_ADMIN_PASSPHRASE_HASH", "my-secret-passphrase", "CXR_ADMIN_PASSPHRASE_HASH "
                                    "is not a hash made by `python -m core.access.passphrase`")]:
        started = subprocess.run([sys.executable, "-m", "dashboard.serve", "--server.port", "1"], cwd=REPO,
                                 env={**os.environ, variable: value}, capture_output=True, text=True, timeout=60)
        assert started.returncode == 1 and "Traceback" not in started.stderr, started.stderr
        assert started.stderr.startswith("The dashboard was not started: ") and words in started.stderr
        assert "my-secret" not in started.stderr


def test_an_early_stopped_run_is_past_its_training_so_the_time_limit_never_ends_it_mid_registration(
        tmp_path, settings_env, monkeypatch):
    """Early stopping ends a run before its last epoch, with its step progress short of 1. Its last epoch must
    still tell the runner that only shipping is left: the second timer may not end the process (and write
    FAILED, "no model was registered") while it validates and registers the new version."""
    from core.jobs import runner

    events = []
    _early_stopping_fit(monkeypatch, events.append, None)
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [(e.epoch, e.last) for e in epochs] == [(1, False), (2, True)]  # stopped early, 4 epochs short

    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    folder = tmp_path / "jobs" / "20261204-000000-erly"
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=folder.name, data_dir=tmp_path, config=EARLY_STOP))
    write_status(folder, RUNNING, message="Training.")
    ended = []
    monkeypatch.setattr(runner, "stop_process_group", lambda: ended.append(True))
    job = runner.JobRunner(folder)
    for event in events:
        job.emit(event)
    assert job.training_started and job.training_done
    job.on_time_limit()
    job.on_overrun()  # the second timer, while the run validates and registers
    assert not ended and read_status(folder).state == RUNNING  # nothing final written: the run writes it


def test_a_claimed_slot_never_names_the_job_before_it_while_the_new_one_is_set_up(places, kermany_train,
                                                                                   monkeypatch):
    """Found by a review: until the new job's id was written, the lock file named the previous (perhaps dead)
    job, so a Cancel of that job saw the slot held by it and could signal a process that reused its pid."""
    import core.jobs.jobs as jobs_module

    checkpoints, jobs = places
    jobs.mkdir(parents=True)
    (jobs / lock.LOCK_FILE).write_text("20261129-000000-dead")
    seen = []

    def setting_up(root):
        seen.append(lock.held_by(root))
        raise JobError("stopped here by the test")

    monkeypatch.setattr(jobs_module, "_recover_all", setting_up)
    with pytest.raises(JobError, match="stopped here"):
        start_job(kermany_train, TrainConfig(arch="mlp", epochs=1, image_size=64, max_films=200),
                  directory=checkpoints, root=jobs)
    assert seen == [""]


def test_listing_jobs_prunes_saved_runs_past_the_age_limit_too(tmp_path, settings_env):
    """A review: interrupted runs' saved states (hundreds of MB for a ResNet or an ensemble) were pruned only
    when a training run opened the runs folder, so with no training after them they stayed for months, though the
    README says they go after CXR_JOB_MAX_AGE_DAYS."""
    from core.training.saved_runs import runs_dir

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_JOBS=str(tmp_path / "jobs"), CXR_JOB_MAX_AGE_DAYS="30")
    runs = runs_dir()
    runs.mkdir(parents=True)
    for name in ("old.pt", "old.json", "new.pt", "new.json"):
        (runs / name).write_bytes(b"state")
    month_ago = time.time() - 40 * 86400
    for name in ("old.pt", "old.json"):
        os.utime(runs / name, (month_ago, month_ago))
    list_jobs(tmp_path / "jobs")
    assert sorted(p.name for p in runs.iterdir()) == ["new.json", "new.pt"]


def test_the_time_limit_reached_during_an_early_stopping_epoch_lets_the_run_ship(tmp_path, settings_env,
                                                                                 monkeypatch):
    """A resume review: early stopping's last step is short of progress 1, so the time limit reached during that
    epoch's validation stopped the run after it (TrainingCancelled, the job failed with "no model was registered")
    where a full-length run in the same spot registers its model."""
    from core.jobs import runner

    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    folder = tmp_path / "jobs" / "20261207-000000-late"
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=folder.name, data_dir=tmp_path, config=EARLY_STOP))
    job = runner.JobRunner(folder)
    # the limit passes while the epoch early stopping ends on validates
    history = _early_stopping_fit(monkeypatch, job.emit, job.should_stop, at_epoch_2=job.on_time_limit)
    assert [h.epoch for h in history] == [1, 2] and job.training_done  # on to shipping, not cancelled


EARLY_STOP = TrainConfig(arch="logistic", epochs=6, image_size=32, batch_size=8, patience=1, augment=False)


def _early_stopping_fit(monkeypatch, emit, should_stop, at_epoch_2=None) -> list:
    """``loop.fit`` of :data:`EARLY_STOP` on random films, its validation AUC falling after epoch 1 (so it stops
    early after epoch 2), ``at_epoch_2`` called while that epoch validates; the epochs' history."""
    import numpy as np
    import torch

    from core.films.folders import FilmSet
    from core.models.build import build_model
    from core.models.device import FP32
    from core.store.records import EpochRecord
    from core.training import loop
    from core.training.distributed import Hardware

    def falling_auc(model, x_val, val_set, weight, epoch, train_loss, started, *rest) -> EpochRecord:
        if epoch == 2 and at_epoch_2 is not None:
            at_epoch_2()
        return EpochRecord(epoch=epoch, train_loss=train_loss, val_loss=1.0, val_auc=1.0 / epoch, seconds=0.0)

    monkeypatch.setattr(loop, "_validate", falling_auc)
    torch.manual_seed(0)
    films = loop.TrainingFilms(films=torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8),
                               labels=torch.arange(16) % 2, class_weight=torch.ones(2), total=16)
    labels = np.arange(8) % 2
    val_set = FilmSet(tuple(Path(f"{c}/{i}.png") for i, c in enumerate(labels)), labels, ("C0", "C1"))
    return loop.fit(build_model("logistic", 2, 32)[0], films, None, val_set, EARLY_STOP.resolved(),
                    Hardware(torch.device("cpu"), FP32), emit, should_stop)[1]
