"""Saved training runs on disk, readable without torch: ``RUNS/<key>.json`` describes the state
``RUNS/<key>.pt`` that core.training.resume saves after every epoch (what the run is, how far it got, the
job that last trained it). ``RUNS`` is ``runs/`` beside the site models folder (``CXR_MODELS``,
core.config), like ``jobs/``: outside the code tree; folder 0700 and files 0600, since the weights come from
patient films. Jobs and pages ask here whether a job left a run to resume; states untouched for
``CXR_JOB_MAX_AGE_DAYS`` are pruned, as job folders are.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any, BinaryIO, Callable, Iterator

from core import clock
from core.config import settings
from core.errors import ResumeRefused
from core.store.base import Record, read_record
from core.store.records import Fingerprint, TrainConfig
from core.training import run_lock

DAY = 24 * 60 * 60.0
RESUME_HOW = "Resume on the Retrain page, or the same train command with --resume"


class SavedRun(Record):
    """``RUNS/<key>.json``: an interrupted run, readable without loading its state."""

    key: str
    data_dir: str
    config: TrainConfig
    world_size: int = 1
    train: Fingerprint
    validation: Fingerprint
    content: str = ""  # the films' bytes hashed (core.training.data.content_digest); "" in older descriptions
    epoch: int = 0  # epochs finished and saved
    finished: bool = False  # training is over (last epoch, or stopped early): resuming only ships the model
    job_id: str | None = None  # the job that last trained it (None: the command line)
    saved: str | None = None  # UTC, core.clock.iso

    @property
    def where(self) -> str:
        return f"after epoch {self.epoch} of {self.config.epochs}"


def said(setting: str, value: Any) -> str:
    """A TrainConfig setting's value in words: unset is "no limit", not "None" (a CLI review: "had max films None")."""
    return {"max_films": "no limit", "split_seed": "as --seed"}.get(setting, "none") if value is None else str(value)


def cancelled_message(saved_epoch: int, epochs: int) -> str:
    """What TrainingCancelled says: whether the run can be resumed, and from where."""
    if not saved_epoch:
        return "Training was cancelled; nothing was saved."
    return (f"Training was cancelled; no model was registered. Its state after epoch {saved_epoch} of {epochs} "
            f"is kept, so it can be resumed ({RESUME_HOW}).")


def runs_dir() -> Path:
    """``runs/`` beside the site models folder (``CXR_MODELS``): outside the code tree."""
    return settings().models.parent / "runs"


def saved_runs(folder: Path | None = None) -> list[SavedRun]:
    """Every run with a saved state, newest first; unreadable descriptions are left out."""
    folder = folder or runs_dir()
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            run = read_record(SavedRun, path)
        except (OSError, ValueError):
            continue
        if (folder / f"{run.key}.pt").is_file() and path.stem == run.key:
            runs.append(run)
    return sorted(runs, key=lambda run: run.saved or "", reverse=True)


def saved_run_like(data_dir: str | Path, config: TrainConfig, folder: Path | None = None) -> SavedRun | None:
    """The interrupted run a new one of ``config`` on ``data_dir`` by one process would replace after its first
    epoch (same resolved settings, same folder), or None. The films are not listed: if they changed since, the new
    run is another one and replaces nothing (so callers say "would", not "will")."""
    from core.films.manifest import find_manifest

    source = str((find_manifest(data_dir) or Path(data_dir).expanduser()).resolve())
    resolved = config.resolved()
    return next((run for run in saved_runs(folder)
                 if run.data_dir == source and run.config == resolved and run.world_size == 1), None)


def saved_run_of_job(job_id: str, folder: Path | None = None) -> SavedRun | None:
    """The saved state a job's run left behind (the job that last trained it), or None."""
    return next((run for run in saved_runs(folder) if run.job_id == job_id), None)


def discard_saved_run(key: str, folder: Path | None = None) -> None:
    """Delete the saved state and description of run ``key``: its model is registered (by the run itself, or by
    a job killed after registering it, before it forgot the run: resumed, it would register it again)."""
    folder = folder or runs_dir()
    (folder / f"{key}.pt").unlink(missing_ok=True)
    (folder / f"{key}.json").unlink(missing_ok=True)


def kept_note(run: SavedRun | None) -> str:
    """A sentence for a job that stopped unfinished with ``run`` left behind (core.jobs.records.run_left_by):
    that it can be resumed, and from where ("" when it left no state)."""
    return f" Its state {run.where} is kept: an administrator can resume it (Resume)." if run else ""


