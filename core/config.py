"""Every setting in one place: its default, its allowed range and the environment variable that overrides it.

The environment is read here and nowhere else in ``core/`` or ``dashboard/``: :func:`settings` reads it once
per process (``reload`` re-reads it, for tests), and :func:`job_environment` is the one way an environment is
handed on to a child process. Allowed ranges and fixed sizes live in :mod:`core.limits`.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core.errors import SettingOutOfRange
from core.limits import (
    ADMIN_SESSION_MINUTES, BATCH_FILMS, BATCH_MEGABYTES, DECODE_CACHE_MAX_BYTES, DECODE_CACHE_OFF,
    DECODE_CACHE_SIZE, DECODE_MEMORY_MB, DECODE_SECONDS, DECODE_SECONDS_PER_MP, DECODE_WORKERS, JOB_MAX_AGE,
    JOB_TIME_LIMIT, Limit, MIN_FILMS_BY_TASK, PROMOTION_MIN_FILMS, PROMOTION_MIN_SENSITIVITY, SWITCH_OFF,
    SWITCH_ON, UPLOADS_MEGABYTES,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Where things live, each overridable by the environment variable named in ``ENVIRONMENT``."""

    checkpoints: Path  # the model registry
    detector: Path  # the shipped chest-film detector (belongs to the app, not to one registry)
    jobs: Path  # background training jobs
    data: Path  # the real films beside the checkout
    training_data: Path  # the Retrain page's suggested dataset
    evaluation_folder: str  # the Compare page's suggested folder ("" when there is none)
    job_omp_wait_policy: str  # OpenMP waiting of a training job that shares the CPU with the app
    decode_cache: Path | None  # decoded films shared across runs; None when switched off
    decode_cache_max_bytes: int  # the decode cache is pruned, least recently used first, to this size
    data_roots_file: Path | None = None  # the admin's list of extra data roots (TOML or JSON; core.films.roots)
    batch_max_films: int = 50  # films one upload batch may hold (core.serving.batch_limits)
    batch_max_mb: int = 250  # megabytes one upload batch may hold
    uploads_max_mb: int = 2048  # megabytes of uploads the server holds for all browser sessions at once
    # Site-trained models and the site's default pointers, outside the code tree (core.store.registry); the
    # shipped models stay in ``checkpoints`` and are only written by ``train --shipped`` (make models).
    models: Path = Path.home() / ".local" / "share" / "cxr-triage" / "models"
    # Administration (core.admin, core.store.promotion, core.jobs): the audit log, the floor a version must
    # clear to become a task's default, and how long a job may run and its folder be kept.
    audit_log: Path = Path.home() / ".local" / "share" / "cxr-triage" / "audit.jsonl"
    promotion_min_films: int = 20  # validation films of EACH class a default needs, unless its task says otherwise
    promotion_min_films_by_task: tuple[tuple[str, int], ...] = ()  # (task, minimum) pairs
    promotion_min_sensitivity: float = 0.95  # what a default's operating point must promise and reach
    job_time_limit_minutes: float = 12 * 60.0  # a training job is stopped after this long
    job_max_age_days: float = 30.0  # finished job folders older than this are pruned; 0 keeps them
    # Who administers (core.access): local sessions unless switched off; others sign in with the passphrase
    # whose scrypt hash is set here, or as a listed account through the identity provider.
    local_admin: bool | None = None  # None: on until a sign-in works (dashboard.components.access decides)
    admin_passphrase_hash: str = ""
    admin_accounts: tuple[str, ...] = ()  # e-mail addresses, lower case
    admin_session_minutes: int = 30  # an admin sign-in lasts this long
    # DICOM decoding runs in worker processes (core.films.decode_pool) with these limits per film.
    decode_memory_mb: int = 1024  # address space a worker may add to what it holds idle
    decode_seconds: float = 5.0  # wall-clock time to read a film's header, and again to decode its pixels ...
    decode_workers: int = 2  # films decoded at once; more wait their turn
    decode_seconds_per_megapixel: float = 0.5  # ... plus this per megapixel (lossless JPEG 2000 ~0.4 s on 2 cores)


