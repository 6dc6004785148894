"""Exceptions core raises. Each message says what is wrong and what a person can do about it.

Pages catch these at the edge and show ``st.error``; the CLI turns them into JSON and exit code 1.
"""
from core.wording import valid_text


class TriageError(Exception):
    """Base class: anything core refuses with a message meant for a person. ``details``: fields a script needs
    beside the words (the CLI prints them in its JSON error, e.g. the ``name`` of a version registered before
    its promotion was refused). ``command_step``: what to do that only the command line offers (another
    ``--device``), which the CLI adds to the words and a page, offering no such step, leaves out (a messages
    review: a clinician's film card ended "run on the CPU (--device cpu)")."""

    def __init__(self, *args, command_step: str = "", **details):  # a film or folder name that is not valid UTF-8
        super().__init__(*(valid_text(a) if isinstance(a, str) else a for a in args))  # is said escaped: a page
        self.details, self.command_step = details, command_step  # shows no raw one

    def on_the_command_line(self) -> str:
        """The words with the command line's own step, as the CLI says them."""
        return f"{self} {self.command_step}".strip()


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


class TrainingDiverged(TriageError):
    """The training loss became NaN or infinite: nothing is registered. Resuming would replay the same steps from
    the last saved epoch (same weights, batch order and seed) into the same divergence, so it is not offered."""

    lasting = True


class TrainingStopped(TriageError):
    """Another process of a torchrun launch failed (its own message says why): this one stops with it."""


class CalibrationError(TriageError):
    """A model cannot be calibrated as asked (no training record, bad target, films changed)."""


class DeviceUnavailable(TriageError):
    """The compute device asked for (e.g. ``--device cuda``) is not present on this machine."""


class TryAgainLater(TriageError):
    """A refusal that says nothing about the film or the request: the same may succeed in a moment (a GPU another
    job fills, a decoding process that did not start). The app keeps no result that carries one."""


class ServerBusy(TryAgainLater):
    """Other sessions' films fill every slot for reading a film now (core.serving.in_flight)."""


class DeviceOutOfMemory(TryAgainLater):
    """The GPU ran out of memory (batch too large, or another job holds the card)."""


class DecodingUnavailable(UnreadableImage, TryAgainLater):
    """DICOM films cannot be decoded right now (the decoding process did not start)."""


class DecodingTimedOut(UnreadableImage):
    """A DICOM film was stopped at its decoding time limit: damaged, hostile, or a healthy large film on a busy
    server. Refused like any unreadable film by the CLI and folder evaluations; the app keeps it as not read yet
    (no later click spends the limit again) until its reader asks for it to be read again."""


class FolderNotAllowed(TriageError):
    """A folder was asked for outside the configured data roots (or is not a folder inside one).

    The message is one fixed sentence whatever the reason, so an answer never tells an existing server
    folder from a missing one.
    """

    MESSAGE = ("That folder is not available: choose a data root and a folder inside it; "
               "an administrator adds data roots in the configuration.")
    # the command line has nothing to choose from (a messages review): how to name one there
    STEP = "On the command line, give it as ROOT/FOLDER (a data root's name, then a folder inside it) or as a path "\
           "inside a data root (data-roots.toml)."

    def __init__(self):
        super().__init__(self.MESSAGE, command_step=self.STEP)


class BatchTooLarge(TriageError):
    """An upload batch has more films, or more megabytes, than one batch may hold (core.config)."""


class DataRootsUnreadable(TriageError):
    """The administrator's list of data roots (core.config ``data_roots_file``) cannot be read."""


class InvalidModelName(TriageError, ValueError):
    """A model name outside ``[A-Za-z0-9._-]{1,64}`` (or starting with a dot): it could name a path elsewhere."""


class PromotionRefused(TriageError):
    """A version falls short of the promotion floor (too few validation films per class, or too low a
    sensitivity) and cannot become its task's default; the message says which."""


class AuditLogUnavailable(TriageError):
    """The audit log cannot be written, so an administrative action cannot be recorded."""


class EnsembleRefused(TriageError):
    """The named models cannot form one ensemble (too few, different classes or validation films, ...)."""


class ResumeRefused(TriageError):
    """There is no saved state to resume for these settings and films, or it cannot be used. ``reason``: why, in a
    few words a run's notes can carry ("cannot be read: ..."); the message when none is given."""

    def __init__(self, message: str, reason: str = "", lasting: bool = False):
        super().__init__(message)
        self.reason = reason or message
        self.lasting = lasting  # no run of these settings on these films: asking again gives the same answer


class CommandRefused(TriageError):
    """A command-line request that cannot be carried out as asked (its message says what to change)."""
