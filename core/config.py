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


ENVIRONMENT = {
    "checkpoints": "CXR_CHECKPOINTS",
    "detector": "CXR_DETECTOR_DIR",
    "jobs": "CXR_JOBS",
    "data": "CXR_DATA",
    "training_data": "CXR_DATA_DIR",
    "evaluation_folder": "CXR_EVAL_DIR",
    "job_omp_wait_policy": "OMP_WAIT_POLICY",
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
    )


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


# Decoded films one browser session keeps for Grad-CAM (a 4300 x 4300 film is 74 MB as float32).
SESSION_FILM_CACHE_BYTES = 256 * 2**20
# A film shown in the app is at most this many pixels a side; the model sees its own input size.
DISPLAY_SIDE = 1024