ENVIRONMENT = {
    "checkpoints": "CXR_CHECKPOINTS", "detector": "CXR_DETECTOR_DIR", "jobs": "CXR_JOBS", "data": "CXR_DATA",
    "training_data": "CXR_DATA_DIR", "evaluation_folder": "CXR_EVAL_DIR", "job_omp_wait_policy": "OMP_WAIT_POLICY",
    "decode_cache": "CXR_DECODE_CACHE", "decode_cache_max_bytes": "CXR_DECODE_CACHE_MAX_BYTES",
    "data_roots_file": "CXR_DATA_ROOTS", "batch_max_films": "CXR_BATCH_MAX_FILMS", "batch_max_mb": "CXR_BATCH_MAX_MB",
    "uploads_max_mb": "CXR_UPLOADS_MAX_MB", "models": "CXR_MODELS", "local_admin": "CXR_LOCAL_ADMIN",
    "admin_passphrase_hash": "CXR_ADMIN_PASSPHRASE_HASH", "admin_accounts": "CXR_ADMIN_ACCOUNTS",
    "admin_session_minutes": "CXR_ADMIN_SESSION_MINUTES", "audit_log": "CXR_AUDIT_LOG",
    "promotion_min_films": "CXR_PROMOTION_MIN_FILMS",
    "promotion_min_films_by_task": "CXR_PROMOTION_MIN_FILMS_BY_TASK",
    "promotion_min_sensitivity": "CXR_PROMOTION_MIN_SENSITIVITY", "job_time_limit_minutes": "CXR_JOB_TIME_LIMIT",
    "job_max_age_days": "CXR_JOB_MAX_AGE_DAYS", "decode_memory_mb": "CXR_DECODE_MEMORY_MB",
    "decode_seconds": "CXR_DECODE_SECONDS", "decode_workers": "CXR_DECODE_WORKERS",
    "decode_seconds_per_megapixel": "CXR_DECODE_SECONDS_PER_MP",
}

_current: Settings | None = None


def _read(environ: Mapping[str, str]) -> Settings:
    try:
        return _read_settings(environ)
    except (RuntimeError, OSError) as exc:  # Path.resolve: RuntimeError in Python 3.11 and 3.12, ELOOP after
        if "Symlink loop" not in str(exc) and getattr(exc, "errno", None) != errno.ELOOP:
            raise
        raise SettingOutOfRange(  # no path in words: the variables are named instead (a review)
            "A folder or file set by CXR_CHECKPOINTS, CXR_MODELS, CXR_JOBS, CXR_DECODE_CACHE or CXR_AUDIT_LOG (or its "
            "default in your home folder) goes round a loop of symbolic links, so it cannot be used. Remove the "
            "loop, or set the variable to another folder.") from None


def _read_settings(environ: Mapping[str, str]) -> Settings:
    def given(field: str) -> str | None:
        return environ.get(ENVIRONMENT[field]) or None

    checkpoints = Path(given("checkpoints") or REPO_ROOT / "checkpoints").resolve()
    jobs = given("jobs")
    models = _models_folder(given("models"), environ, checkpoints)
    data = Path(given("data") or REPO_ROOT.parent / "shared" / "data")
    films = data / "films"
    return Settings(
        checkpoints=checkpoints,
        detector=Path(given("detector") or REPO_ROOT / "checkpoints" / "detector"),
        jobs=Path(jobs).resolve() if jobs else models.parent / "jobs",  # beside the site's models, not in the code
        data=data,
        training_data=Path(given("training_data") or data / "kermany-224" / "train"),
        evaluation_folder=given("evaluation_folder") or (str(films) if films.is_dir() else ""),
        # Spinning OpenMP threads make a job sharing its CPUs with the dashboard many times slower.
        job_omp_wait_policy=given("job_omp_wait_policy") or "PASSIVE",
        decode_cache=_decode_cache_folder(given("decode_cache"), environ),
        decode_cache_max_bytes=_number("decode_cache_max_bytes", given("decode_cache_max_bytes"), DECODE_CACHE_SIZE,
                                       DECODE_CACHE_MAX_BYTES, whole=True),
        data_roots_file=_data_roots_file(given("data_roots_file"), environ),
        batch_max_films=_number("batch_max_films", given("batch_max_films"), BATCH_FILMS, 50, whole=True),
        batch_max_mb=_number("batch_max_mb", given("batch_max_mb"), BATCH_MEGABYTES, 250, whole=True),
        uploads_max_mb=_number("uploads_max_mb", given("uploads_max_mb"), UPLOADS_MEGABYTES, 2048, whole=True),
        models=models,
        local_admin=_switch("local_admin", given("local_admin"), default=None),
        admin_passphrase_hash=(given("admin_passphrase_hash") or "").strip(),
        admin_accounts=_accounts(given("admin_accounts")),
        admin_session_minutes=_number("admin_session_minutes", given("admin_session_minutes"), ADMIN_SESSION_MINUTES,
                                      30, whole=True),
        decode_memory_mb=_number("decode_memory_mb", given("decode_memory_mb"), DECODE_MEMORY_MB, 1024, whole=True),
        decode_seconds=_number("decode_seconds", given("decode_seconds"), DECODE_SECONDS, 5.0),
        decode_workers=_number("decode_workers", given("decode_workers"), DECODE_WORKERS, 2, whole=True),
        decode_seconds_per_megapixel=_number("decode_seconds_per_megapixel", given("decode_seconds_per_megapixel"),
                                             DECODE_SECONDS_PER_MP, 0.5),
        **_administration(given, environ),
    )


