"""Training jobs that crash: a runner killed with SIGKILL at any moment, a starter that dies, a lock file
left with junk, a runner that cannot be spawned, and two starts at once.

The job slot is an OS lock (``flock`` on JOBS/active.lock) that the runner holds for its whole life, so a
crash frees it at once; the job's status is then settled by the next reader: failed, or succeeded when the
job had registered its model before it died. The registry is only ever written atomically by ``train()``.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import corpus
import pytest
from e2e_support import wait_for

from core.errors import JobError
from core.jobs import lock
from core.jobs.records import JobSettings, read_status, write_settings
from core.training.saved_runs import saved_run_of_job
from core.jobs.jobs import (
    FAILED,
    LOCK_FILE,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobAlreadyRunning,
    active_job,
    cancel_job,
    list_jobs,
    read_job,
    start_job,
    write_status,
)
from core.store.checkpoints import load_checkpoint
from core.store.records import TrainConfig
from core.store.registry import REGISTRY_FILE, list_models, read_registry
from core.training.events import LoadingEvent, StepEvent

QUICK = TrainConfig(arch="mlp", epochs=1, image_size=64, max_films=120)
LONG = TrainConfig(arch="mlp", epochs=200, image_size=64, max_films=200, patience=100)
RELEASE_SECONDS = 5  # the kernel frees the lock as the killed process exits: well under a second


@pytest.fixture
def job_places(trained_model, kermany_train, tmp_path) -> tuple[Path, Path]:
    return corpus.copy_registry(trained_model.directory, tmp_path / "checkpoints"), tmp_path / "jobs"


def _default_files(checkpoints: Path) -> dict[str, bytes]:
    """registry.json and the default model's two files, byte for byte."""
    default = read_registry(checkpoints).default
    return {name: (checkpoints / name).read_bytes() for name in (REGISTRY_FILE, f"{default}.json", f"{default}.pt")}


def _runner_pid(folder: Path) -> int:
    """The pid the runner wrote into its status as it started."""
    job = wait_for(lambda: (lambda j: j if j.status.pid else None)(read_job(folder)), timeout=60,
                   interval=0.05, what="the runner to start")
    assert job.state == RUNNING
    return job.status.pid


def _kill(pid: int, job_id: str) -> None:
    """SIGKILL our own runner, after checking the pid is still that runner (never a reused pid)."""
    try:
        if job_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass  # it has already ended


def _seen(folder: Path, kind: type, **at_least: float) -> bool:
    return any(isinstance(e, kind) and all((getattr(e, k) or 0) >= v for k, v in at_least.items())
               for e in read_job(folder).events())


def _kill_when(folder: Path, checkpoints: Path, trigger: str, pid: int) -> None:
    """Wait for the moment named by ``trigger``, then SIGKILL the runner at once."""
    if trigger == "decoding":
        wait_for(lambda: _seen(folder, LoadingEvent, done=1), timeout=180, interval=0.05, what="decoding")
        return _kill(pid, folder.name)
    if trigger == "training":
        wait_for(lambda: _seen(folder, StepEvent), timeout=180, interval=0.05, what="a training step")
        return _kill(pid, folder.name)
    wait_for(lambda: _seen(folder, StepEvent, progress=1.0), timeout=180, interval=0.02, what="the last step")
    before = {p.name for p in checkpoints.iterdir()}
    pattern = {"registry lock": r"^\.registry\.lock$", "weights written": r"\.pt(\..*\.tmp)?$",
               "description written": r"^[^.].*\.json$"}[trigger]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if any(re.search(pattern, name) for name in {p.name for p in checkpoints.iterdir()} - before):
            break
        time.sleep(0.001)
    _kill(pid, folder.name)


def _ended(folder: Path):
    job = read_job(folder)
    return None if job.is_active else job


@pytest.mark.parametrize("trigger", ["decoding", "training", "registry lock", "weights written",
                                     "description written"])
