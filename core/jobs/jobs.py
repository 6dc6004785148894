"""Background training jobs: one at a time, in their own process, readable by any page at any time.

A job is a folder ``JOBS/<job_id>/`` (``JOBS`` is ``settings().jobs``, see core.config) holding

- ``config.json``: :class:`~core.jobs.records.JobSettings`, the dataset folder, the training recipe and
  the checkpoints folder;
- ``status.json``: :class:`~core.jobs.records.JobStatus`, ``state`` (queued -> running -> succeeded |
  failed | cancelled), the new model's name and a message, always replaced atomically;
- ``events.jsonl``: every ``train()`` progress event as one JSON line, appended and flushed;
- ``log.txt``: the same story in sentences; ``runner.stderr``: anything unexpected, for an operator.

Only one job runs: its runner holds the ``flock`` on ``JOBS/active.lock`` (core.jobs.lock) for its whole
life, handed to it by the starter, and the kernel releases it when the runner ends in any way. So a job
whose status says queued or running while the lock is free has lost its process: the next reader marks it
failed (or succeeded, when it had registered its model before it died). The runner runs
``python -m core.jobs.runner JOB_DIR --lock-fd N`` in a new session, so it outlives the page, the tab and
the Streamlit script run. Cancelling leaves a marker and sends SIGTERM; the runner stops between training
steps and registers nothing (its finished epochs stay, for Resume: core.jobs.resume). The registry is only
written by ``train()``, atomically, so a killed job cannot corrupt it. Every time written is UTC, from
core.clock. A job stops itself after its time limit (core.jobs.time_limit); finished job folders past their
age are pruned (core.jobs.prune); starts, resumes and cancels are in the audit log (core.admin.audit).
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core import clock
from core.admin.audit import record_action
from core.config import REPO_ROOT, job_environment, settings
from core.limits import MIN_FILMS
from core.errors import AuditLogUnavailable, JobError
from core.films.manifest import find_manifest, training_films
from core.films.roots import audit_label
from core.jobs import lock
from core.jobs.lock import LOCK_FILE
from core.store.atomic import keep_private
from core.jobs.prune import prune_old_jobs
from core.jobs.records import (ACTIVE_STATES, CANCELLED, FAILED, JOB_FOLDER, QUEUED, RUNNING, SUCCEEDED, Job,
                               JobSettings, JobStatus, JobSummary, read_settings, read_status, run_left_by,
                               trace_registered, version_registered_by, write_settings, write_status)
from core.store.names import check_base_name
from core.store.registry import checkpoint_dir
from core.store.records import TrainConfig
from core.training.saved_runs import discard_saved_run, kept_note, prune_saved_runs, saved_run_of_job

__all__ = ["ACTIVE_STATES", "CANCELLED", "FAILED", "LOCK_FILE", "QUEUED", "RUNNING", "RUNNER_MODULE",
           "SUCCEEDED", "Job", "JobAlreadyRunning", "JobSettings", "JobStatus", "JobSummary", "active_job",
           "cancel_job", "check_request", "jobs_dir", "list_jobs", "read_job", "start_job", "write_status"]

RUNNER_MODULE = "core.jobs.runner"
CANCEL_MARKER = "cancel"


class JobAlreadyRunning(JobError):
    """Another training job holds the one job slot."""


def jobs_dir() -> Path:
    """The jobs folder: ``CXR_JOBS``, or ``jobs/`` beside the checkpoints folder (core.config)."""
    return settings().jobs


def check_request(data_dir: str | Path, config: TrainConfig) -> TrainConfig:
    """Refuse settings that cannot train, before any process starts; returns the resolved config."""
    if not str(data_dir).strip():
        raise JobError("Enter the dataset folder: a folder with one sub-folder of films per class.")
    try:
        config = config.resolved()  # every number against its limit in core.config
    except ValueError as exc:
        message = str(exc)
        raise JobError(message if message.endswith(".") else f"{message}.") from exc
    films = training_films(data_dir)[0]  # a folder or a manifest; DatasetError says what is wrong with it
    if len(films) < MIN_FILMS.low:
        raise JobError(f"{data_dir} holds only {len(films)} films; training needs at least {MIN_FILMS.low:.0f}.")
    kept, folds = films.subset_counts(config.max_films), round(1 / config.val_fraction)
    if min(kept) < folds:  # the split refused it only once the job had started (a review)
        fewest = int(min(range(len(kept)), key=kept.__getitem__))
        within = f" of the {config.max_films} films asked for" if kept != films.class_counts() else ""
        raise JobError(f"Class {films.classes[fewest]} would have only {kept[fewest]} film(s){within}; a validation "
                       f"part of 1/{folds} needs at least {folds} films of every class. Add films to that class "
                       f"folder{' or ask for more films' if within else ''}.")
    return config


def start_job(data_dir: str | Path, config: TrainConfig, name: str | None = None,
              directory: Path | None = None, root: Path | None = None, *, who: str = "cli",
              resume_of: str | None = None) -> Job:
    """Check the request, claim the one job slot and start the runner (``resume_of``: to continue that job's
    run, core.jobs.resume); raises JobAlreadyRunning if taken. The start is written to the audit log as asked
    for by ``who`` first: a start that cannot be recorded does not happen. The job stops itself after the
    configured time limit (core.jobs.runner)."""
    config = check_request(data_dir, config)
    if name is not None:
        check_base_name(name)  # a file name, never a path (InvalidModelName), before any process starts
    root = root or jobs_dir()
    try:
        fd = lock.claim(root)
    except OSError as exc:
        raise _unwritable(exc) from None
    if fd is None:
        raise JobAlreadyRunning(_busy_message(root))
    folder = None
    try:
        # the file still names the job before this one, perhaps dead with a pid since reused: a Cancel of that
        # job now would find the slot held "by it" and signal whatever has the pid (a review)
        lock.name_holder(fd, "")
        _recover_all(root)  # we hold the lock: any job still marked active has lost its process
        prune_old_jobs(root)
        job_id = f"{clock.stamp()}-{secrets.token_hex(2)}"
        lock.name_holder(fd, job_id)
        folder = root / job_id
        folder.mkdir(mode=0o700)  # inside a 0700 jobs folder (core.jobs.lock.claim): its owner's alone
        write_settings(folder, JobSettings(
            job_id=job_id, data_dir=(find_manifest(data_dir) or Path(data_dir).expanduser()).resolve(), name=name,
            config=config, checkpoints=(directory or checkpoint_dir()).resolve(), created=clock.iso(), started_by=who,
            time_limit_minutes=settings().job_time_limit_minutes, resume_of=resume_of))
        write_status(folder, QUEUED, message="Waiting for the training process to start.")
        _record_start(folder, job_id, data_dir, config, name, who, resume_of)
        try:
            process = _spawn(folder, fd)
        except OSError as exc:
            message = f"The training process could not be started ({exc.strerror or type(exc).__name__})."
            write_status(folder, FAILED, message=message)
            raise JobError(message) from exc
    except OSError as exc:  # the jobs folder cannot be written (full, read-only): no half-made job is left
        if folder is not None and not (folder / "status.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
        raise _unwritable(exc) from None
    finally:
        os.close(fd)  # the runner holds the same open file, and with it the lock, until it ends
    # Reap the runner when it ends, so it never lingers as a zombie.
    threading.Thread(target=process.wait, name=f"reap-{job_id}", daemon=True).start()
    return read_job(folder)


def _unwritable(exc: OSError) -> JobError:
    """The jobs folder's failure in words, without its server path (the detail goes to the server log)."""
    logging.getLogger(__name__).warning("the jobs folder cannot be written: %s", exc)
    return JobError(f"The training job could not be set up: the jobs folder cannot be written "
                    f"({exc.strerror or type(exc).__name__}). Nothing was started; ask an administrator to check "
                    "the jobs folder (CXR_JOBS) and the free disk space.")