def prune_saved_runs(folder: Path | None = None, max_age_days: float | None = None,
                     now: float | None = None) -> list[str]:
    """Remove states untouched for ``max_age_days`` (default: the jobs' CXR_JOB_MAX_AGE_DAYS; 0 keeps them),
    and temporaries a killed writer left behind more than a day ago; the names removed."""
    folder = folder or runs_dir()
    days = settings().job_max_age_days if max_age_days is None else max_age_days
    if not folder.is_dir():
        return []
    now = clock.seconds() if now is None else now
    removed, found = [], {}
    for path in sorted(folder.iterdir()):
        try:  # a link is judged by its own age, never its target's (unlinking it leaves the target alone)
            found[path] = path.lstat()
        except OSError:
            continue
    # a run's state and its description go together, by the newer: taking a run over rewrites only the description,
    # so its state, weeks old, was pruned under the job resuming it (a review)
    newest: dict[str, float] = {}
    for path, stat in found.items():
        if path.suffix in (".pt", ".json"):
            newest[path.stem] = max(newest.get(path.stem, 0.0), stat.st_mtime)
    for path, stat in found.items():
        temporary = path.name.startswith(".") and path.name.endswith(".tmp")
        limit = DAY if temporary else (days * DAY if days and path.suffix in (".pt", ".json") else None)
        age = stat.st_mtime if temporary else newest.get(path.stem, stat.st_mtime)
        if limit is not None and (S_ISREG(stat.st_mode) or S_ISLNK(stat.st_mode)) and age < now - limit:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def on_rank_0(hardware: Any, action: Callable[[], Any], default: Any = None, guard=None) -> Any:
    """``action()`` on rank 0 (inside ``guard``, a context manager), ``default`` on the others; its ResumeRefused
    is raised on every rank alike (a review: rank 0 raising alone left the others in the next collective, where
    they ended as "a fault in the program")."""
    result, refusal = default, None
    if hardware.is_main:
        try:
            with guard or nullcontext():
                result = action()
        except ResumeRefused as exc:
            refusal = exc
    if hardware.on_any(refusal is not None):
        raise refusal or ResumeRefused("The main training process (rank 0) could not use the runs folder beside the "
                                       "models folder; its message says why.")
    return result


def open_runs_folder(folder: Path, lock: Path) -> bool:
    """Rank 0 opening a run: states and locks left behind pruned, then the run's lock taken (False: another process
    holds it). ResumeRefused before anything trains when the folder cannot be written."""
    with runs_written():
        prune_saved_runs(folder)
        run_lock.prune_locks(folder)
        return run_lock.take(lock)


@contextmanager
def runs_written(saved_epoch: int | None = None, epochs: int = 0) -> Iterator[None]:
    """An OSError writing the runs folder (not writable, the disk full) as ResumeRefused saying what is kept and
    what to do. ``saved_epoch``: the epoch of the run's state on disk as it was being saved (0: none); None while
    the run is being opened."""
    try:
        yield
    except OSError as exc:
        why = f"The runs folder beside the models folder cannot be written ({exc.strerror or type(exc).__name__})"
        if saved_epoch is None:
            raise ResumeRefused(f"{why}: a run's state is saved there after every epoch, so nothing was trained. Make "
                                "room or make it writable, then start the training again.") from None
        if not saved_epoch:
            raise ResumeRefused(f"{why}; no epoch of this run is saved: once the folder can be written, start the "
                                "training again.") from None
        raise ResumeRefused(f"{why}; this run's state after epoch {saved_epoch} of {epochs} is kept: once the folder "
                            f"can be written, continue from there ({RESUME_HOW}).") from None


def write_private(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Whole or nothing, readable by its owner only (0600 in a 0700 folder): it derives from patient films."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def nothing_to_resume(identity, folder: Path) -> ResumeRefused:
    """Resuming ``identity`` (a core.training.resume.RunIdentity) found no state: say so, and what differs from
    the interrupted run of the same folder when there is one."""
    same_folder = [run for run in saved_runs(folder) if run.data_dir == identity.data_dir]
    if not same_folder or not identity.differences(same_folder[0]):
        return ResumeRefused("There is no interrupted run of these settings on these films to resume; "
                             "start a new run instead (without --resume).", lasting=True)
    other = same_folder[0]
    return ResumeRefused(
        f"There is no interrupted run of these settings on these films to resume. The interrupted run of this "
        f"folder ({other.where}) had {'; '.join(identity.differences(other))}: resume it with the same settings, "
        "or start a new run (without --resume).", lasting=True)
