"""Job folders do not pile up for ever: a finished job's folder is removed once its last change is older
than ``settings().job_max_age_days`` (0 keeps them). Readers prune as they list jobs, and starters as they
start one.

Only folders that are plainly ours are touched: named like a job id, holding a ``config.json``, not a
symbolic link. Never the job that holds the slot, never one whose status still says queued or running (a
dead one is settled by the next reader first, which counts as a change). A job's age is its status's last
change in UTC (``updated``, else ``finished_at``); an older status without either counts from its file's
modification time.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from core import clock
from core.config import settings
from core.errors import JobError
from core.jobs import lock
from core.jobs.records import CONFIG_FILE, JOB_FOLDER, STATUS_FILE, read_status

DAY = 24 * 60 * 60.0


def prune_old_jobs(root: Path, max_age_days: float | None = None, now: float | None = None) -> list[str]:
    """Remove finished job folders older than ``max_age_days`` (default: the setting); the ids removed."""
    days = settings().job_max_age_days if max_age_days is None else max_age_days
    if not days or not root.is_dir():
        return []
    cutoff = (clock.seconds() if now is None else now) - days * DAY
    holder = lock.held_by(root)
    removed = []
    for folder in sorted(root.iterdir()):
        if folder.name == holder or not _is_job_folder(folder):
            continue
        changed = _last_change(folder)
        if changed is not None and changed < cutoff:
            shutil.rmtree(folder, ignore_errors=True)  # another reader may be pruning the same folder
            removed.append(folder.name)
    return removed


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
