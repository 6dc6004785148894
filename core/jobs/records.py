"""What a job folder stores, typed: ``config.json`` (:class:`JobSettings`, written once by the starter) and
``status.json`` (:class:`JobStatus`, replaced atomically by :func:`write_status` at every change of state).

Older folders keep loading: a status with local times and ``running_at`` reads as one with ``started_at``.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field

from core import clock
from core.errors import JobError, TriageError
from core.store.atomic import atomic_write_json
from core.store.base import Record, open_regular, read_record
from core.store.records import ModelRecord, TrainConfig, read_model_record
from core.store.registry import REGISTRY_FILE, checkpoint_dir
from core.store.reports import HeadlineFigures
from core.jobs.event_log import MAX_PROGRESS_BYTES, read_events
from core.training.events import ProgressEvent
from core.training.saved_runs import SavedRun, saved_run_of_job

JOB_FOLDER = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9]+$")  # a job's id, and its folder's name
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING)
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
CONFIG_FILE, STATUS_FILE = "config.json", "status.json"


class JobSettings(Record):
    """``config.json``: what was asked for, fixed when the job is created."""

    job_id: str
    data_dir: Path
    name: str | None = None  # the new model's base name; None: the task and architecture
    config: TrainConfig = TrainConfig()
    checkpoints: Path | None = None  # the registry the new version goes to; None: the configured one
    created: str | None = None  # UTC, core.clock.iso
    started_by: str | None = None  # who asked for the job (the audit log says the same)
    time_limit_minutes: float | None = None  # the limit in force when it started; None: the current setting
    resume_of: str | None = None  # the job whose interrupted run this one continues (core.training.resume)


class JobSummary(HeadlineFigures):
    """The new model's validation figures, for the page to show without loading the model."""

    n: int | None = None
    threshold: float | None = None
    seconds: float | None = None  # training time

    @classmethod
    def of(cls, record: ModelRecord) -> "JobSummary":
        report = record.report
        seconds = record.training.seconds if record.training else None
        if report is None:
            return cls(seconds=seconds)
        return cls(n=report.n, auc=report.auc, auc_ci=report.auc_ci, accuracy=report.accuracy,
                   accuracy_ci=report.accuracy_ci, sensitivity=report.sensitivity,
                   sensitivity_ci=report.sensitivity_ci, specificity=report.specificity,
                   specificity_ci=report.specificity_ci, threshold=report.threshold, seconds=seconds)


class JobStatus(Record):
    """``status.json``: where the job stands. Times are UTC (core.clock.iso)."""

    state: State = FAILED  # a status without a state is a broken one
    message: str = ""
    model: str | None = None  # the registered version, once there is one
    summary: JobSummary | None = None
    pid: int | None = None  # the runner's process, for Cancel (signalled only while it holds the job lock)
    resume_refused: bool = False  # no run to resume, or one that diverged: Resume would fail the same way again
    queued_at: str | None = None
    started_at: str | None = Field(default=None, validation_alias=AliasChoices("started_at", "running_at"))
    finished_at: str | None = None
    updated: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


def read_settings(folder: Path) -> JobSettings:
    return _read(JobSettings, folder / CONFIG_FILE)


def read_status(folder: Path) -> JobStatus:
    return _read(JobStatus, folder / STATUS_FILE)


def _read(kind, path: Path):
    try:
        return read_record(kind, path, f"{path.parent.name}/{path.name}")
    except (OSError, ValueError) as exc:  # the detail (a server path, a parser's words) goes to the log only
        logging.getLogger(__name__).warning("job record %s cannot be read: %s", path, exc)
        raise JobError(f"The {path.name} record of job {path.parent.name} is missing or damaged; the server log "
                       "says more.") from exc


def write_settings(folder: Path, settings: JobSettings) -> None:
    atomic_write_json(folder / CONFIG_FILE, settings.to_json())


def write_status(folder: Path, state: str, **fields) -> JobStatus:
    """Replace the status: the previous one's fields, updated by ``fields``; the time of the change stamped."""
    try:
        previous = read_status(folder).model_dump() if (folder / STATUS_FILE).exists() else {}
    except JobError:
        previous = {}  # a torn status (never written by us: writes are atomic) is simply replaced
    now = clock.iso()
    stamps = {QUEUED: "queued_at", RUNNING: "started_at"}.get(state, "finished_at")
    data = {**previous, **fields, "state": state, "updated": now}
    data[stamps] = fields.get(stamps) or previous.get(stamps) or now
    try:
        status = JobStatus.model_validate(data)
    except ValueError as exc:
        raise JobError(f"Job status for {folder.name} is not valid ({exc}).") from exc
    atomic_write_json(folder / STATUS_FILE, status.to_json())
    return status


