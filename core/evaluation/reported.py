"""95 % intervals for figures reported without their films (core.training.measured_elsewhere): only the figure
and the films per class are known, so the intervals come from those, not from resampling films as every
interval of core.evaluation.metrics does.

- sensitivity, specificity, accuracy: the Wilson score interval of a proportion of ``n`` films;
- AUC: Hanley and McNeil's (Radiology 1982) standard error under the usual exponential approximation.

The AUC interval here also stands in for a resampled one of no width (:func:`bound_report`): every resample of
perfectly separated films gives AUC 1, so its percentile interval (1, 1) bounded nothing, and cards read "no
interval" of 24 + 13 films as of 500 + 500 (found by a review); so does the Wilson interval for an F1 of no width
(:func:`bound_decision`).
"""
from __future__ import annotations

import math

import numpy as np

from core.tasks import find_normal_index

Z = 1.959963984540054  # the normal 97.5th percentile


def wilson_interval(proportion: float, n: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of ``proportion`` observed on ``n`` films (n > 0)."""
    if n <= 0 or not 0.0 <= proportion <= 1.0:
        raise ValueError(f"a proportion in [0, 1] of n > 0 films, not {proportion} of {n}")
    z2 = Z * Z
    centre = (proportion + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(proportion * (1 - proportion) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at 0 or n the interval's own end is exactly the observation (rounding left 0.9999999999999999 for 1)
    low = 0.0 if proportion == 0.0 else max(0.0, centre - half)
    return low, (1.0 if proportion == 1.0 else min(1.0, centre + half))


def hanley_mcneil_interval(auc: float, n_abnormal: int, n_normal: int) -> tuple[float, float]:
    """A 95 % interval of ``auc`` measured on ``n_abnormal`` abnormal and ``n_normal`` normal films. At an AUC
    of 0 or 1 the formula's error is 0, which would claim "1.000 (1.000-1.000)" of a handful of films: there it
    is taken at half a discordant pair from the end, what a rounded report of 1 cannot rule out."""
    if n_abnormal <= 0 or n_normal <= 0 or not 0.0 <= auc <= 1.0:
        raise ValueError(f"an AUC in [0, 1] on films of both kinds, not {auc} on {n_abnormal} + {n_normal}")
    pairs = n_abnormal * n_normal
    a = min(max(auc, 1 / (2 * pairs)), 1 - 1 / (2 * pairs))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (n_abnormal - 1) * (q1 - a * a) + (n_normal - 1) * (q2 - a * a)) / pairs
    half = Z * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def bound_report(report):
    """Report's own after-validator (core.store.reports): every AUC interval of no width replaced by
    :func:`hanley_mcneil_interval` from its films per class, the headline's (two classes: abnormal against normal;
    more: the mean of the classes' lower bounds) and each class's against the rest. Set in place: the model is
    being validated (frozen only to everyone else)."""
    n, by_class = sum(report.class_counts), dict(zip(report.classes, report.class_counts))
    if report.class_auc_ci:
        aucs = report.class_auc or {}
        object.__setattr__(report, "class_auc_ci", {name: _bounded(aucs.get(name), ci, by_class.get(name, 0),
                                                                   n - by_class.get(name, 0))
                                                    for name, ci in report.class_auc_ci.items()})
    if not _no_width(report.auc_ci) or report.auc is None:
        return report
    normal = find_normal_index(report.classes)
    if len(report.classes) == 2 and normal is not None:
        counts = report.class_counts
        object.__setattr__(report, "auc_ci", _bounded(report.auc, report.auc_ci, n - counts[normal], counts[normal]))
    elif len(report.classes) > 2 and all(0 < k < n for k in report.class_counts):
        lows = [hanley_mcneil_interval(report.auc, k, n - k)[0] for k in report.class_counts]
        object.__setattr__(report, "auc_ci", (sum(lows) / len(lows), 1.0))
    return report


def bound_decision(figures):
    """DecisionMetrics' own after-validator: an abnormal-vs-normal F1 interval of no width (every resample of
    films read without a mistake gives F1 1; a review found "no interval: too few films" beside accuracy's
    92.9-100 % on the same 50 films) replaced by the Wilson interval of F1 read as a share: F1 = TP / (TP +
    (FP + FN) / 2), counts from its confusion matrix."""
    normal = find_normal_index(list(figures.per_class))
    if not _no_width(figures.f1_ci) or figures.f1 is None or normal is None:
        return figures
    matrix = figures.confusion_matrix
    others = [k for k in range(len(matrix)) if k != normal]
    tp = sum(matrix[i][j] for i in others for j in others)
    wrong = sum(matrix[i][normal] + matrix[normal][i] for i in others)
    if tp + wrong / 2 > 0:
        object.__setattr__(figures, "f1_ci", wilson_interval(figures.f1, tp + wrong / 2))
    return figures


def bound_pair(pair):
    """PairFigures' own after-validator: its AUC interval bounded as :func:`bound_report` bounds a class's (its
    counts: the abnormal class's films, then the normal class's)."""
    counts = list(pair.class_counts.values())
    if len(counts) == 2:
        object.__setattr__(pair, "auc_ci", _bounded(pair.auc, pair.auc_ci, *counts))
    return pair


def _no_width(ci) -> bool:
    return ci is not None and len(ci) == 2 and ci[0] == ci[1]


SMALL_CLASS = 20  # films of one kind under which a resampled AUC interval is not trusted alone


def widened_for_few(auc: float | None, ci, n_abnormal: int, n_normal: int):
    """``ci``, or with fewer than :data:`SMALL_CLASS` films of either kind the wider of it and Hanley-McNeil's
    interval. Resampling films regardless of class, keeping the resamples that hold both kinds, gave one abnormal
    film among 40 normals an AUC of 0.900 "(0.800-0.975)" against Hanley-McNeil's (0.490-1.000) (a review).
    Applied where an interval is computed (core.evaluation.metrics), never to one read back: a stored report
    reads as it was written."""
    if ci is None or auc is None or not 0.0 <= auc <= 1.0 or min(n_abnormal, n_normal) >= SMALL_CLASS \
            or n_abnormal <= 0 or n_normal <= 0:
        return ci
    low, high = hanley_mcneil_interval(float(auc), n_abnormal, n_normal)
    return [min(ci[0], low), max(ci[1], high)]


def few_films_widened(aucs, y_true: np.ndarray, classes: list[str], normal: int | None):
    """``aucs`` (core.evaluation.metrics' headline and per-class AUCs with their intervals) with each interval of a
    kind with fewer than :data:`SMALL_CLASS` films no narrower than Hanley-McNeil's (:func:`widened_for_few`): the
    headline's of two classes, each class's against the rest, and the macro headline of more classes no narrower
    than the mean of its classes' intervals."""
    counts, n = np.bincount(y_true, minlength=len(classes)), len(y_true)
    positives = int(n - counts[normal] if normal is not None else counts[-1])
    two = widened_for_few(aucs.auc, aucs.auc_ci, positives, n - positives) if len(classes) == 2 else aucs.auc_ci
    per_class = {name: widened_for_few(aucs.class_auc.get(name), ci, int(counts[classes.index(name)]),
                                       int(n - counts[classes.index(name)])) for name, ci in aucs.class_auc_ci.items()}
    if len(classes) > 2 and two is not None and min(counts) < SMALL_CLASS and \
            all(per_class.get(name) is not None for name in classes):
        # the macro AUC, the mean of the classes': no narrower than the mean of their widened intervals (a review:
        # 3 films of one class of 203 read 0.999 "(0.994-1.000)" while that class's own read 0.951-1.000)
        spans = [_bounded(aucs.class_auc.get(name), per_class[name], int(counts[k]), int(n - counts[k]))
                 for k, name in enumerate(classes)]  # as the report will show each class's (bound_report)
        two = [min(two[0], float(np.mean([low for low, _ in spans]))),
               max(two[1], float(np.mean([high for _, high in spans])))]
    return aucs._replace(auc_ci=two, class_auc_ci=per_class)


def _bounded(auc: float | None, ci, n_abnormal: int, n_normal: int):
    """``ci``, or Hanley-McNeil's interval where ``ci`` has no width and the films allow one."""
    if not _no_width(ci) or auc is None or not 0.0 <= auc <= 1.0 or n_abnormal <= 0 or n_normal <= 0:
        return ci
    return hanley_mcneil_interval(float(auc), n_abnormal, n_normal)
