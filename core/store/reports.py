"""Evaluation reports and the operating point they are read at: typed, stored inside each model's JSON.

"Abnormal" means any class that is not the normal class; its score is 1 - p(normal). A film is called
abnormal (and triaged ``urgent``) when its score reaches the threshold; the label is then the most probable
abnormal class, otherwise the normal class. A model without a normal class is read by argmax.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, computed_field

from core.store.base import Interval, Record


class OperatingPoint(Record):
    classes: tuple[str, ...]
    normal_index: int | None
    threshold: float
    policy: str = "argmax"
    target_sensitivity: float | None = None
    validation_sensitivity: float | None = None
    validation_specificity: float | None = None

    @computed_field
    @property
    def normal_class(self) -> str | None:
        return None if self.normal_index is None else self.classes[self.normal_index]

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
    support: int


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


class Roc(Record):
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


class SkippedFilm(Record):
    file: str
    error: str


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
        """The headline figures the CLI prints for a model."""
        return {"n": self.n, "auc": self.auc, "accuracy": self.accuracy, "sensitivity": self.sensitivity,
                "specificity": self.specificity, "threshold": self.threshold}

    def summary_with_intervals(self) -> dict:
        """The headline figures with their 95 % intervals and the films they come from (``split``), for listing
        the reports a model carries beside internal validation. None where a figure cannot exist (AUC and
        sensitivity on normal films only)."""
        return {**self.summary(), "auc_ci": self.auc_ci, "sensitivity_ci": self.sensitivity_ci,
                "specificity_ci": self.specificity_ci, "class_counts": dict(zip(self.classes, self.class_counts)),
                "split": self.split}
