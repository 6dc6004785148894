"""A model's description, typed: what ``NAME.json`` holds beside the weights in ``NAME.pt``.

Parsed and validated once, where the JSON is read (:func:`core.store.checkpoints.read_model_record`), and
written by one function (:func:`core.store.checkpoints.save_checkpoint`); everything else uses attributes. It
holds the device, precision and processes a model was trained with; several reports (internal validation,
out-of-batch, per source) and the run that measured lent out-of-batch figures; figures others measured on films
not held here; ensemble members; a per-model population check."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from core import limits
from core.errors import CheckpointError
from core.models.catalog import architecture_info
from core.store.base import Record, read_record, record_from_bytes
from core.store.reports import HeadlineFigures, OperatingPoint, Report
from core.tasks import task_name

FORMAT_VERSION = 1
POPULATION_CHECK_SINCE = "2026-11-30"  # versions created before this day were trained before the check existed
NO_POPULATION_CHECK = "No population check"  # starts the training note that says why a version has none


class TrainConfig(Record):
    """A training recipe: what the CLI, a background job and the Retrain page ask for, and what is stored."""

    arch: str = "resnet18"
    epochs: int = limits.DEFAULT_EPOCHS
    image_size: int | None = None  # None: the architecture's default
    batch_size: int = limits.DEFAULT_BATCH_SIZE
    lr: float | None = None  # None: 1e-3 from scratch, 3e-4 from ImageNet weights
    weight_decay: float = 1e-4
    augment: bool = True
    hflip: bool = False
    wide_framing: bool = False  # augmentation also varies framing widely (TrainingAugmentation.wide_framing)
    pretrained: bool = True
    val_fraction: float = limits.DEFAULT_VAL_FRACTION
    patience: int = limits.DEFAULT_PATIENCE
    seed: int = 0  # initial weights, batch order and augmentation
    split_seed: int | None = None  # the validation split; None: ``seed`` (ensemble members share one split)
    holdout: str | None = None  # a rule of core.training.holdout: another batch kept out for a second check
    target_sensitivity: float = limits.DEFAULT_TARGET_SENSITIVITY
    max_films: int | None = None  # a random subset keeping each class's share, for quick runs and tests
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present (core/models/device.py)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast where the hardware has it
    layout: Literal["auto", "contiguous"] = "auto"  # training's; contiguous: as before 2026-11-30 (README)

    def resolved(self) -> "TrainConfig":
        """Defaults filled in from the architecture, every number checked against its limit in core.config
        (SettingOutOfRange, a ValueError, says which). ``pretrained`` becomes whether training really starts
        from ImageNet weights: asked for, offered by the architecture, and its weights file present here (nothing
        is downloaded): the recorded config says what happened; from scratch gets the from-scratch rate."""
        info = architecture_info(self.arch)
        pretrained = self.pretrained and info.pretrainable and _imagenet_weights_present(info.name)
        resolved = self.model_copy(update={
            "image_size": info.default_image_size if self.image_size is None else self.image_size,
            "pretrained": pretrained, "lr": (3e-4 if pretrained else 1e-3) if self.lr is None else self.lr})
        limits.EPOCHS.check(resolved.epochs)
        limits.IMAGE_SIZE.check(resolved.image_size)
        limits.BATCH_SIZE.check(resolved.batch_size)
        limits.LEARNING_RATE.check(resolved.lr)
        limits.TARGET_SENSITIVITY.check(resolved.target_sensitivity)
        limits.PATIENCE.check(resolved.patience)
        for seed in (resolved.seed, resolved.split_seed):
            if seed is not None:
                limits.SEED.check(seed)
        if resolved.max_films is not None:
            limits.MIN_FILMS.check(resolved.max_films)
        return resolved


def _imagenet_weights_present(arch: str) -> bool:
    """The local ImageNet weights file of a pretrainable architecture exists (the builders' own look-ups, so
    both agree). Imported here, not above: records import without torch, and only a config that asks for
    ImageNet weights, on its way to training, pays for it."""
    from core.models.efficientnet_lite import VARIANTS, imagenet_weights_path
    from core.models.pretrained import resnet18_weights_path

    present = {"resnet18": lambda: resnet18_weights_path().is_file(),
               **{f"efficientnet_{v}": lambda v=v: imagenet_weights_path(v) is not None
                  for v in VARIANTS}}
    return present[arch]()  # a new pretrainable architecture must say here where its weights are


class EpochRecord(Record):
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float  # since the run started, at the end of this epoch's validation
    # Where this epoch's time went (None in runs from before they were recorded): its optimiser steps, and its
    # validation; what is left of the epoch (saving the run's state, progress events) is neither.
    steps_seconds: float | None = None
    validation_seconds: float | None = None


class TrainingRecord(Record):
    config: TrainConfig
    data_dir: str
    history: list[EpochRecord] = []
    best_epoch: int | None = None
    seconds: float | None = None
    notes: list[str] = []
    job_id: str | None = None
    run_id: str | None = None  # the run, across its resumes: a resume finds the version it registered already
    device: str = "cpu"  # what training ran on: "cpu" or "cuda"
    precision: str = "fp32"  # of training ("bf16" autocast or "fp32"); validation and the threshold are fp32
    world_size: int = 1  # training processes (torchrun)
    # Seconds after the last epoch per step (validation report, other-batch checks, population check; older: none)
    checks_seconds: dict[str, float] = {}


class Fingerprint(Record):
    """Identifies the films a model saw without copying them."""

    n: int
    class_counts: dict[str, int]
    sha256: str


class DataRecord(Record):
    train: Fingerprint
    validation: Fingerprint


def _trainable_size(size: int) -> int:
    """A network is never built at a size training refuses (an edited 1 or 60000 would fail or exhaust memory)."""
    if not limits.IMAGE_SIZE.low <= size <= limits.IMAGE_SIZE.high:
        raise ValueError(f"image_size must be {limits.IMAGE_SIZE.low} to {limits.IMAGE_SIZE.high} pixels")
    return size


class ModelArgs(Record):
    num_classes: int = Field(ge=1)
    image_size: int
    _size = field_validator("image_size")(_trainable_size)


class InputSpec(Record):
    channels: int = 1
    pixel_range: tuple[float, float] = (0.0, 1.0)
    image_size: int
    geometry: str = "whole film resized to a square (224-px 8-bit JPEG reference form first)"


class Calibration(Record):
    """Where a recalibrated version came from: same weights, a threshold for another sensitivity target, chosen
    on the model's own validation films or on a labelled folder of the site (older JSON: validation)."""

    from_model: str = Field(alias="from")
    previous_threshold: float | None = None
    previous_policy: str | None = None
    target_sensitivity: float
    source: Literal["validation", "site folder"] = "validation"  # the films the threshold was chosen on
    folder: str | None = None  # the site folder as a data-root label (root/relative), never a server path
    films: Fingerprint | None = None  # the site films: count, class counts (the model's names), sha256


