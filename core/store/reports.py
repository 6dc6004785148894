"""Evaluation reports and the operating point they are read at: typed, stored inside each model's JSON.

"Abnormal" means any class that is not the normal class; its score is 1 - p(normal). A film is called
abnormal (and triaged ``urgent``) when its score reaches the threshold; the label is then the most probable
abnormal class, otherwise the normal class. A model without a normal class is read by argmax.

Figures added for several abnormal classes (#14) are optional with defaults, so every stored JSON still loads:
per-class triage sensitivity (``flag_recall``), per-class recall intervals, one-vs-rest AUCs and curves, the
reading by the most probable class (``at_argmax``), figures per data source (``by_source``) and each abnormal
class against the normal class alone (``against_normal``: how a two-class seed such as COVID-19 vs normal is
measured).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from pydantic import Field, computed_field, model_validator

from core.evaluation.reported import bound_decision, bound_pair, bound_report
from core.store.base import Interval, Record
from core.tasks import find_normal_index

LOWEST_THRESHOLD = -1e-3  # a threshold chosen just under a score of 0 (every film urgent) sits a hair below 0


def films_needed(n: int, target: float) -> int:
    """The fewest of ``n`` films whose share m / n reaches ``target`` (all ``n`` for a target above 1): the
    comparison the operating-point rule makes (core.training.operating_point)."""
    counts = np.arange(1, n + 1)
    return int(counts[np.argmax(counts / n >= target)]) if n and target <= 1 else n


class OperatingPoint(Record):
    classes: tuple[str, ...]
    normal_index: int | None
    threshold: float
    policy: str = "argmax"
    target_sensitivity: float | None = None
    validation_sensitivity: float | None = None
    validation_specificity: float | None = None
    # The per-class rule of several abnormal classes (core.training.operating_point); None in older JSON.
    spare_films: int | None = None  # films each abnormal class had to spare on validation (0: pooled rule)
    validation_class_sensitivity: dict[str, float] | None = None  # abnormal class -> its validation sensitivity
    validation_class_films: dict[str, int] | None = None  # abnormal class -> its validation films

    @model_validator(mode="after")
    def _sensible(self) -> "OperatingPoint":
        """A hand-edited or damaged description must not triage silently wrong: a NaN threshold calls every film
        normal, one past 1 never calls any urgent, a normal index out of range reads the wrong class."""
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError("the classes must be named, each once")
        if self.normal_index is not None and not 0 <= self.normal_index < len(self.classes):
            raise ValueError(f"normal_index must name one of the {len(self.classes)} classes")
        normal = find_normal_index(self.classes)  # how every operating point is chosen (core.training)
        if self.normal_index != normal:  # else normal films read urgent and abnormal ones routine, or none triaged
            raise ValueError("normal_index must be " + (f"{normal}, the {self.classes[normal]} class" if normal is not
                                                        None else "null: none of the classes is a normal class"))
        if not (math.isfinite(self.threshold) and LOWEST_THRESHOLD <= self.threshold <= 1.0):
            raise ValueError("the threshold must be a number from 0 to 1")
        return self

    @computed_field
    @property
    def normal_class(self) -> str | None:
        return None if self.normal_index is None else self.classes[self.normal_index]

    def too_few_films(self) -> dict[str, int]:
        """Abnormal classes whose films at the choice were too few to show its target (their count): every one of
        them is flagged, and where a film was to be spared (several classes) it could not be. 20 films meet a
        99.9 % target as they meet 96 %, and 12 films at 95 % left no film to spare (a review)."""
        target, spare = self.target_sensitivity, self.spare_films or 0
        if target is None or target >= 1 or not self.validation_class_films:
            return {}
        short = {}
        for name, n in self.validation_class_films.items():
            needed = films_needed(n, target)
            if n and (needed + spare >= n if spare else needed == n):  # all flagged (>=: 20-39 films at 95 %)
                short[name] = n
        return short

    def at_half(self) -> "OperatingPoint":
        """The same model read at the naive 0.5 threshold, for comparison in reports."""
        return self.model_copy(update={"threshold": 0.5, "policy": "threshold 0.5"})

    def abnormal_scores(self, probabilities: np.ndarray) -> np.ndarray:
        if self.normal_index is None:
            raise ValueError("a model without a normal class has no abnormality score")
        return 1.0 - np.asarray(probabilities)[:, self.normal_index]

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Class indices at this operating point (argmax when the model has no normal class)."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if self.normal_index is None:
            return probabilities.argmax(axis=1)
        abnormal_only = probabilities.copy()
        abnormal_only[:, self.normal_index] = -1.0
        called = self.abnormal_scores(probabilities) >= self.threshold
        return np.where(called, abnormal_only.argmax(axis=1), self.normal_index)


class ClassMetrics(Record):
    precision: float
    recall: float
    f1: float
    support: int  # 0: the class has no film here, and its recall says nothing
    recall_ci: Interval | None = None


class DecisionMetrics(Record):
    """Figures of one way of reading the probabilities (the operating point, or 0.5), with 95 % intervals."""

    accuracy: float
    accuracy_ci: Interval | None = None
    confusion_matrix: list[list[int]]
    per_class: dict[str, ClassMetrics]
    macro_f1: float
    # Abnormal against normal; None for a model without a normal class.
    sensitivity: float | None = None
    sensitivity_ci: Interval | None = None
    specificity: float | None = None
    specificity_ci: Interval | None = None
    precision: float | None = None
    precision_ci: Interval | None = None
    f1: float | None = None
    f1_ci: Interval | None = None
    # Per abnormal class with films here: the share of its films this reading calls abnormal (any abnormal
    # class). At the operating point that is the share whose abnormal score reaches the threshold: triage
    # sensitivity for that class. None for a model without a normal class.
    flag_recall: dict[str, float] | None = None
    flag_recall_ci: dict[str, Interval] | None = None

    _bounded = model_validator(mode="after")(bound_decision)  # an F1 interval of no width: Wilson's


class Roc(Record):
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


class SkippedFilm(Record):
    file: str
    error: str


class SourceFigures(Record):
    """The films of one data source (e.g. ``covid-3class``, ``kermany-224``) read at the operating point: how a source
    shortcut shows (e.g. a class whose films all come from one database recognised by its source)."""

    n: int
    class_counts: dict[str, int]  # classes with films from this source
    accuracy: float
    flagged: float | None = None  # share called abnormal; None for a model without a normal class
    recall: dict[str, float] = {}  # per class with films from this source


class PairFigures(Record):
    """One abnormal class against the normal class alone, read as a two-class model would be: only the films of
    those two classes, each called by the larger of its two probabilities; the AUC ranks p(class) / (p(class) +
    p(normal)). This is how a two-class model of that pair (the COVID-19 seed's small CNN, COVID vs normal) is
    measured, so the two can be set side by side."""

    n: int
    class_counts: dict[str, int]  # the abnormal class's films, then the normal class's
    accuracy: float
    accuracy_ci: Interval | None = None
    auc: float | None = None  # None unless both classes have films
    auc_ci: Interval | None = None

    _bounded = model_validator(mode="after")(bound_pair)  # an AUC interval of no width: Hanley-McNeil's


class Report(Record):
    """Metrics of one model on one set of films. ``split`` says in words which films they were."""

    n: int
    classes: list[str]
    class_counts: list[int]
    operating_point: OperatingPoint
    auc: float | None = None
    auc_ci: Interval | None = None
    roc: Roc | None = None
    at_operating_point: DecisionMetrics
    at_half: DecisionMetrics = Field(alias="at_0.5")
    split: str = ""
    model: str | None = None
    skipped: list[SkippedFilm] = []
    # More than two classes: one-vs-rest AUC and curve per class with films of both kinds here (the NORMAL
    # class's is the triage score's AUC), and the reading by the most probable class; ``auc`` is then the
    # macro one-vs-rest AUC, None unless every class has films. None for two classes and in older JSON.
    class_auc: dict[str, float] | None = None
    class_auc_ci: dict[str, Interval] | None = None
    class_roc: dict[str, Roc] | None = None
    at_argmax: DecisionMetrics | None = None
    by_source: dict[str, SourceFigures] = {}  # only when the films come from two sources or more
    # More than two classes with a normal class: each abnormal class with films here against the normal class
    # alone (PairFigures). None for two classes and in older JSON.
    against_normal: dict[str, PairFigures] | None = None
    _bounded = model_validator(mode="after")(bound_report)  # an AUC interval of no width: Hanley-McNeil's

    # The CLI's JSON has always carried the operating point's figures at the top level as well.
    @computed_field
    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @computed_field
    @property
    def accuracy(self) -> float:
        return self.at_operating_point.accuracy

    @computed_field
    @property
    def accuracy_ci(self) -> Interval | None:
        return self.at_operating_point.accuracy_ci

    @computed_field
    @property
    def sensitivity(self) -> float | None:
        return self.at_operating_point.sensitivity

    @computed_field
    @property
    def sensitivity_ci(self) -> Interval | None:
        return self.at_operating_point.sensitivity_ci

    @computed_field
    @property
    def specificity(self) -> float | None:
        return self.at_operating_point.specificity

    @computed_field
    @property
    def specificity_ci(self) -> Interval | None:
        return self.at_operating_point.specificity_ci

    @computed_field
    @property
    def per_class(self) -> dict[str, ClassMetrics]:
        return self.at_operating_point.per_class

    @computed_field
    @property
    def confusion_matrix(self) -> list[list[int]]:
        return self.at_operating_point.confusion_matrix

    def summary(self) -> dict:
        """The headline figures the CLI prints for a model; with several abnormal classes, each one's triage
        sensitivity (``flag_recall``), each class's recall by the operating point's labels and each abnormal
        class's accuracy and AUC against the normal class alone (``against_normal``) as well."""
        figures = {"n": self.n, "auc": self.auc, "accuracy": self.accuracy, "sensitivity": self.sensitivity,
                   "specificity": self.specificity, "threshold": self.threshold}
        if len(self.classes) > 2:
            figures.update(flag_recall=self.at_operating_point.flag_recall, recall={
                name: m.recall for name, m in self.per_class.items() if m.support})
            if self.against_normal:
                figures["against_normal"] = {name: {"accuracy": pair.accuracy, "auc": pair.auc}
                                             for name, pair in self.against_normal.items()}
        return figures

    def summary_with_intervals(self) -> dict:
        """The headline figures with their 95 % intervals and the films they come from (``split``), for listing
        the reports a model carries beside internal validation. None where a figure cannot exist (AUC and
        sensitivity on normal films only)."""
        return {**self.summary(), "auc_ci": self.auc_ci, "sensitivity_ci": self.sensitivity_ci,
                "specificity_ci": self.specificity_ci, "class_counts": dict(zip(self.classes, self.class_counts)),
                "split": self.split}


class HeadlineFigures(Record):
    """The headline figures with their 95 % intervals, for records that keep them without a whole :class:`Report`
    (a training job's summary, figures measured elsewhere); named as a Report names them, so one formatter reads
    either."""

    auc: float | None = None
    auc_ci: Interval | None = None
    accuracy: float | None = None
    accuracy_ci: Interval | None = None
    sensitivity: float | None = None
    sensitivity_ci: Interval | None = None
    specificity: float | None = None
    specificity_ci: Interval | None = None


OUT_OF_BATCH = "out-of-batch"  # the key of ModelRecord.other_reports for another batch (core.training.holdout)
# Its keys for the other collection (core.training.other_collection), as collected and framed 15 % tighter: the
# two readings of the range at a new site (core.evaluation.site_range).
OTHER_COLLECTION = "other-collection"
OTHER_COLLECTION_FRAMED = "other-collection-framed"

# Keys of ModelRecord.other_reports that older versions may store but that measured no real films (issue 13's
# "adults": shared-data/tb/train holds noise textures, not chest films): loaded, never shown.
WITHDRAWN = frozenset({"adults"})


def shown_reports(reports: Mapping[str, Report]) -> dict[str, Report]:
    """A version's ``other_reports`` without the withdrawn ones."""
    return {key: value for key, value in reports.items() if key not in WITHDRAWN}