def _record_start(folder: Path, job_id: str, data_dir: str | Path, config: TrainConfig, name: str | None,
                  who: str, resume_of: str | None = None) -> None:
    resumed = {"resumes": resume_of} if resume_of else {}  # a resume names the job whose run it continues
    try:  # the dataset by its data-root label: the audit log is shown on a page, server paths are not
        record_action("job.resume" if resume_of else "job.start", who, job=job_id, **resumed,
                      dataset=audit_label(data_dir), name=name, config=config.to_json(),
                      time_limit_minutes=settings().job_time_limit_minutes)
    except AuditLogUnavailable:
        write_status(folder, FAILED, message="Not started: the audit log cannot be written.")
        raise


def _busy_message(root: Path) -> str:
    holder = lock.held_by(root)
    which = f" (job {holder})" if holder and (root / holder).is_dir() else ""
    return (f"A training job is already running{which}. "
            "Wait for it to finish or cancel it, then start again.")


def _spawn(folder: Path, fd: int) -> subprocess.Popen:
    with open(folder / "runner.stderr", "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", RUNNER_MODULE, str(folder), "--lock-fd", str(fd)], cwd=REPO_ROOT,
            env=job_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            pass_fds=(fd,),  # the same open file: the runner holds our lock from its first instruction
            start_new_session=True,  # its own session: closing the tab or stopping the script leaves it running
        )


