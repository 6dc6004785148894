"""The operating point: the abnormality threshold chosen on validation and shipped with the model.

Abnormal score = 1 - p(normal). A film is called abnormal (and triaged ``urgent``) when its score
reaches the threshold; the label is then the most probable abnormal class, otherwise the normal class.
The policy picks the highest threshold whose validation sensitivity reaches a target: 95 % by default.
The shipped default (triage) model is trained with a 98 % target (``--target-sensitivity 0.98``): validation
films come from the same hospital batch as training, so the threshold that just reaches 95 % there sits on
the steep edge of the ROC curve and loses sensitivity as soon as films shift (on the 16 full-resolution films
in ../shared/data/films the EfficientNet at its 95 % threshold missed 1 of 8 pneumonias). Small baselines keep
95 %: their normal and pneumonia scores overlap widely, and at 98 % their threshold falls into the bulk of
normal films (full-resolution specificity 0.75 -> 0.38 for the MLP).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np

DEFAULT_TARGET_SENSITIVITY = 0.95
TARGET_SENSITIVITY_RANGE = (0.5, 0.999)
_NORMAL_NAME = re.compile(r"^(normal|no[ _-]?finding|healthy)$", re.IGNORECASE)


@dataclass(frozen=True)
class OperatingPoint:
    classes: tuple[str, ...]
    normal_index: int | None
    threshold: float
    policy: str = "argmax"
    target_sensitivity: float | None = None
    validation_sensitivity: float | None = None
    validation_specificity: float | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["normal_class"] = None if self.normal_index is None else self.classes[self.normal_index]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "OperatingPoint":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["classes"] = tuple(fields["classes"])
        return cls(**fields)

    def at_half(self) -> "OperatingPoint":
        """The same model read at the naive 0.5 threshold, for comparison in reports."""
        return replace(self, threshold=0.5, policy="threshold 0.5")


def check_target_sensitivity(target: float) -> float:
    """The one range check for a sensitivity target (CLI, Retrain page, calibrate): ValueError outside it."""
    low, high = TARGET_SENSITIVITY_RANGE
    if not low <= target <= high:
        raise ValueError(f"The sensitivity target must lie between {low} and {high}; {target} was asked for")
    return target


def find_normal_index(classes: list[str] | tuple[str, ...]) -> int | None:
    matches = [i for i, name in enumerate(classes) if _NORMAL_NAME.match(name.strip())]
    return matches[0] if len(matches) == 1 else None


def abnormal_scores(probabilities: np.ndarray, normal_index: int) -> np.ndarray:
    return 1.0 - np.asarray(probabilities)[:, normal_index]


def decide(probabilities: np.ndarray, point: OperatingPoint) -> np.ndarray:
    """Labels at the operating point (argmax when the model has no normal class)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if point.normal_index is None:
        return probabilities.argmax(axis=1)
    abnormal_only = probabilities.copy()
    abnormal_only[:, point.normal_index] = -1.0
    called = abnormal_scores(probabilities, point.normal_index) >= point.threshold
    return np.where(called, abnormal_only.argmax(axis=1), point.normal_index)


def choose_operating_point(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str],
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> OperatingPoint:
    """Highest threshold whose sensitivity on these (validation) films reaches the target."""
    classes = tuple(classes)
    normal = find_normal_index(classes)
    if normal is None:
        return OperatingPoint(classes, None, 0.5, policy="argmax (no normal class: no abnormality threshold)")
    scores = abnormal_scores(probabilities, normal)
    truth = np.asarray(y_true) != normal
    if truth.sum() == 0 or (~truth).sum() == 0:
        raise ValueError("choosing an operating point needs both normal and abnormal validation films")
    candidates = np.unique(scores)[::-1]  # descending: the first that reaches the target is the highest
    threshold = float(candidates[-1])
    for t in candidates:
        if np.mean(scores[truth] >= t) >= target_sensitivity:
            threshold = float(t)
            break
    called = scores >= threshold
    return OperatingPoint(
        classes, normal, threshold,
        policy=f"highest threshold with validation sensitivity >= {target_sensitivity:.0%}",
        target_sensitivity=target_sensitivity,
        validation_sensitivity=float(np.mean(called[truth])),
        validation_specificity=float(np.mean(~called[~truth])),
    )