class Member(Record):
    """One network of an ensemble, with its own architecture, input size and weights file."""

    arch: str
    image_size: int
    weights_file: str
    weights_sha256: str
    _size = field_validator("image_size")(_trainable_size)  # a review: a member's -7 failed every film at reading
    # its own training recipe and precision, so another ensemble can be checked to be a run of the same recipe
    # (core.training.holdout_run); None in ensembles registered before members carried them
    config: TrainConfig | None = None
    precision: str | None = None


class PopulationCheck(Record):
    """Is a film from the population this model was trained on? A Gaussian score on the films' ImageNet
    features (core.models.features) fitted on the model's own training films, with a threshold at a high
    percentile of its validation films; its tensors are ``file`` beside the weights (core.store.checkpoints)."""

    file: str = ""  # NAME.population.pt; filled in by save_checkpoint with its sha256
    sha256: str = ""
    population: str  # the training population in words, for the warning and the card
    sources: dict[str, int] = {}  # training films per source (e.g. kermany-224)
    fitted_on: int  # training films the score was fitted on (a seeded sample of them when many)
    components: int
    threshold: float
    quantile: float  # of the validation films' scores
    validation_films: int
    validation_warn_rate: float  # share of the validation films beyond the threshold (in-population warn rate)

    @model_validator(mode="after")
    def _usable(self) -> "PopulationCheck":
        """An edited NaN threshold would warn on no film at all (every comparison with NaN is false)."""
        if not math.isfinite(self.threshold):
            raise ValueError("the population check's threshold must be a number")
        return self


