"""Every number a person can choose, with its allowed range, and the fixed sizes the product runs with.

The CLI, the job starter, the Retrain page and :mod:`core.config` (which reads the environment) all take their
limits from the :class:`Limit` objects here, so a value one of them accepts the others accept too. Nothing here
reads the environment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import SettingOutOfRange


@dataclass(frozen=True)
class Limit:
    """An allowed range for one number a person can choose; ``check`` says in words what is wrong."""

    label: str
    low: float
    high: float | None = None
    unit: str = ""

    def check(self, value: float, variable: str = "") -> float:
        """``value`` when allowed; else SettingOutOfRange in words, after ``variable`` (its setting's name) if given."""
        if not _within(value, self.low, self.high):
            unit = f" {self.unit}" if self.unit else ""
            allowed = (f"between {_number(self.low)} and {_number(self.high)}{unit}" if self.high is not None
                       else f"at least {_number(self.low)}{unit}")
            named = f"{variable}: " if variable else ""
            raise SettingOutOfRange(f"{named}{self.label} must be {allowed}; {value} was asked for.")
        return value


def _within(value: float | None, low: float, high: float | None) -> bool:
    """``value`` is a finite number in [low, high]: NaN compares False with everything, so it is refused here
    explicitly, as are infinities and integers too large for a float."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(number) and low <= number and (high is None or number <= high)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# Training requests: the CLI, background jobs and the Retrain page check these same limits.
EPOCHS = Limit("Epochs", 1, 200)
IMAGE_SIZE = Limit("Image size", 32, 512, "pixels")
BATCH_SIZE = Limit("Batch size", 2, 1024)
TARGET_SENSITIVITY = Limit("The sensitivity target", 0.5, 0.999)
MIN_FILMS = Limit("The number of films", 20, None)  # a smaller set cannot hold out a useful validation part
PATIENCE = Limit("Patience", 1, 100, "epochs")
LEARNING_RATE = Limit("The learning rate", 1e-6, 1.0)
SEED = Limit("A seed", 0, 2**32 - 1)  # what NumPy and PyTorch both take, with room for per-process offsets

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_TARGET_SENSITIVITY = 0.95
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_PATIENCE = 4
# The operating point of a model with several abnormal classes (core.training.operating_point): each class
# must reach the sensitivity target on validation with this many of its films to spare.
CLASS_SPARE_FILMS = 1
# The chosen threshold is the score of one validation film; it is stored this much below that score (at most
# half-way to the next lower validation score, so no validation film changes side). The same film scored again
# elsewhere (another memory layout, thread count or machine) differs by about 1e-7 and would otherwise fall on
# the other side of its own threshold, one film off the stored figures (measured on two shipped models).
THRESHOLD_MARGIN = 1e-6

# Where and at what precision a model trains or runs (core/models/device.py). "auto": CUDA when present;
# bf16 autocast for training where the hardware has it (the stored threshold is always chosen in fp32).
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
HOLDOUTS = ("kermany-batch",)  # named rules of core.training.holdout (another batch kept out of training)
# Inference batches (validation, evaluate, film features; core.models.device.inference_batch_size). A GPU
# wants large batches. On a CPU with glibc's allocator as it comes, a film ran 1.2-1.3x faster through
# ResNet-18 (fp32 and bf16), 1.8x through the 5-layer CNN and 2.6-3.8x through EfficientNet-Lite0
# (classifier and film features) in batches of 6 than of 128 (bench/inference_batch.py, measurements): mostly
# page faults, not the caches as first thought (glibc hands every freed block over 32 MB back to the kernel).
# A training process keeps freed memory (core.models.host_memory); there 8-64 films a batch run alike or
# faster (ResNet-18 in bf16 9.1 ms a film at 32 against 10.0 at 6; only EfficientNet-Lite0 at 128 still slows),
# so it validates every epoch at its training batch (core.training.loop); the dashboard and `evaluate` keep
# their memory bounded and run 6. The MLP and logistic regression take a tenth of a
# millisecond either way. A lone film takes other kernels.
INFERENCE_BATCH_SIZE = {"cpu": 6, "cuda": 512}

# Decoded training films shared across runs (core/films/decode_cache.py): patient images, kept outside the
# code tree, capped (2 GiB holds the 5216 Kermany training films at 224 px about eight times over).
DECODE_CACHE_MAX_BYTES = 2 * 2**30
DECODE_CACHE_SIZE = Limit("The decode cache size", 0, None, "bytes")
DECODE_CACHE_OFF = ("off", "none", "no", "false", "0")  # CXR_DECODE_CACHE=off: decode every run


# One upload batch (core.serving.batch_limits): enough for a morning's worklist, small enough that one
# session cannot hold the shared CPU (and memory) for minutes while others wait.
# past 1,000 films a batch's results (~1 MB each, below) outgrow what one session may keep (a resource review)
BATCH_FILMS = Limit("The number of films in one batch", 1, 1_000)
BATCH_MEGABYTES = Limit("The size of one batch", 1, 100_000, "MB")
# Uploads the server holds in memory for all browser sessions together (dashboard.upload_store).
UPLOADS_MEGABYTES = Limit("The uploads held for all sessions", 1, 1_000_000, "MB")


# How long an admin sign-in lasts (core.access), and the words CXR_LOCAL_ADMIN understands.
ADMIN_SESSION_MINUTES = Limit("An admin sign-in", 1, 24 * 60, "minutes")
SWITCH_ON, SWITCH_OFF = ("on", "yes", "true", "1"), ("off", "no", "false", "0")


# DICOM decoding (core.films.decode_pool): a worker process per film in flight, each with an address-space
# limit and a time limit that grows with the film's size, so a bomb costs bounded memory and time.
DECODE_MEMORY_MB = Limit("The decoding memory limit", 256, 65536, "MB")
DECODE_SECONDS = Limit("The decoding time limit", 0.5, 600, "seconds")
DECODE_SECONDS_PER_MP = Limit("The decoding time per megapixel", 0, 60, "seconds")
DECODE_WORKERS = Limit("The number of decoding workers", 1, 64)


# Decoded films one browser session keeps for Grad-CAM (a 4300 x 4300 film is 74 MB as float32).
SESSION_FILM_CACHE_BYTES = 256 * 2**20
# A film shown in the app is at most this many pixels a side; the model sees its own input size.
DISPLAY_SIDE = 1024
# One browser session's triage results (~1 MB each: the display copy; at least a whole batch's, dashboard.state)
# and Grad-CAM heat maps (~0.1 MB each).
SESSION_RESULT_CACHE_BYTES = 128 * 2**20
RESULT_OVERHEAD = 4096  # a result's reading and details, counted beside its display copy
RESULT_BYTES = DISPLAY_SIDE**2 + RESULT_OVERHEAD  # one result at most
SESSION_HEAT_MAP_CACHE_BYTES = 32 * 2**20
# All sessions' caches together (each session's three above, 416 MB at the default batch of 50 films and more for
# larger batches, and its kept batch, dashboard.kept_batch, up to a batch's megabytes): past this, a session keeps
# less and computes again.
ALL_SESSION_CACHES_BYTES = 2 * 2**30


# Administration (core.store.promotion, core.admin.audit, core.jobs). The shared COVID set's validation holds
# 13-15 films in its two smaller classes, below the global floor of 20: its task has a floor of its own.
PROMOTION_MIN_FILMS = Limit("The promotion floor (validation films per class)", 1, None)
PROMOTION_MIN_SENSITIVITY = Limit("The promotion floor's sensitivity", 0.5, 0.999)
JOB_TIME_LIMIT = Limit("The job time limit", 0.01, None, "minutes")
JOB_MAX_AGE = Limit("The age at which job folders are pruned", 0, None, "days")
MIN_FILMS_BY_TASK = {"covid": 12}  # core.tasks names