def _read(folder: Path) -> Job:
    return Job(folder.name, folder, read_settings(folder), read_status(folder))


def read_job(folder: Path) -> Job:
    """The job in ``folder``; one marked active whose runner is gone (the lock is free) is settled first."""
    job = _read(folder)
    if job.is_active:
        try:
            with lock.probe(folder.parent) as free:
                if free:
                    with lock.settling(folder):  # the status read again inside: a settler before us is seen
                        job = _settle_if_dead(folder)
        except OSError as exc:  # a jobs folder gone read-only or full: its text would name the server path
            why = exc.strerror or type(exc).__name__
            raise JobError(f"Whether job {folder.name} still runs cannot be checked ({why}); an administrator "
                           "should check that the jobs folder can be written.") from None
    return job


def list_jobs(root: Path | None = None, limit: int | None = None) -> list[Job]:
    """Jobs, newest first, a running one before all (names were local time before the clock was UTC: an older
    job's could sort above the running one's, which the page then hid, a review); unreadable folders are left
    out, and finished ones past the age limit pruned."""
    root = root or jobs_dir()
    if root.is_dir():
        keep_private(root, "the jobs folder")  # an older install's 0755 folder of job logs, before any new job
    prune_old_jobs(root)
    try:  # interrupted runs' saved states too: with no training after them they stayed for months (a review)
        prune_saved_runs()
    except OSError as exc:
        logging.getLogger(__name__).warning("saved runs past the age limit could not be pruned: %s", exc)
    folders = sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.exists() else []
    jobs = []
    for folder in folders[:limit] if limit else folders:
        try:
            jobs.append(read_job(folder))
        except JobError:
            continue
    return sorted(jobs, key=lambda job: not job.status.is_active)  # stable: newest first otherwise


def active_job(root: Path | None = None) -> Job | None:
    """The running (or starting) job, or None. Free lock: no job runs, whatever the lock file says."""
    root = root or jobs_dir()
    with lock.probe(root) as free:
        if free:
            _recover_all(root)
            return None
    holder = lock.held_by(root)
    if not holder or not (root / holder).is_dir():
        return None  # a starter is between taking the lock and naming its job
    try:
        job = read_job(root / holder)
    except JobError:
        return None
    return job if job.is_active else None


def cancel_job(job_id: str, root: Path | None = None, *, who: str = "cli") -> None:
    """Ask the job to stop: a marker file (read before and during training) plus SIGTERM to its runner.
    Written to the audit log as asked for by ``who`` first (who may cancel is the page's decision)."""
    root = root or jobs_dir()
    if not JOB_FOLDER.match(job_id):  # an id, never a path
        raise JobError(f"There is no job {job_id!r}.")
    folder = root / job_id
    job = read_job(folder)
    if not job.is_active:
        raise JobError(f"Job {job_id} is not running ({job.state}); there is nothing to cancel.")
    record_action("job.cancel", who, job=job_id, state=job.state, started_by=job.settings.started_by)
    try:
        (folder / CANCEL_MARKER).write_text(clock.iso())
    except OSError as exc:  # a full disk, a folder removed by hand: its text would name the server path
        raise JobError(f"Job {job_id} could not be asked to stop ({exc.strerror or type(exc).__name__}); "
                       "it goes on. Try again, or stop the server's training process.") from exc
    pid = read_status(folder).pid  # read after the marker: a runner that has not written its pid sees the marker
    if pid and lock.held_by(root) == job_id:  # only a live runner holds the lock: never signal a reused pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended meanwhile; its own status stands


def _recover_all(root: Path) -> None:
    """Call holding the lock (or a shared probe of a free one): settle every job still marked active."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.is_dir():
            try:
                _settle_if_dead(folder)
            except JobError:
                continue


def _settle_if_dead(folder: Path) -> Job:
    """Call only when no runner holds the lock. The status is read again: the runner may have just finished."""
    job = _read(folder)
    if not job.is_active:
        return job
    registered = version_registered_by(job)
    if registered is not None:
        left = saved_run_of_job(job.job_id)  # killed between the version's files and forgetting the run
        untraced = trace_registered(job, registered)  # or after, before its first-default rule (a resume review)
        if left is not None:
            discard_saved_run(left.key)
        write_status(folder, SUCCEEDED, model=registered.name, summary=JobSummary.of(registered), message=(
            f"The training process stopped unexpectedly after registering {registered.name}; "
            "that version is complete." + untraced))
    else:
        write_status(folder, FAILED, message=(
            "The training process stopped unexpectedly (it was killed or the server restarted). "
            "Nothing was registered; the existing models and the default are unchanged." + kept_note(run_left_by(folder))))
    return _read(folder)