def _number(field: str, given: str | None, limit: Limit, default: float, whole: bool = False) -> float:
    """One numeric setting: ``default`` when unset, else the given text as a number inside ``limit``."""
    try:
        value = (int(given) if whole else float(given)) if given else default
        if value != value:  # NaN passes every comparison
            raise ValueError(given)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        unit = f" of {limit.unit}" if limit.unit else ""
        raise SettingOutOfRange(f"{ENVIRONMENT[field]} must be {kind}{unit}; {given!r} was given.") from None
    return (int if whole else float)(limit.check(value, ENVIRONMENT[field]))  # named: the label does not say which


def _user_folder(environ: Mapping[str, str], variable: str, fallback: str) -> Path:
    """An XDG base folder (cache, config, data) of the user running us: never inside the code tree."""
    named = environ.get(variable) or ""
    return Path(named) if os.path.isabs(named) else Path.home() / fallback


def _decode_cache_folder(given: str | None, environ: Mapping[str, str]) -> Path | None:
    """The folder named, None when switched off, else the user's cache folder (XDG), never the code tree."""
    if given and given.strip().lower() in DECODE_CACHE_OFF:
        return None
    folder = (Path(given).expanduser() if given else
              _user_folder(environ, "XDG_CACHE_HOME", ".cache") / "cxr-triage" / "decoded").resolve()
    if folder == REPO_ROOT or REPO_ROOT in folder.parents:  # decoded films are patient images (XDG's too: a review)
        raise SettingOutOfRange(f"{ENVIRONMENT['decode_cache'] if given else 'XDG_CACHE_HOME'} must name a folder "
                                "outside the code tree (decoded films are patient images), or "
                                f"{ENVIRONMENT['decode_cache']} be 'off'.")
    return folder


def _data_roots_file(given: str | None, environ: Mapping[str, str]) -> Path:
    """The file named, else ``data-roots.toml`` in the user's config folder (XDG), never the code tree."""
    if given:
        return Path(given).expanduser()
    base = _user_folder(environ, "XDG_CONFIG_HOME", ".config")
    return base / "cxr-triage" / "data-roots.toml"


def _models_folder(given: str | None, environ: Mapping[str, str], shipped: Path) -> Path:
    """The site's models: the folder named, else the user's data folder (XDG), never the shipped folder."""
    if given:
        folder = Path(given).expanduser().resolve()
    else:
        base = _user_folder(environ, "XDG_DATA_HOME", ".local/share")
        folder = (base / "cxr-triage" / "models").resolve()
    if folder == shipped or shipped in folder.parents:
        raise SettingOutOfRange(f"{ENVIRONMENT['models']} must name a folder outside the shipped checkpoints "
                                "folder: site-trained models are kept apart from the shipped ones.")
    if folder.exists() and not folder.is_dir():  # else runs would be saved beside it, in its parent folder
        raise SettingOutOfRange(f"{ENVIRONMENT['models']} names a file, not a folder: name the folder that holds "
                                "(or will hold) this site's models.")
    return folder


def _accounts(given: str | None) -> tuple[str, ...]:
    """CXR_ADMIN_ACCOUNTS: e-mail addresses separated by commas or spaces, compared without case."""
    return tuple(sorted({account.lower() for account in (given or "").replace(",", " ").split()}))


def _switch(field: str, given: str | None, default: bool | None) -> bool | None:
    if given is None:
        return default
    if given.strip().lower() in SWITCH_ON + SWITCH_OFF:
        return given.strip().lower() in SWITCH_ON
    raise SettingOutOfRange(f"{ENVIRONMENT[field]} must be on or off; {given!r} was given.")


