"""Job folders do not pile up for ever: a finished job's folder is removed once its last change is older
than ``settings().job_max_age_days`` (0 keeps them). Readers prune as they list jobs, and starters as they
start one.

Every removal is written to the audit log first (who: ``system``), and nothing is removed where it cannot be.
Only folders that are plainly ours are touched: named like a job id, holding a ``config.json``, not a
symbolic link. Never the job that holds the slot, never one whose status still says queued or running (a
dead one is settled by the next reader first, which counts as a change). A job's age is its status's last
change in UTC (``updated``, else ``finished_at``); an older status without either counts from its file's
modification time.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from core import clock
from core.admin.audit import record_action
from core.config import settings
from core.errors import AuditLogUnavailable, JobError
from core.jobs import lock
from core.jobs.records import CONFIG_FILE, JOB_FOLDER, STATUS_FILE, read_status

DAY = 24 * 60 * 60.0
log = logging.getLogger(__name__)


def prune_old_jobs(root: Path, max_age_days: float | None = None, now: float | None = None) -> list[str]:
    """Remove finished job folders older than ``max_age_days`` (default: the setting); the ids removed."""
    days = settings().job_max_age_days if max_age_days is None else max_age_days
    if not days or not root.is_dir():
        return []
    cutoff = (clock.seconds() if now is None else now) - days * DAY
    holder = lock.held_by(root)
    old = [folder for folder in sorted(root.iterdir()) if folder.name != holder and _is_job_folder(folder)
           and (changed := _last_change(folder)) is not None and changed < cutoff]
    if not old:
        return []
    try:  # a clinician's page load may prune: the audit log says what went and by which rule (a review)
        record_action("job.prune", "system", jobs=[folder.name for folder in old], older_than_days=days)
    except AuditLogUnavailable:
        log.warning("old job folders were kept: the audit log, which must record their removal, cannot be written")
        return []
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)  # another reader may be pruning the same folder
    return [folder.name for folder in old]


def _is_job_folder(folder: Path) -> bool:
    return (JOB_FOLDER.match(folder.name) is not None and not folder.is_symlink() and folder.is_dir()
            and (folder / CONFIG_FILE).is_file())


def _last_change(folder: Path) -> float | None:
    """Seconds since the epoch of the job's last change; None for a job that may still be active."""
    try:
        status = read_status(folder)
    except JobError:
        status = None  # unreadable: its files' age decides
    if status is not None and status.is_active:
        return None
    stamp = clock.parse(status.updated or status.finished_at or "") if status is not None else None
    if stamp is not None:
        return stamp.timestamp()
    path = folder / STATUS_FILE if (folder / STATUS_FILE).exists() else folder / CONFIG_FILE
    try:
        return path.stat().st_mtime
    except OSError:
        return None
