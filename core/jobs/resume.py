"""Resuming a job that ended without finishing: its process died, the app or the machine restarted, it hit
its time limit or was cancelled, after at least one epoch whose state was saved (core.training.resume).

Resuming starts a new job with the same dataset folder, settings, model name and registry, which continues
the saved run from its last finished epoch; it is written to the audit log as ``job.resume`` (with the job
it resumes) by whoever asked. Who may resume is the page's decision, as for Start and Cancel.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import FolderNotAllowed, JobError
from core.films.manifest import find_manifest, shipped_manifests
from core.films.roots import folder_label
from core.jobs.jobs import SUCCEEDED, Job, jobs_dir, read_job, start_job
from core.jobs.records import JOB_FOLDER, run_left_by
from core.training.saved_runs import SavedRun


def resumable_run(job: Job) -> SavedRun | None:
    """The saved run an unfinished job left behind, or None (still running, succeeded, or nothing saved). A
    resume that ended before it took the run over (cancelled while decoding, say) leaves the run with the job it
    resumed: followed back through such resumes, so the newest job still offers it."""
    if job.is_active or job.state == SUCCEEDED:
        return None
    return run_left_by(job.folder)


def resume_job(job_id: str, root: Path | None = None, *, who: str = "cli") -> Job:
    """Start a new job that continues ``job_id``'s interrupted run; JobAlreadyRunning when the slot is taken,
    JobError when that job has nothing to resume."""
    root = root or jobs_dir()
    if not JOB_FOLDER.match(job_id):  # an id, never a path
        raise JobError(f"There is no job {job_id!r}.")
    job = read_job(root / job_id)
    run = resumable_run(job)
    if run is None:
        raise JobError(f"Job {job_id} has nothing to resume ({job.state}): "
                       + ("it is still running." if job.is_active else "no finished epoch of it is saved."))
    _check_source(job)
    return start_job(job.settings.data_dir, job.config, job.settings.name, job.settings.checkpoints, root, who=who,
                     resume_of=job_id)


def _check_source(job: Job) -> None:
    """A job trains only a shipped manifest or a folder inside a data root (the Retrain page's choices): one whose
    root an administrator has removed since is not trained again (JobError; DataRootsUnreadable as it is)."""
    source = job.settings.data_dir
    if find_manifest(source) in shipped_manifests().values():
        return
    try:
        folder_label(source)
    except FolderNotAllowed:
        raise JobError(f"Job {job.job_id} trained on a folder that is gone or no longer inside a data root (an "
                       "administrator may have changed the data roots), so it cannot resume. Ask an administrator to "
                       "restore the folder or its root, or start a new job on a folder inside a data root.") from None
