"""Every setting in one place: its default, its allowed range and the environment variable that overrides it.

The environment is read here and nowhere else in ``core/`` or ``dashboard/``: :func:`settings` reads it once
per process (``reload`` re-reads it, for tests), and :func:`job_environment` is the one way an environment is
handed on to a child process. The CLI, the job starter and the Retrain page all take their limits from the
:class:`Limit` objects below, so a value one of them accepts the others accept too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core.errors import SettingOutOfRange

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Limit:
    """An allowed range for one number a person can choose; ``check`` says in words what is wrong."""

    label: str
    low: float
    high: float | None = None
    unit: str = ""

    def check(self, value: float) -> float:
        if value is None or value < self.low or (self.high is not None and value > self.high):
            unit = f" {self.unit}" if self.unit else ""
            allowed = (f"between {_number(self.low)} and {_number(self.high)}{unit}" if self.high is not None
                       else f"at least {_number(self.low)}{unit}")
            raise SettingOutOfRange(f"{self.label} must be {allowed}; {value} was asked for.")
        return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# Training requests: the CLI, background jobs and the Retrain page check these same limits.
EPOCHS = Limit("Epochs", 1, 200)
IMAGE_SIZE = Limit("Image size", 32, 512, "pixels")
BATCH_SIZE = Limit("Batch size", 2, 1024)
TARGET_SENSITIVITY = Limit("The sensitivity target", 0.5, 0.999)
MIN_FILMS = Limit("The number of films", 20, None)  # a smaller set cannot hold out a useful validation part
PATIENCE = Limit("Patience", 1, 100, "epochs")

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_TARGET_SENSITIVITY = 0.95
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_PATIENCE = 4

# Where and at what precision a model trains or runs (core/models/device.py). "auto": CUDA when present;
# bf16 autocast for training where the hardware has it (the stored threshold is always chosen in fp32).
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
# Inference batches (validation, evaluate): no gradients are kept, so large batches cost little memory.
INFERENCE_BATCH_SIZE = {"cpu": 128, "cuda": 512}

# Decoded training films shared across runs (core/films/decode_cache.py): patient images, kept outside the
# code tree, capped (2 GiB holds the 5216 Kermany training films at 224 px about eight times over).
DECODE_CACHE_MAX_BYTES = 2 * 2**30
DECODE_CACHE_SIZE = Limit("The decode cache size", 0, None, "bytes")
DECODE_CACHE_OFF = ("off", "none", "no", "false", "0")  # CXR_DECODE_CACHE=off: decode every run


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


ENVIRONMENT = {
    "checkpoints": "CXR_CHECKPOINTS",
    "detector": "CXR_DETECTOR_DIR",
    "jobs": "CXR_JOBS",
    "data": "CXR_DATA",
    "training_data": "CXR_DATA_DIR",
    "evaluation_folder": "CXR_EVAL_DIR",
    "job_omp_wait_policy": "OMP_WAIT_POLICY",
    "decode_cache": "CXR_DECODE_CACHE",
    "decode_cache_max_bytes": "CXR_DECODE_CACHE_MAX_BYTES",
}

_current: Settings | None = None


def _read(environ: Mapping[str, str]) -> Settings:
    def given(field: str) -> str | None:
        return environ.get(ENVIRONMENT[field]) or None

    checkpoints = Path(given("checkpoints") or REPO_ROOT / "checkpoints").resolve()
    jobs = given("jobs")
    data = Path(given("data") or REPO_ROOT.parent / "shared" / "data")
    films = data / "films"
    return Settings(
        checkpoints=checkpoints,
        detector=Path(given("detector") or REPO_ROOT / "checkpoints" / "detector"),
        jobs=Path(jobs).resolve() if jobs else checkpoints.parent / "jobs",
        data=data,
        training_data=Path(given("training_data") or data / "kermany-224" / "train"),
        evaluation_folder=given("evaluation_folder") or (str(films) if films.is_dir() else ""),
        # Spinning OpenMP threads make a job sharing its CPUs with the dashboard many times slower.
        job_omp_wait_policy=given("job_omp_wait_policy") or "PASSIVE",
        decode_cache=_decode_cache_folder(given("decode_cache"), environ),
        decode_cache_max_bytes=_decode_cache_bytes(given("decode_cache_max_bytes")),
    )


def _decode_cache_folder(given: str | None, environ: Mapping[str, str]) -> Path | None:
    """The folder named, None when switched off, else the user's cache folder (XDG), never the code tree."""
    if given and given.strip().lower() in DECODE_CACHE_OFF:
        return None
    if given:
        return Path(given).expanduser().resolve()
    cache_home = environ.get("XDG_CACHE_HOME") or ""
    base = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "cxr-triage" / "decoded"


def _decode_cache_bytes(given: str | None) -> int:
    try:
        value = int(given) if given else DECODE_CACHE_MAX_BYTES
    except ValueError:
        raise SettingOutOfRange(f"CXR_DECODE_CACHE_MAX_BYTES must be a number of bytes; {given!r} was given.") from None
    return int(DECODE_CACHE_SIZE.check(value))


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

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_environment(environ: Mapping[str, str] | None = None) -> DistributedEnvironment:
    """RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE as torchrun sets them (read fresh each call)."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        try:
            return int(environ.get(name) or default)
        except ValueError:
            raise SettingOutOfRange(f"{name} must be a whole number; {environ.get(name)!r} was set.") from None

    world = number("WORLD_SIZE", 1)
    return DistributedEnvironment(rank=number("RANK", 0), world_size=world, local_rank=number("LOCAL_RANK", 0),
                                  local_world_size=number("LOCAL_WORLD_SIZE", world))


# Decoded films one browser session keeps for Grad-CAM (a 4300 x 4300 film is 74 MB as float32).
SESSION_FILM_CACHE_BYTES = 256 * 2**20
# A film shown in the app is at most this many pixels a side; the model sees its own input size.
DISPLAY_SIDE = 1024