class HoldoutRun(Record):
    """Where a version's other-batch figures come from when its own weights were trained on that batch: another
    run of the same recipe, trained with the batch held out (``python -m core other-batch NAME --from RUN``). Its
    report (``other_reports["out-of-batch"]``) is read at that run's own threshold, chosen by the same rule and
    target on that run's own validation films."""

    name: str  # the run as it was registered (it need not stay registered)
    rule: str  # the holdout rule (core.training.holdout)
    threshold: float  # its operating point, at which its other-batch report is read
    target_sensitivity: float
    validation_auc: float | None  # on its own validation films
    validation_films: int
    epochs: int  # epochs run (early stopping may end a run before its recipe's last)
    best_epoch: int | None
    seconds: float | None
    device: str
    precision: str
    created: str | None
    members: int = 0  # networks averaged when the run is an ensemble (its epochs are its members'); 0: one network


class MeasuredElsewhere(HeadlineFigures):
    """Figures of these very weights measured outside this product, on films it does not hold, as their measurer
    reported them (e.g. the project's measurement of the shipped models on the official Kermany test, issue 13);
    recorded by ``python -m core measured-elsewhere FILE`` (core.training.measured_elsewhere). Intervals are
    computed from the figures and the films per class (core.evaluation.reported), not by resampling films."""

    title: str  # the films in a few words, for a table's column
    films: str  # which films, in words
    measured_by: str  # who measured them, and where they said so
    class_counts: dict[str, int]  # films per class, by this model's class names
    threshold: float | None  # the operating point they were read at (None: not reported)

    @property
    def n(self) -> int:
        return sum(self.class_counts.values())


class ModelRecord(Record):
    name: str
    task: str
    arch: str
    classes: tuple[str, ...]
    model_args: ModelArgs
    input: InputSpec | None = None
    operating_point: OperatingPoint
    report: Report | None = None  # internal validation: patient-disjoint films of the training batch
    other_reports: dict[str, Report] = {}  # e.g. "out-of-batch", per source: each says its films in `split`
    training: TrainingRecord | None = None
    data: DataRecord | None = None
    calibration: Calibration | None = None
    parameters: int | None = None
    inference_ms_per_film: float | None = None
    created: str | None = None
    members: tuple[Member, ...] = ()  # empty for a single network (arch and model_args above)
    population_check: PopulationCheck | None = None  # None: not checked (older versions)
    holdout_run: HoldoutRun | None = None  # set when the out-of-batch report is another run's, not these weights'
    measured_elsewhere: tuple[MeasuredElsewhere, ...] = ()  # figures reported by others on films not held here
    format_version: int = FORMAT_VERSION
    weights_sha256: str = ""  # filled in by save_checkpoint; a stored record without it is refused
    weights_bytes: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ModelRecord":
        """One set of classes throughout: the network's outputs, the operating point's reading of them, the names
        shown. An edited description where they disagree would label films with the wrong class."""
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("the classes must each be named once")
        if tuple(self.operating_point.classes) != tuple(self.classes):
            raise ValueError("the operating point's classes must be the model's classes, in the same order")
        if self.model_args.num_classes != len(self.classes):
            raise ValueError(f"model_args.num_classes must be the {len(self.classes)} classes named")
        if self.task != task_name(self.classes):  # else it could become the default of a task it cannot read
            raise ValueError(f"the task must be {task_name(self.classes)!r}, the one its classes name")
        return self

    @property
    def image_size(self) -> int:
        return self.model_args.image_size

    def identity(self) -> dict:
        """Fields the weights file repeats: a pair that disagrees on them is refused."""
        return {"name": self.name, "arch": self.arch, "model_args": self.model_args.to_json(),
                "classes": list(self.classes), "format_version": self.format_version}


def read_model_record(json_path: Path, data: bytes | None = None) -> ModelRecord:
    """The one place a model's JSON is read: CheckpointError naming the file when it is unreadable or invalid.
    ``data``: the file's bytes already read (a shipped description's, parsed from the bytes its checksum matched)."""
    what = f"Model description {json_path.name}"
    try:
        record = (read_record(ModelRecord, json_path, what) if data is None
                  else record_from_bytes(ModelRecord, data, what))
    except OSError as exc:
        raise CheckpointError(f"Model description {json_path.name} cannot be read ({exc.strerror or exc}).") from exc
    except ValueError as exc:
        raise CheckpointError(f"{exc}.") from exc
    if not record.weights_sha256:
        raise CheckpointError(f"Model description {json_path.name} lacks weights_sha256.")
    return record
