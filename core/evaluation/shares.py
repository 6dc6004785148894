"""95 % intervals of shares of films: accuracy, sensitivity, specificity, precision, each class's recall and flag
recall, as Wilson score intervals of their counts, read from a confusion matrix alone (rows: true class, columns:
called). A percentile bootstrap cannot reach past what it resamples (37 of 37 films read right gave "100 %
(100-100)"); the Wilson interval at k = n runs from n / (n + z^2) to 1. Used by core.evaluation.metrics for
every new report, and to re-read a stored report's intervals from its own counts (:func:`with_count_intervals`).
"""
from __future__ import annotations

import numpy as np

from core.evaluation.reported import wilson_interval
from core.store.reports import DecisionMetrics, Report


def count_intervals(confusion: np.ndarray | list, normal_index: int | None) -> tuple[dict, dict, dict]:
    """Wilson 95 % intervals of the proportions a confusion matrix (rows: true class, columns: called) holds:
    accuracy and, with a normal class, sensitivity, specificity and precision (abnormal against normal); each
    class's recall and each abnormal class's flag recall (share called any abnormal class), keyed by class index,
    for the classes with films. None where a proportion has no films to be a share of. Also what re-reads the
    intervals of a stored report from its own confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    films = confusion.sum(axis=1)
    intervals = {"accuracy": wilson_of(int(np.trace(confusion)), int(films.sum()))}
    recall_ci = {k: wilson_of(int(confusion[k, k]), int(films[k])) for k in range(len(films)) if films[k]}
    flag_ci = {}
    if normal_index is not None:
        abnormal = np.arange(len(films)) != normal_index
        tp, fn = confusion[abnormal][:, abnormal].sum(), confusion[abnormal, normal_index].sum()
        tn, fp = confusion[normal_index, normal_index], confusion[normal_index, abnormal].sum()
        intervals.update(sensitivity=wilson_of(int(tp), int(tp + fn)), specificity=wilson_of(int(tn), int(tn + fp)),
                         precision=wilson_of(int(tp), int(tp + fp)))
        flag_ci = {k: wilson_of(int(confusion[k, abnormal].sum()), int(films[k]))
                   for k in range(len(films)) if abnormal[k] and films[k]}
    return intervals, recall_ci, flag_ci


def wilson_of(hits: int, films: int) -> tuple[float, float] | None:
    return wilson_interval(hits / films, films) if films else None


def with_count_intervals(report: Report) -> Report:
    """``report`` with every interval of a share of films re-read from its own counts (:func:`count_intervals`;
    a pair's accuracy from its films and accuracy): what core.evaluation.metrics gives those films now.
    AUC and F1 intervals, which need the films' scores, are kept."""
    normal = report.operating_point.normal_index
    classes = report.operating_point.classes

    def decisions(metrics: DecisionMetrics | None) -> DecisionMetrics | None:
        if metrics is None:
            return None
        intervals, recall_ci, flag_ci = count_intervals(metrics.confusion_matrix, normal)
        per_class = {name: row.model_copy(update={"recall_ci": recall_ci.get(classes.index(name))})
                     for name, row in metrics.per_class.items()}
        update = {f"{key}_ci": value for key, value in intervals.items()}
        if normal is not None:
            update["flag_recall_ci"] = {classes[k]: v for k, v in flag_ci.items()}
        return metrics.model_copy(update={**update, "per_class": per_class})

    pairs = None if report.against_normal is None else {
        name: pair.model_copy(update={"accuracy_ci": wilson_of(round(pair.accuracy * pair.n), pair.n)})
        for name, pair in report.against_normal.items()}
    return report.model_copy(update={"at_operating_point": decisions(report.at_operating_point),
                                     "at_half": decisions(report.at_half),
                                     "at_argmax": decisions(report.at_argmax), "against_normal": pairs})
