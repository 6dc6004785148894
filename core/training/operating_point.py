"""Choosing the operating point: the abnormality threshold picked on validation and shipped with the model.

Triage reads one abnormal score, 1 - p(normal), against one threshold, whatever the number of classes.

- **One abnormal class** (NORMAL / PNEUMONIA, or normal against tuberculosis): the highest threshold whose
  validation sensitivity reaches a target (95 % unless the training request says otherwise; the reasons for
  the shipped pneumonia default's 96 % are in docs/measurements.md).
- **Several abnormal classes** (COVID-19, PNEUMONIA, TUBERCULOSIS, ...): pooling them would let a large class
  carry a small one (780 pneumonia films hide 22 COVID-19 films), so the target holds for *each* abnormal class
  on its own, with a margin: every class must reach it with ``limits.CLASS_SPARE_FILMS`` (one) of its films to
  spare, i.e. it would still reach the target had one more of its films been missed. With fewer films than
  the target can tell apart (below 40 at 95 %, so the 22 COVID-19 or 30 tuberculosis films of a validation
  set) that means every film of the class; on large classes it costs a fraction of a percent. The threshold
  is the highest at which every class with validation films gets there.

Validation films come from the training batch, so a threshold that only just reaches the target there sits
on the steep edge of the ROC curve: a site leaves a margin above what it needs on new films. The operating
point records the rule (``policy``, ``spare_films``) and each abnormal class's validation sensitivity and
film count at the chosen threshold. The stored threshold sits a hair (``limits.THRESHOLD_MARGIN``) below the
score of the film that set it, so float noise in scoring that film again cannot move it across.
"""
from __future__ import annotations

import numpy as np

from core import limits
from core.store.reports import OperatingPoint, films_needed
from core.tasks import find_normal_index


def choose_operating_point(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str] | tuple[str, ...],
    target_sensitivity: float = limits.DEFAULT_TARGET_SENSITIVITY, spare_films: int = limits.CLASS_SPARE_FILMS,
) -> OperatingPoint:
    """Highest threshold at which the abnormal films of these (validation) films reach the target: pooled for
    one abnormal class, each class with ``spare_films`` to spare for several (module docstring)."""
    classes = tuple(classes)
    normal = find_normal_index(classes)
    if normal is None:
        return OperatingPoint(classes=classes, normal_index=None, threshold=0.5,
                              policy="argmax (no normal class: no abnormality threshold)")
    y_true = np.asarray(y_true)
    scores = 1.0 - np.asarray(probabilities)[:, normal]
    truth = y_true != normal
    if truth.sum() == 0 or (~truth).sum() == 0:
        raise ValueError("choosing an operating point needs both normal and abnormal validation films")
    if not np.isfinite(scores).all():  # a NaN sorts first and is never flagged: the target silently missed
        raise ValueError("choosing an operating point needs a finite probability for every validation film")
    abnormal = [k for k in range(len(classes)) if k != normal]
    spare = spare_films if len(abnormal) > 1 else 0
    films = {classes[k]: int(np.sum(y_true == k)) for k in abnormal}
    threshold = _with_margin(min(_highest_reaching(scores[y_true == k], target_sensitivity, spare)
                                 for k in abnormal if films[classes[k]]), scores)
    called = scores >= threshold
    if len(abnormal) > 1:
        policy = (f"highest threshold at which each abnormal class ({', '.join(classes[k] for k in abnormal)}) "
                  f"reaches validation sensitivity >= {target_sensitivity * 100:g}%"
                  + (f" with {spare} of its films to spare" if spare else ""))
    else:
        policy = f"highest threshold with validation sensitivity >= {target_sensitivity * 100:g}%"
    return OperatingPoint(
        classes=classes, normal_index=normal, threshold=threshold, policy=policy,
        target_sensitivity=target_sensitivity,
        validation_sensitivity=float(np.mean(called[truth])),
        validation_specificity=float(np.mean(~called[~truth])),
        spare_films=spare,
        validation_class_sensitivity={classes[k]: float(np.mean(called[y_true == k]))
                                      for k in abnormal if films[classes[k]]},
        validation_class_films=films,
    )


def _with_margin(threshold: float, scores: np.ndarray) -> float:
    """``threshold`` (one validation film's score) lowered by ``limits.THRESHOLD_MARGIN``, at most half-way to the
    next lower validation score: the same films on each side, but a film scored again with float noise (about
    1e-7) stays on its side."""
    below = scores[scores < threshold]
    gap = threshold - float(below.max()) if below.size else limits.THRESHOLD_MARGIN * 2
    return float(threshold - min(limits.THRESHOLD_MARGIN, gap / 2))


def _highest_reaching(class_scores: np.ndarray, target: float, spare: int) -> float:
    """The highest threshold that flags enough of one class's films: the smallest count m whose share m / n
    reaches the target (the comparison today's pooled rule made), plus ``spare``, at most all n."""
    ordered = np.sort(class_scores)[::-1]
    return float(ordered[min(films_needed(len(ordered), target) + spare, len(ordered)) - 1])