def test_a_job_killed_at_any_moment_leaves_the_registry_whole_and_the_next_job_runs(job_places, kermany_train,
                                                                                    trigger):
    checkpoints, jobs = job_places
    before = _default_files(checkpoints)
    config = {"decoding": TrainConfig(arch="mlp", epochs=1, image_size=64), "training": LONG}.get(trigger, QUICK)
    job = start_job(kermany_train, config, directory=checkpoints, root=jobs)
    _kill_when(job.folder, checkpoints, trigger, _runner_pid(job.folder))
    wait_for(lambda: lock.held_by(jobs) is None, timeout=RELEASE_SECONDS, interval=0.02, what="the lock to drop")
    if trigger == "decoding":
        assert not _seen(job.folder, StepEvent)  # killed before any training step

    killed = read_job(job.folder)  # the first reader settles the dead job's status
    assert not killed.is_active and active_job(jobs) is None
    assert _default_files(checkpoints) == before  # registry.json and the default model, byte for byte
    entries, problems = list_models(checkpoints)
    assert problems == []
    for entry in entries:  # any version the killed job got to register is whole
        load_checkpoint(entry.json_path)
    registered = [e for e in entries if e.record.training.job_id == job.job_id]
    if registered:  # killed after its description was written: the version is complete, and said so
        assert killed.state == SUCCEEDED and killed.model == registered[0].name
        assert f"after registering {registered[0].name}" in killed.message
        assert killed.status.summary.auc == registered[0].record.report.auc
        assert saved_run_of_job(job.job_id) is None  # resumed, it would register that version again (a review)
    else:
        assert killed.state == FAILED and killed.model is None
        assert "stopped unexpectedly" in killed.message and "Nothing was registered" in killed.message
    assert not registered or trigger not in ("decoding", "training")
    assert killed.status.finished_at is not None

    again = start_job(kermany_train, QUICK, directory=checkpoints, root=jobs)  # the slot is free again
    done = wait_for(lambda: _ended(again.folder), timeout=300, what="the next job")
    assert done.state == SUCCEEDED, done.message
    load_checkpoint(checkpoints / f"{done.model}.json")
    assert _default_files(checkpoints) == before
    assert read_job(job.folder).state == killed.state  # settled once, for good


def _queued_job(jobs: Path, job_id: str = "20260101-000000-dead") -> Path:
    folder = jobs / job_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": job_id, "data_dir": "/data",
                                                    "config": {"arch": "mlp", "epochs": 1}}))
    write_status(folder, QUEUED, message="Waiting for the training process to start.")
    return folder


@pytest.mark.parametrize("content", ["", "{\"job_id\": \"2026", "20260101-000000-dead", "20250101-000000-gone",
                                     json.dumps({"job_id": "20260101-000000-dead", "pid": 1, "role": "runner"})],
                         ids=["empty", "torn", "dead starter", "missing folder", "old pid lock"])
def test_a_lock_file_nobody_holds_is_not_an_active_job(tmp_path, content):
    """Whatever a crash left in the lock file, a lock nobody holds means no job runs: a job still marked
    queued lost its starter (killed between writing its status and spawning the runner) and is settled failed."""
    jobs = tmp_path / "jobs"
    folder = _queued_job(jobs)
    (jobs / LOCK_FILE).write_text(content)
    assert lock.held_by(jobs) is None
    assert active_job(jobs) is None
    (job,) = list_jobs(jobs)
    assert job.job_id == folder.name and job.state == FAILED and "stopped unexpectedly" in job.message
    fd = lock.claim(jobs, wait=0)  # and the slot can be taken at once
    assert fd is not None
    os.close(fd)


@pytest.mark.parametrize("damage", ["{not json", None], ids=["damaged", "removed"])
def test_a_job_record_that_cannot_be_read_is_named_without_server_paths_or_parser_words(tmp_path, damage):
    """The page shows this message to whoever watches a job: the job and the record, not the server's folder
    or the JSON parser's account (those go to the server log)."""
    folder = _queued_job(tmp_path / "jobs")
    if damage is None:
        (folder / "status.json").unlink()
    else:
        (folder / "status.json").write_text(damage)
    with pytest.raises(JobError) as caught:
        read_job(folder)
    assert str(caught.value) == (f"The status.json record of job {folder.name} is missing or damaged; the server log "
                                 "says more.")


HOLDER = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
          "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.write(fd, sys.argv[2].encode()); "
          "print('held', flush=True); time.sleep(600)")