def trust_no_forwarding_headers() -> None:
    """Keep each connection's own peer address in the requests the app sees. Streamlit serves through uvicorn,
    which by default replaces a loopback peer's address with the last hop of its ``X-Forwarded-For``: behind a
    proxy on this machine that does not rewrite that header (one that sets only ``X-Real-IP``), a client would
    choose the address its sign-in attempts are counted under. core.access.policy reads the headers itself.
    Call before the server starts (dashboard/serve.py): uvicorn.Config reads it as Streamlit builds the server."""
    os.environ["FORWARDED_ALLOW_IPS"] = ""


def decode_worker_environment() -> dict[str, str]:
    """The environment a decoding worker starts with: ours, one thread per numeric library (a worker decodes
    one film; idle threads and per-thread malloc arenas would only eat into its memory limit), and this
    checkout importable whatever the working directory."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    single = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**os.environ, **single, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": path}


def settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    global _current
    if _current is None:
        _current = _read(os.environ)
    return _current


def reload(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings again (tests change the environment between cases)."""
    global _current
    _current = _read(os.environ if environ is None else environ)
    return _current


def job_environment() -> dict[str, str]:
    """The environment a background training process starts with: ours, with its OpenMP policy set."""
    return {**os.environ, ENVIRONMENT["job_omp_wait_policy"]: settings().job_omp_wait_policy}


@dataclass(frozen=True)
class DistributedEnvironment:
    """This process's place in a ``torchrun`` launch (a plain run is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    is_distributed = property(lambda self: self.world_size > 1)
    is_main = property(lambda self: self.rank == 0)


def distributed_environment(environ: Mapping[str, str] | None = None) -> DistributedEnvironment:
    """RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE as torchrun sets them (read fresh each call)."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        try:
            return int(environ.get(name) or default)
        except ValueError:
            raise SettingOutOfRange(f"{name} must be a whole number; {environ.get(name)!r} was set.") from None

    world, rank, local = number("WORLD_SIZE", 1), number("RANK", 0), number("LOCAL_RANK", 0)
    local_world = number("LOCAL_WORLD_SIZE", world)
    missing = " and ".join(n for n in ("MASTER_ADDR", "MASTER_PORT") if world > 1 and not environ.get(n))
    if not (world >= 1 and 0 <= rank < world and 1 <= local_world <= world and 0 <= local < local_world) or missing:
        raise SettingOutOfRange(  # a process group waited half an hour for a rank that cannot come (a review)
            f"RANK {rank} of WORLD_SIZE {world} (LOCAL_RANK {local} of LOCAL_WORLD_SIZE {local_world}) is not a place "
            f"among training processes{' without ' + missing if missing else ''}; let torchrun set these.")
    return DistributedEnvironment(rank=rank, world_size=world, local_rank=local, local_world_size=local_world)


def _administration(given, environ: Mapping[str, str]) -> dict:
    def number(field: str, limit: Limit, default: float, whole: bool = False) -> float:
        return _number(field, given(field), limit, default, whole)

    variable, by_task = ENVIRONMENT['promotion_min_films_by_task'], dict(MIN_FILMS_BY_TASK)
    for item in filter(None, (part.strip() for part in (given("promotion_min_films_by_task") or "").split(","))):
        task, _, minimum = item.rpartition("=")
        if not task.strip() or not minimum.strip().isdigit():
            raise SettingOutOfRange(f"{variable} must list task=number pairs separated by commas (e.g. "
                                    f"tuberculosis=30); {item!r} was given.")
        by_task[task.strip()] = int(PROMOTION_MIN_FILMS.check(int(minimum), variable))
    base = _user_folder(environ, "XDG_DATA_HOME", ".local/share")
    audit_log = Path(given("audit_log") or base / "cxr-triage" / "audit.jsonl").expanduser().resolve()
    if audit_log.parent == REPO_ROOT or REPO_ROOT in audit_log.parents:
        raise SettingOutOfRange(f"{ENVIRONMENT['audit_log']} must name a file outside the code tree.")
    return dict(audit_log=audit_log, promotion_min_films_by_task=tuple(sorted(by_task.items())),
                promotion_min_films=number("promotion_min_films", PROMOTION_MIN_FILMS, 20, whole=True),
                promotion_min_sensitivity=number("promotion_min_sensitivity", PROMOTION_MIN_SENSITIVITY, 0.95),
                job_time_limit_minutes=number("job_time_limit_minutes", JOB_TIME_LIMIT, 12 * 60.0),
                job_max_age_days=number("job_max_age_days", JOB_MAX_AGE, 30.0))
