"""``python -m core measured-elsewhere FILE``: record figures that others measured on films this product does not
hold, on the versions they describe (administrators).

The project measures every shipped model on films kept outside the repository (the official Kermany test split,
issue 13) and reports figures, never films. A clinician choosing a model should see them on its card beside the
figures measured here, so FILE (JSON, :class:`MeasurementsFile`) names the films, who measured them, the films per
class and, for each version, its weights digest and the figures. Every entry is checked before any is written:
the version must exist, its weights must be the ones measured (the digest; retrained weights were never
measured there), the classes must be the version's, and a reported accuracy must follow from the sensitivity,
specificity and films per class (with more than two classes, must not exceed what they imply). The 95 % intervals
come from the figures and counts (core.evaluation.reported); a macro AUC of more than two classes gets none.
A version's earlier figures from the same films and measurer are replaced; a shipped version's manifest is
re-signed. Weights, thresholds and the reports measured here are unchanged.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable

from pydantic import ConfigDict, Field, field_validator

from core.admin.audit import ensure_writable, record_action
from core.errors import CommandRefused, ModelNotFound
from core.evaluation.reported import hanley_mcneil_interval, wilson_interval
from core.store.base import Record, read_record
from core.store.records import MeasuredElsewhere, ModelRecord, read_model_record
from core.store.registry import ModelEntry, find_model
from core.store.writable import ensure_models_writable
from core.stop_signals import held_through

ACCURACY_TOLERANCE = 0.002  # figures reported to a tenth of a percent: their accuracy agrees within this
SHARE_ROUNDING = 0.005  # a share of films reported to two decimals or more lies this near a whole count of them
TEMPLATE = ("What the file holds is in the README (measured-elsewhere); "
            "docs/project-measurements/kermany-official-test.json is an example to copy.")

Proportion = Field(default=None, ge=0.0, le=1.0)


class ReportedFigures(Record):
    model_config = ConfigDict(**Record.model_config, strict=True)  # a figure is a number: not true, not "0.9"

    model: str
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # the operating point read at, when reported
    auc: float | None = Proportion
    accuracy: float | None = Proportion
    sensitivity: float | None = Proportion
    specificity: float | None = Proportion


class MeasurementsFile(Record):
    model_config = ConfigDict(**Record.model_config, strict=True)

    title: str = Field(min_length=1, max_length=40)
    films: str = Field(min_length=1, max_length=300)
    measured_by: str = Field(min_length=1, max_length=200)
    class_counts: dict[str, Annotated[int, Field(le=10_000_000)]] = Field(max_length=16)  # >= 1: checked below
    models: list[ReportedFigures] = Field(min_length=1)

    @field_validator("title", "films", "measured_by")
    @classmethod
    def _printable(cls, text: str) -> str:
        """Words for a card: no control character (a review stored an escape sequence and a NUL in them)."""
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):  # Cf: bidi overrides too
            raise ValueError("must be plain text: no control characters (line breaks, tabs, escapes, direction "
                             "marks)")
        return text


class NotHere(Exception):
    """An entry describes no version of this install (absent, or other weights): skipped, not an error."""


@dataclass(frozen=True)
class Recorded:
    stored: list[ModelRecord]  # the versions that got their figures, as stored
    skipped: list[tuple[str, str]]  # (model named in the file, why its entry describes nothing here)


def record_measurements(path: Path, who: str = "cli",
                        on_stored: Callable[[ModelRecord], None] | None = None) -> Recorded:
    """Record every entry of the measurements file at ``path`` on its version, skipping the entries of versions
    not here (absent, or other weights); ``on_stored`` hears of each version once it is stored and audited (a later
    one that fails leaves the earlier stored: the CLI reported only the error, a review; one whose audit line fails
    is named in the error). CommandRefused (nothing written)
    when the file or any entry is wrong, or when no entry describes a version here."""
    try:
        reported = read_record(MeasurementsFile, Path(path), f"Measurements file {Path(path).name}")
    except OSError as exc:
        raise CommandRefused(f"Measurements file {Path(path).name} cannot be read ({exc.strerror or exc}).") from None
    except ValueError as exc:  # what the file should hold: a review found the refusal said nothing of it
        raise CommandRefused(f"{exc}. {TEMPLATE}") from None
    named = [(figures.model, figures.weights_sha256) for figures in reported.models]  # one version's weights
    twice = sorted({name for name, weights in named if named.count((name, weights)) > 1})
    if twice:  # which figures would stand would depend on their order in the file
        raise CommandRefused(f"Measurements file {Path(path).name} gives figures for {', '.join(twice)} more than "
                             "once; keep one entry per version.")
    ensure_writable()
    planned, skipped = [], []
    for figures in reported.models:  # all checked before any is written
        try:
            planned.append(_planned(reported, figures))
        except NotHere as exc:
            skipped.append((figures.model, str(exc)))
    if not planned:
        raise CommandRefused(" ".join(reason for _, reason in skipped))
    clashes = sorted({entry.name for entry, measured in planned for earlier in entry.record.measured_elsewhere
                      if earlier.title == measured.title and earlier.measured_by != measured.measured_by})
    if clashes:  # one title, two measurers: replacing would lose the other's figures, keeping both would merge them
        raise CommandRefused(f"{', '.join(clashes)} already carries figures titled {reported.title!r} that someone "
                             "else measured; give these figures another title (both are then kept).")
    for folder in {entry.json_path.parent for entry, _ in planned}:  # a shipped and a site version: both folders
        ensure_models_writable(folder)
    from core.store.descriptions import attach_measured_elsewhere  # torch: only once the whole file checked out

    stored = []
    for entry, measured in planned:
        def audit(record: ModelRecord) -> None:
            record_action("measured-elsewhere", who, model=record.name, task=record.task, films=measured.films,
                          measured_by=measured.measured_by, n=measured.n, auc=measured.auc,
                          sensitivity=measured.sensitivity, specificity=measured.specificity)

        # the figures and their audit line, both; a stop that came meanwhile lands once they are reported
        record, stopped = held_through(lambda: attach_measured_elsewhere(entry.json_path, measured, then=audit))
        stored.append(record)
        if on_stored is not None:
            on_stored(record)
        if stopped:
            raise KeyboardInterrupt
    return Recorded(stored, skipped)


def _planned(reported: MeasurementsFile, figures: ReportedFigures) -> tuple[ModelEntry, MeasuredElsewhere]:
    try:
        entry = find_model(figures.model)
    except ModelNotFound:
        raise NotHere(f"No version named {figures.model} is registered here.") from None
    record = read_model_record(entry.json_path)
    if record.weights_sha256 != figures.weights_sha256:
        raise NotHere(f"The figures for {record.name} were measured on other weights (another "
                      "weights_sha256); they cannot describe this version.")
    if set(reported.class_counts) != set(record.classes) or min(reported.class_counts.values()) < 1:
        raise CommandRefused(f"The films per class ({', '.join(reported.class_counts)}) must name each of "
                             f"{record.name}'s classes ({', '.join(record.classes)}) with at least one film.")
    normal_class = record.operating_point.normal_class
    if normal_class is None:
        raise CommandRefused(f"{record.name} has no normal class, so sensitivity and specificity do not apply.")
    n_normal = reported.class_counts[normal_class]
    n_abnormal = sum(reported.class_counts.values()) - n_normal
    n = n_normal + n_abnormal
    two_classes = len(record.classes) == 2
    for name, value, films in (("accuracy", figures.accuracy, n), ("sensitivity", figures.sensitivity, n_abnormal),
                               ("specificity", figures.specificity, n_normal)):
        if value is not None and abs(round(value * films) - value * films) > SHARE_ROUNDING * films + 1e-9:
            raise CommandRefused(f"The {name} reported for {record.name} ({value:.3f}) is no share of its {films} "
                                 f"film{'s' * (films != 1)}; check the figures and the films per class.")
    if None not in (figures.accuracy, figures.sensitivity, figures.specificity):
        # films right as normal or abnormal; with more classes an abnormal film must also get its own class, so
        # the accuracy can only be lower
        implied = (figures.sensitivity * n_abnormal + figures.specificity * n_normal) / n
        if abs(implied - figures.accuracy) > ACCURACY_TOLERANCE if two_classes else \
                figures.accuracy > implied + ACCURACY_TOLERANCE:
            follows = "does not follow from" if two_classes else "is more than the normal-or-abnormal accuracy of"
            raise CommandRefused(f"The accuracy reported for {record.name} ({figures.accuracy:.3f}) {follows} its "
                                 f"sensitivity, specificity and films per class ({implied:.3f}); check the figures.")
    return entry, MeasuredElsewhere(
        title=reported.title, films=reported.films, measured_by=reported.measured_by,
        class_counts=reported.class_counts,
        threshold=figures.threshold,
        # Hanley-McNeil bounds a two-class AUC; a macro one-vs-rest AUC of more classes gets no interval from
        # the counts alone (it would need each class's AUC)
        auc=figures.auc, auc_ci=_or_none(figures.auc if two_classes else None,
                                         lambda v: hanley_mcneil_interval(v, n_abnormal, n_normal)),
        accuracy=figures.accuracy, accuracy_ci=_or_none(figures.accuracy, lambda v: wilson_interval(v, n)),
        sensitivity=figures.sensitivity,
        sensitivity_ci=_or_none(figures.sensitivity, lambda v: wilson_interval(v, n_abnormal)),
        specificity=figures.specificity,
        specificity_ci=_or_none(figures.specificity, lambda v: wilson_interval(v, n_normal)))


def _or_none(value, interval):
    return None if value is None else interval(value)