def test_a_held_lock_is_a_running_job_until_its_holder_dies(tmp_path, kermany_train, monkeypatch):
    """No training needed: a stand-in process holds the lock the way a runner does. While it lives, the job
    is left alone and a second start is refused; once it is killed the lock is free at once."""
    jobs = tmp_path / "jobs"
    folder = _queued_job(jobs)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(jobs / LOCK_FILE), folder.name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.held_by(jobs) == folder.name
        assert active_job(jobs).job_id == folder.name and read_job(folder).state == QUEUED
        tries = []
        monkeypatch.setattr(lock, "_try", lambda fd, kind, real=lock._try: tries.append(kind) or real(fd, kind))
        with pytest.raises(JobAlreadyRunning, match=f"already running \\(job {folder.name}\\)"):
            start_job(kermany_train, QUICK, directory=tmp_path / "checkpoints", root=jobs)
        assert tries.count(fcntl.LOCK_EX) > 1  # it tried again (readers' probes are brief) before it refused
        assert read_job(folder).state == QUEUED  # a live holder's job is never settled
    finally:
        holder.kill()
        holder.wait()
    assert lock.held_by(jobs) is None
    assert read_job(folder).state == FAILED
    assert [p.name for p in jobs.iterdir() if p.is_dir()] == [folder.name]  # the refused start made no folder


def test_cancel_never_signals_a_runner_that_is_gone(tmp_path):
    """A status naming a pid whose runner is gone (the lock is free): settled, and no signal is sent."""
    jobs = tmp_path / "jobs"
    folder = _queued_job(jobs)
    write_status(folder, RUNNING, pid=os.getpid())  # were it signalled, this test process would get SIGTERM
    with pytest.raises(JobError, match="not running \\(failed\\)"):
        cancel_job(folder.name, jobs)
    assert read_job(folder).state == FAILED


def test_a_runner_that_cannot_be_spawned_fails_the_job_and_frees_the_slot(job_places, kermany_train,
                                                                          monkeypatch):
    checkpoints, jobs = job_places
    monkeypatch.setattr(sys, "executable", str(jobs.parent / "no-such-python"))
    with pytest.raises(JobError, match="could not be started"):
        start_job(kermany_train, QUICK, directory=checkpoints, root=jobs)
    (job,) = list_jobs(jobs)
    assert job.state == FAILED and "could not be started" in job.message
    assert lock.held_by(jobs) is None and active_job(jobs) is None


def test_two_starts_at_once_exactly_one_wins(job_places, kermany_train):
    checkpoints, jobs = job_places
    before = _default_files(checkpoints)
    barrier, outcomes = threading.Barrier(2), []

    def start() -> None:
        barrier.wait()
        try:
            outcomes.append(start_job(kermany_train, LONG, directory=checkpoints, root=jobs))
        except JobAlreadyRunning as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(winners) == 1, outcomes
    (winner,) = winners
    assert [p.name for p in jobs.iterdir() if p.is_dir()] == [winner.job_id]
    assert lock.held_by(jobs) == winner.job_id and active_job(jobs).job_id == winner.job_id
    cancel_job(winner.job_id, jobs)
    done = wait_for(lambda: _ended(winner.folder), timeout=60, what="the winner to stop")
    assert done.state == "cancelled" and _default_files(checkpoints) == before
    assert lock.held_by(jobs) is None


# --- the runner's own decisions, in this process ------------------------------------------------------------


class _Exited(Exception):
    """os._exit, caught: the runner would have ended its process here."""


def _runner(tmp_path: Path, monkeypatch, resume_of: str | None = None):
    from core.jobs.runner import JobRunner

    folder = tmp_path / "jobs" / "20261130-000000-rune"
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=folder.name, data_dir=tmp_path, config=QUICK, resume_of=resume_of))
    write_status(folder, RUNNING, message="Training.")

    def exit_here(code: int) -> None:
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", exit_here)
    return JobRunner(folder)


def test_a_cancel_after_a_resumed_run_s_last_epoch_lets_it_ship_instead_of_ending_mid_registration(
        tmp_path, monkeypatch, settings_env):
    """A run resumed after its last epoch takes no step: it validates and registers at once. Its replayed epochs
    mean the run is past decoding, so Cancel must not end the process (half a registration), as it still may
    while a fresh run decodes its films."""
    from core.training.events import EpochEvent

    settings_env(CXR_MODELS=str(tmp_path / "models"))
    decoding = _runner(tmp_path / "a", monkeypatch)
    decoding.emit(LoadingEvent(message="decoding 120 films once"))
    (decoding.folder / "cancel").touch()  # as Cancel does before it signals (core.jobs.jobs.cancel_job)
    with pytest.raises(_Exited):
        decoding.on_signal(signal.SIGTERM, None)
    assert read_job(decoding.folder).status.message.startswith("Training was cancelled before it started")

    resumed = _runner(tmp_path / "b", monkeypatch, resume_of="20261129-000000-prev")
    for epoch in (1, 2):  # replayed from the saved state
        resumed.emit(EpochEvent(epoch=epoch, epochs=2, train_loss=0.5, val_loss=0.5, val_auc=0.9, seconds=1.0))
    assert resumed.training_started and resumed.training_done
    resumed.on_signal(signal.SIGTERM, None)  # returns: the run ships, its status says the cancel came late
    assert resumed.cancel_requested and read_status(resumed.folder).state == RUNNING  # nothing final written