@dataclass(frozen=True)
class Job:
    """One job as read from its folder: its settings and status, its progress events and log."""

    job_id: str
    folder: Path
    settings: JobSettings
    status: JobStatus

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def config(self) -> TrainConfig:
        return self.settings.config

    @property
    def is_active(self) -> bool:
        return self.status.is_active

    @property
    def model(self) -> str | None:
        return self.status.model

    @property
    def message(self) -> str:
        return self.status.message

    def events(self) -> list[ProgressEvent]:
        """Progress events so far, parsed as the file grows; a half-written last line (the runner is mid-write)
        is skipped (core.jobs.event_log)."""
        return read_events(self.folder / "events.jsonl")

    def log_tail(self, lines: int = 200) -> list[str]:
        return _text_of(self.folder / "log.txt").splitlines()[-lines:]


def _text_of(path: Path) -> str:
    """A job file's text, its last ``MAX_PROGRESS_BYTES`` from a whole line (the latest lines matter most);
    "" when it is missing or not a readable regular file: a folder or a FIFO where the events were took the
    Retrain page down, or hung it, for everyone (a review)."""
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            start = max(0, os.fstat(handle.fileno()).st_size - MAX_PROGRESS_BYTES)
            handle.seek(start)
            text = handle.read(MAX_PROGRESS_BYTES).decode(errors="replace")
    except OSError:
        return ""
    return text.partition("\n")[2] if start else text


def run_left_by(folder: Path) -> SavedRun | None:
    """The saved run the job in ``folder`` left behind, or None. A resume that ended before it took its run over
    (cancelled or killed while decoding) leaves the run with the job it resumed: followed back through such
    resumes, so the newest job still offers it and says it is kept."""
    seen: set[str] = set()
    while folder.name not in seen:
        seen.add(folder.name)
        run = saved_run_of_job(folder.name)
        if run is not None:
            return run
        try:
            resume_of = read_settings(folder).resume_of
        except (JobError, OSError, ValueError):  # pruned or damaged: nothing to follow
            return None
        if not resume_of or not JOB_FOLDER.match(resume_of):
            return None
        folder = folder.parent / resume_of
    return None


def version_registered_by(job: Job) -> ModelRecord | None:
    """The model record a dead job managed to register, found by the job id its training record carries, in the
    descriptions themselves: through the registry, one that could not be read just then settled a finished job
    as failed, for good, and offered a Resume that would register its run twice (a review)."""
    folder = job.settings.checkpoints or checkpoint_dir()
    try:
        descriptions = sorted(p for p in folder.glob("*.json") if p.name != REGISTRY_FILE)
    except OSError:  # the folder cannot be listed: nothing found there
        return None
    for path in descriptions:
        try:
            record = read_model_record(path)
        except (OSError, ValueError, TriageError):  # a damaged description is not this job's whole version
            continue
        if record.training and record.training.job_id == job.job_id and path.with_suffix(".pt").is_file():
            return record
    return None


def trace_registered(job: Job, registered: ModelRecord) -> str:
    """What a job killed after its version's files left undone, done by the job's settler (a review: such a version
    was settled as succeeded with no audit line, nor made its task's first default): the ``train`` line, marked as
    written at settling, unless it is there (killed after it), then the first-default rule, which does nothing when
    it was applied already. "" when done, else a sentence for the job's message."""
    from core.admin.audit import find_action, record_action
    from core.store.promotion import promote_first

    who = job.settings.started_by or "job"
    try:
        if not find_action(job.job_id, "train", until=("job.start", "job.resume")):
            training, report = registered.training, registered.report
            record_action("train", who, model=registered.name, task=registered.task, job=job.job_id, settled=True,
                          arch=registered.arch, image_size=registered.image_size,
                          epochs=len(training.history) if training else None,
                          **({"auc": report.auc, "sensitivity": report.sensitivity, "specificity": report.specificity,
                              "n": report.n} if report else {}))
        promote_first(registered.name, who=who, directory=job.settings.checkpoints)  # its task's first: at most once
    except TriageError as exc:
        logging.getLogger(__name__).warning("job %s: %s was registered but not recorded in full: %s", job.job_id,
                                            registered.name, exc)
        return f" It could not be recorded in full ({exc}); ask an administrator to check the audit log."
    return ""
