"""Background training jobs: one at a time, in their own process, readable by any page at any time.

A job is a folder ``JOBS/<job_id>/`` holding

- ``config.json``: the dataset folder, the :class:`~core.train.TrainConfig` and the checkpoints folder;
- ``status.json``: ``state`` (queued -> running -> succeeded | failed | cancelled), the new model's name
  and a message, always replaced atomically;
- ``events.jsonl``: every ``train()`` progress event as one JSON line, appended and flushed;
- ``log.txt``: the same story in sentences; ``runner.stderr``: anything unexpected, for an operator.

``JOBS/active.lock`` names the one job that may run and the pid of its process. It is created with
``O_EXCL``; a lock whose process is gone is stale and is recovered (the job is marked failed). Claiming and
recovering happen under a short file lock, so two Start clicks or two browser tabs cannot both win.
The job runs ``python -m core.job_runner JOB_DIR`` in a new session, so it outlives the page, the tab and
the Streamlit script run. Cancelling sends SIGTERM; the runner stops between training steps and saves
nothing. The registry is only written by ``train()`` itself, atomically, so a killed job cannot corrupt it.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock

from core.checkpoints import atomic_write_json
from core.data import discover
from core.errors import JobError
from core.registry import REPO_ROOT, checkpoint_dir
from core.train import TrainConfig

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING)
LOCK_FILE = "active.lock"
RUNNER_MODULE = "core.job_runner"
MAX_EPOCHS = 200
IMAGE_SIZE_RANGE = (32, 512)
MIN_FILMS = 20


class JobAlreadyRunning(JobError):
    """Another training job holds the one job slot."""


def jobs_dir() -> Path:
    """``$CXR_JOBS``, or ``jobs/`` beside the checkpoints folder."""
    configured = os.environ.get("CXR_JOBS")
    return Path(configured).resolve() if configured else checkpoint_dir().parent / "jobs"


@dataclass(frozen=True)
class Job:
    job_id: str
    folder: Path
    state: str
    config: dict
    status: dict = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def model(self) -> str | None:
        return self.status.get("model")

    @property
    def message(self) -> str:
        return self.status.get("message", "")

    def events(self) -> list[dict]:
        """Progress events so far; a half-written last line (the runner is mid-write) is skipped."""
        path = self.folder / "events.jsonl"
        if not path.exists():
            return []
        events = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def log_tail(self, lines: int = 200) -> list[str]:
        path = self.folder / "log.txt"
        return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def check_request(data_dir: str | Path, config: TrainConfig) -> TrainConfig:
    """Refuse settings that cannot train, before any process starts; returns the resolved config."""
    if not str(data_dir).strip():
        raise JobError("Enter the dataset folder: a folder with one sub-folder of films per class.")
    try:
        config = config.resolved()
    except ValueError as exc:
        raise JobError(f"{exc}.") from exc
    low, high = IMAGE_SIZE_RANGE
    if not 1 <= config.epochs <= MAX_EPOCHS:
        raise JobError(f"Epochs must be between 1 and {MAX_EPOCHS}; {config.epochs} was asked for.")
    if not low <= config.image_size <= high:
        raise JobError(f"Image size must be between {low} and {high} pixels; {config.image_size} was asked for.")
    if config.batch_size < 2:
        raise JobError("Batch size must be at least 2.")
    if config.max_films is not None and config.max_films < MIN_FILMS:
        raise JobError(f"Use at least {MIN_FILMS} films, or leave the film limit empty to use them all.")
    films = discover(Path(data_dir).expanduser())  # DatasetError says what is wrong with the folder
    if len(films) < MIN_FILMS:
        raise JobError(f"{data_dir} holds only {len(films)} films; training needs at least {MIN_FILMS}.")
    return config


def start_job(data_dir: str | Path, config: TrainConfig, name: str | None = None,
              directory: Path | None = None, root: Path | None = None) -> Job:
    """Check the request, claim the one job slot and start the runner; raises JobAlreadyRunning if taken."""
    config = check_request(data_dir, config)
    root = root or jobs_dir()
    root.mkdir(parents=True, exist_ok=True)
    with _claim_guard(root):
        running = _recover_or_get_active(root)
        if running is not None:
            raise JobAlreadyRunning(
                f"A training job is already running (job {running.job_id}). "
                "Wait for it to finish or cancel it, then start again."
            )
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        folder = root / job_id
        folder.mkdir()
        atomic_write_json(folder / "config.json", {
            "job_id": job_id, "data_dir": str(Path(data_dir).expanduser().resolve()), "name": name,
            "config": asdict(config), "checkpoints": str((directory or checkpoint_dir()).resolve()),
            "created": _now(),
        })
        write_status(folder, QUEUED, message="Waiting for the training process to start.")
        _write_lock_exclusive(root, {"job_id": job_id, "pid": os.getpid(), "role": "starter"})
        try:
            process = _spawn(folder)
        except OSError as exc:
            write_status(folder, FAILED, message=f"The training process could not be started ({exc}).")
            (root / LOCK_FILE).unlink(missing_ok=True)
            raise JobError(f"The training process could not be started ({exc}).") from exc
        atomic_write_json(root / LOCK_FILE, {"job_id": job_id, "pid": process.pid, "role": "runner"})
    # Reap the runner when it ends, so it never lingers as a zombie that looks alive.
    threading.Thread(target=process.wait, name=f"reap-{job_id}", daemon=True).start()
    return read_job(folder)


def _spawn(folder: Path) -> subprocess.Popen:
    # OpenMP threads that spin while waiting make a job sharing its CPUs with the dashboard up to 100x
    # slower (and its inference timing meaningless); passive waiting costs little when the machine is idle.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with open(folder / "runner.stderr", "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", RUNNER_MODULE, str(folder)], cwd=REPO_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,  # its own session: closing the tab or stopping the script leaves it running
        )


def read_job(folder: Path) -> Job:
    try:
        config = json.loads((folder / "config.json").read_text())
        status = json.loads((folder / "status.json").read_text())
    except (OSError, ValueError) as exc:
        raise JobError(f"Job folder {folder} cannot be read ({exc}).") from exc
    return Job(folder.name, folder, status.get("state", FAILED), config, status)


def list_jobs(root: Path | None = None, limit: int | None = None) -> list[Job]:
    """Jobs, newest first; unreadable folders are left out."""
    root = root or jobs_dir()
    active_job(root)  # recovers a stale lock, so a killed job is shown as failed, not running
    jobs = []
    folders = sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.exists() else []
    for folder in folders[:limit] if limit else folders:
        try:
            jobs.append(read_job(folder))
        except JobError:
            continue
    return jobs


def active_job(root: Path | None = None) -> Job | None:
    """The running (or starting) job, or None; a stale lock is recovered on the way."""
    root = root or jobs_dir()
    if not (root / LOCK_FILE).exists():
        return None
    with _claim_guard(root):
        job = _recover_or_get_active(root)
    return job if job is not None and job.is_active else None


def cancel_job(job_id: str, root: Path | None = None) -> None:
    """Ask the job to stop: a marker file (read before training starts) plus SIGTERM to its process."""
    root = root or jobs_dir()
    folder = root / job_id
    job = read_job(folder)
    if not job.is_active:
        raise JobError(f"Job {job_id} is not running ({job.state}); there is nothing to cancel.")
    (folder / "cancel").write_text(_now())
    lock = _read_lock(root)
    if lock and lock.get("job_id") == job_id and lock.get("role") == "runner" and _runner_alive(lock):
        try:
            os.kill(int(lock["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended meanwhile; its own status stands


def write_status(folder: Path, state: str, **fields) -> None:
    previous = {}
    if (folder / "status.json").exists():
        try:
            previous = json.loads((folder / "status.json").read_text())
        except (OSError, ValueError):
            previous = {}
    status = {**previous, **fields, "state": state, "updated": _now()}
    status.setdefault(f"{state}_at", _now())
    atomic_write_json(folder / "status.json", status)


def _recover_or_get_active(root: Path) -> Job | None:
    """Call under the claim guard. Returns the active job, or None after clearing a stale lock."""
    lock = _read_lock(root)
    if lock is None:
        return None
    job_id = str(lock.get("job_id") or "")
    folder = root / job_id if job_id else None  # an empty or torn lock names no job: it is simply stale
    alive = _runner_alive(lock) if lock.get("role") == "runner" else _pid_alive(int(lock.get("pid", 0) or 0))
    try:
        job = read_job(folder) if folder is not None and folder.is_dir() else None
    except JobError:
        job = None
    if alive and job is not None:
        return job
    if job is not None and job.is_active:
        registered = _registered_by(job_id, folder)
        write_status(folder, SUCCEEDED if registered else FAILED, model=registered, message=(
            f"The training process stopped unexpectedly after registering {registered}; that version is complete."
            if registered else
            "The training process stopped unexpectedly (it was killed or the server restarted). "
            "Nothing was registered; the existing models and the default are unchanged."))
    (root / LOCK_FILE).unlink(missing_ok=True)
    return None


def _registered_by(job_id: str, folder: Path) -> str | None:
    """The model a dead job managed to register, found by the job id its metadata carries."""
    from core.registry import list_models

    try:
        directory = Path(json.loads((folder / "config.json").read_text())["checkpoints"])
        entries, _ = list_models(directory)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return next((e.name for e in entries if e.metadata.get("training", {}).get("job_id") == job_id), None)


def release_lock(root: Path, job_id: str) -> None:
    """Called by the runner as it ends: remove the lock only if it is still this job's."""
    with _claim_guard(root):
        lock = _read_lock(root)
        if lock and lock.get("job_id") == job_id:
            (root / LOCK_FILE).unlink(missing_ok=True)


def _claim_guard(root: Path) -> FileLock:
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / ".claim.lock"), timeout=10)


def _write_lock_exclusive(root: Path, content: dict) -> None:
    try:
        fd = os.open(root / LOCK_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise JobAlreadyRunning("A training job is already starting. Wait a moment and look again.") from exc
    with os.fdopen(fd, "w") as handle:
        json.dump(content, handle)


def _read_lock(root: Path) -> dict | None:
    try:
        return json.loads((root / LOCK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"job_id": "", "pid": 0, "role": "unreadable"}  # a torn lock is treated as stale


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runner_alive(lock: dict) -> bool:
    """The pid is alive and, where /proc exists, is still our runner for this job (not a reused pid, not a zombie)."""
    pid = int(lock.get("pid", 0))
    if not _pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():
        return True
    try:
        text = cmdline.read_bytes()
    except OSError:
        return False
    return RUNNER_MODULE.encode() in text and str(lock.get("job_id", "")).encode() in text


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