def test_an_unexpected_training_error_is_named_by_its_type_not_its_server_paths(tmp_path, monkeypatch,
                                                                                 settings_env):
    import core.training.train as training

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    runner = _runner(tmp_path, monkeypatch)
    secret = tmp_path / "runs" / ".05e3.pt.tmp"

    def fails(*args, **kwargs):
        raise IsADirectoryError(21, "Is a directory", str(secret), str(secret.with_name("05e3.pt")))

    monkeypatch.setattr(training, "train", fails)
    assert runner._run() == 1
    status = read_job(runner.folder).status
    assert status.state == FAILED and "unexpected error (IsADirectoryError)" in status.message
    assert str(tmp_path) not in status.message and "runner.stderr" in status.message


def test_a_job_that_ran_out_of_memory_says_its_saved_epochs_are_kept(tmp_path, monkeypatch, settings_env):
    """Its message said "Nothing was saved" while the page offered Resume from the state of its last epoch."""
    import core.training.train as training
    from core.errors import DeviceOutOfMemory
    from core.store.records import Fingerprint
    from core.training.saved_runs import SavedRun, runs_dir

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    runner = _runner(tmp_path, monkeypatch)
    films = Fingerprint(n=80, class_counts={"NORMAL": 40, "PNEUMONIA": 40}, sha256="0" * 64)
    runs_dir().mkdir(parents=True)
    (runs_dir() / "05e3.json").write_text(SavedRun(key="05e3", data_dir=str(tmp_path), config=QUICK.model_copy(
        update={"epochs": 3}), train=films, validation=films, epoch=2, job_id=runner.folder.name).model_dump_json())
    (runs_dir() / "05e3.pt").write_bytes(b"state")

    def out_of_memory(*args, **kwargs):
        raise DeviceOutOfMemory("The GPU ran out of memory training mlp (...). No model was registered.")

    monkeypatch.setattr(training, "train", out_of_memory)
    assert runner._run() == 1
    status = read_job(runner.folder).status
    assert status.state == FAILED and status.message.endswith(
        "No model was registered. Its state after epoch 2 of 3 is kept: an administrator can resume it (Resume).")


@pytest.mark.parametrize("where", ["jobs folder under a file", "disk full"])
def test_a_jobs_folder_that_cannot_be_written_is_refused_in_words_and_leaves_no_half_made_job(
        job_places, kermany_train, tmp_path, monkeypatch, where):
    checkpoints, jobs = job_places
    if where == "jobs folder under a file":
        (tmp_path / "afile").write_text("not a folder")
        jobs = tmp_path / "afile" / "jobs"
    else:
        import core.jobs.jobs as job_module

        def full(folder, settings):
            raise OSError(28, "No space left on device", str(folder / "settings.json"))

        monkeypatch.setattr(job_module, "write_settings", full)
    with pytest.raises(JobError) as refused:
        start_job(kermany_train, QUICK, directory=checkpoints, root=jobs)
    message = str(refused.value)
    assert "jobs folder cannot be written" in message and "Nothing was started" in message
    assert str(tmp_path) not in message
    if where == "disk full":
        assert list(jobs.iterdir()) == [jobs / LOCK_FILE] or [p.name for p in jobs.iterdir()] == [LOCK_FILE]
        assert lock.held_by(jobs) is None and active_job(jobs) is None


def test_a_refused_resume_on_the_page_is_worded_for_the_page(tmp_path, monkeypatch, settings_env):
    import core.training.train as training
    from core.errors import ResumeRefused

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    runner = _runner(tmp_path, monkeypatch, resume_of="20261129-000000-prev")

    def refused(*args, **kwargs):
        raise ResumeRefused("The saved state of this run cannot be read: it is damaged (KeyError). It cannot be "
                            "resumed; start a new run with the same settings instead (without --resume), which "
                            "replaces it.")

    monkeypatch.setattr(training, "train", refused)
    assert runner._run() == 1
    message = read_job(runner.folder).status.message
    assert message.startswith("Training failed: The saved state of this run cannot be read")
    assert "(Start training)" in message and "--resume" not in message
