"""Background training jobs (core/jobs.py + core/job_runner.py): one at a time, cancellable, crash-safe."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from e2e_support import TRAIN_DIR, quick_checkpoints, require, wait_for

from core.errors import DatasetError, JobError
from core.job_progress import job_progress
from core.jobs import (
    CANCELLED,
    FAILED,
    LOCK_FILE,
    RUNNING,
    SUCCEEDED,
    JobAlreadyRunning,
    active_job,
    cancel_job,
    check_request,
    list_jobs,
    read_job,
    start_job,
    write_status,
)
from core.registry import list_models
from core.train import TrainConfig

QUICK = TrainConfig(arch="mlp", epochs=1, image_size=32, max_films=120)
# Long enough to be caught mid-training: many epochs and early stopping switched off.
LONG = TrainConfig(arch="mlp", epochs=200, image_size=64, max_films=200, patience=1000)


@pytest.fixture
def places(tmp_path):
    require(TRAIN_DIR, "the Kermany train split")
    return quick_checkpoints(tmp_path / "checkpoints"), tmp_path / "jobs"


def _registry_snapshot(checkpoints: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(checkpoints.iterdir()) if not p.name.startswith(".")}


def _finished(folder: Path, timeout: float):
    def ended():
        job = read_job(folder)
        return None if job.is_active else job
    return wait_for(ended, timeout, what="the job to end")


def _training(folder: Path) -> bool:
    return any(e.get("phase") == "train" for e in read_job(folder).events())


@pytest.mark.parametrize("data_dir, config, error, words", [
    ("", QUICK, JobError, "Enter the dataset folder"),
    ("/no/such/folder", QUICK, DatasetError, "does not exist"),
    (None, TrainConfig(arch="vgg99"), JobError, "unknown architecture"),
    (None, TrainConfig(arch="mlp", epochs=0), JobError, "Epochs must be between"),
    (None, TrainConfig(arch="mlp", image_size=16), JobError, "Image size must be between"),
    (None, TrainConfig(arch="mlp", max_films=5), JobError, "at least 20 films"),
    (None, TrainConfig(arch="mlp", target_sensitivity=1.0), JobError, "sensitivity target must lie between"),
])
def test_bad_requests_are_refused_before_any_process_starts(tmp_path, data_dir, config, error, words):
    data_dir = str(require(TRAIN_DIR, "the Kermany train split")) if data_dir is None else data_dir
    with pytest.raises(error, match=words):
        start_job(data_dir, config, directory=tmp_path / "checkpoints", root=tmp_path / "jobs")
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


def test_a_single_class_folder_is_not_a_dataset(tmp_path):
    films = require(TRAIN_DIR, "the Kermany train split")
    (tmp_path / "only" / "NORMAL").mkdir(parents=True)
    for path in sorted((films / "NORMAL").iterdir())[:25]:
        (tmp_path / "only" / "NORMAL" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DatasetError, match="at least two sub-folders"):
        check_request(tmp_path / "only", QUICK)


def test_a_job_trains_registers_a_new_version_and_keeps_the_default(places):
    checkpoints, jobs = places
    job = start_job(TRAIN_DIR, QUICK, directory=checkpoints, root=jobs)
    assert job.state == "queued" and (jobs / LOCK_FILE).exists()
    done = _finished(job.folder, timeout=120)
    assert done.state == SUCCEEDED, done.message
    assert done.model == "pneumonia-mlp-v2"
    assert 0.0 <= done.status["summary"]["auc"] <= 1.0
    entries, problems = list_models(checkpoints)
    assert not problems
    assert {e.name for e in entries} == {"pneumonia-cnn5-v1", "pneumonia-mlp-v1", "pneumonia-mlp-v2"}
    assert next(e for e in entries if e.is_default).name == "pneumonia-cnn5-v1"
    assert not (jobs / LOCK_FILE).exists() and active_job(jobs) is None
    progress = job_progress(done.events())
    assert progress.phase == "done" and progress.fraction == 1.0 and len(progress.epochs) == 1
    assert any("Registered pneumonia-mlp-v2" in line for line in done.log_tail())
    assert [j.job_id for j in list_jobs(jobs)] == [job.job_id]


def test_second_start_is_refused_and_cancel_saves_nothing(places):
    checkpoints, jobs = places
    before = _registry_snapshot(checkpoints)
    job = start_job(TRAIN_DIR, LONG, directory=checkpoints, root=jobs)
    with pytest.raises(JobAlreadyRunning, match="already running"):
        start_job(TRAIN_DIR, QUICK, directory=checkpoints, root=jobs)
    wait_for(lambda: _training(job.folder), timeout=120, what="training steps")
    assert active_job(jobs).job_id == job.job_id
    cancel_job(job.job_id, jobs)
    done = _finished(job.folder, timeout=60)
    assert done.state == CANCELLED
    assert "nothing was saved" in done.message
    assert _registry_snapshot(checkpoints) == before
    assert not (jobs / LOCK_FILE).exists()
    with pytest.raises(JobError, match="not running"):
        cancel_job(job.job_id, jobs)


def test_cancel_while_decoding_films_stops_at_once(places):
    checkpoints, jobs = places
    before = _registry_snapshot(checkpoints)
    everything = TrainConfig(arch="mlp", epochs=1, image_size=64)  # decoding all 5,216 films takes a while
    job = start_job(TRAIN_DIR, everything, directory=checkpoints, root=jobs)
    wait_for(lambda: read_job(job.folder).state == RUNNING, timeout=60, what="the runner to start")
    cancel_job(job.job_id, jobs)
    done = _finished(job.folder, timeout=15)
    assert done.state == CANCELLED and "before it started" in done.message
    assert _registry_snapshot(checkpoints) == before


def test_a_killed_job_is_recovered_and_the_registry_is_intact(places):
    checkpoints, jobs = places
    before = _registry_snapshot(checkpoints)
    job = start_job(TRAIN_DIR, LONG, directory=checkpoints, root=jobs)
    wait_for(lambda: _training(job.folder), timeout=120, what="training steps")
    pid = json.loads((jobs / LOCK_FILE).read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: active_job(jobs) is None, timeout=30, what="the stale lock to be recovered")
    killed = read_job(job.folder)
    assert killed.state == FAILED and "stopped unexpectedly" in killed.message
    assert _registry_snapshot(checkpoints) == before
    assert next(e for e in list_models(checkpoints)[0] if e.is_default).name == "pneumonia-cnn5-v1"
    again = start_job(TRAIN_DIR, QUICK, directory=checkpoints, root=jobs)  # the slot is free again
    assert _finished(again.folder, timeout=120).state == SUCCEEDED


@pytest.mark.parametrize("pid_source", ["dead process", "live process that is not a runner"])
def test_a_stale_lock_is_recovered(tmp_path, pid_source):
    jobs = tmp_path / "jobs"
    folder = jobs / "20260101-000000-dead"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": folder.name, "config": {"arch": "mlp", "epochs": 1}}))
    write_status(folder, RUNNING)
    if pid_source == "dead process":
        finished = subprocess.Popen(["true"])
        finished.wait()
        pid = finished.pid
    else:
        pid = os.getpid()  # alive, but its command line is not this job's runner: a reused pid
    (jobs / LOCK_FILE).write_text(json.dumps({"job_id": folder.name, "pid": pid, "role": "runner"}))
    assert active_job(jobs) is None
    assert read_job(folder).state == FAILED
    assert not (jobs / LOCK_FILE).exists()


def test_progress_from_events():
    now = 1000.0
    assert job_progress([], now).phase == "starting"
    loading = [{"phase": "loading", "message": "decoding 100 films once", "time": now},
               {"phase": "loading", "done": 40, "total": 100, "time": now}]
    progress = job_progress(loading, now)
    assert progress.phase == "loading" and progress.fraction == pytest.approx(0.04)
    step = {"phase": "train", "epoch": 2, "epochs": 4, "step": 5, "steps": 10, "loss": 0.5, "progress": 0.375,
            "eta_seconds": 50.0, "time": now - 20}
    epoch = {"phase": "epoch", "epoch": 1, "epochs": 4, "train_loss": 0.6, "val_loss": 0.55, "val_auc": 0.8,
             "seconds": 30.0, "time": now - 25}
    progress = job_progress(loading + [epoch, step], now)
    assert progress.phase == "training"
    assert progress.fraction == pytest.approx(0.1 + 0.9 * 0.375)
    assert progress.eta_seconds == pytest.approx(30.0)  # 50 s estimated 20 s ago
    assert progress.step_losses == [{"epoch": 1.5, "loss": 0.5}]
    assert progress.epochs[0]["val_auc"] == 0.8
    assert "epoch 2 of 4" in progress.text
    finishing = dict(step, progress=1.0, epoch=4, step=10)
    assert job_progress(loading + [finishing], now).phase == "finishing"
