"""Exceptions core raises. Each message says what is wrong and what a person can do about it.

Pages catch these at the edge and show ``st.error``; the CLI turns them into JSON and exit code 1.
"""


class TriageError(Exception):
    """Base class: anything core refuses with a message meant for a person."""


class UnreadableImage(TriageError):
    """The file is not an image we can decode (empty, truncated, wrong format, too large)."""


class CheckpointError(TriageError):
    """A checkpoint is missing, corrupt, unsafe or does not match its metadata."""


class ModelNotFound(TriageError):
    """No registered model has the requested name."""


class DatasetError(TriageError):
    """A dataset folder is missing, empty or not a class-folder tree."""


class JobError(TriageError):
    """A background training job cannot be started, read or cancelled."""


class SettingOutOfRange(TriageError, ValueError):
    """A requested setting (epochs, image size, sensitivity target, ...) lies outside its allowed range."""


class TrainingCancelled(JobError):
    """Raised inside training when the caller asked to stop; nothing is written."""


class CalibrationError(TriageError):
    """A model cannot be calibrated as asked (no training record, bad target, films changed)."""


class DeviceUnavailable(TriageError):
    """The compute device asked for (e.g. ``--device cuda``) is not present on this machine."""


class DeviceOutOfMemory(TriageError):
    """The GPU ran out of memory (batch too large, or another job holds the card)."""
