"""Evaluation: scikit-learn metrics at the operating point and at 0.5, with bootstrap 95 % intervals.

"Abnormal" means any class that is not the normal class; its score is 1 - p(normal). Binary metrics
(sensitivity, specificity) are abnormal-vs-normal; per-class precision/recall/F1 use the decided label.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from core.store.reports import ClassMetrics, DecisionMetrics, OperatingPoint, Report, Roc

N_BOOTSTRAP = 1000


def evaluate_probabilities(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str] | tuple[str, ...], point: OperatingPoint,
    seed: int = 0, split: str = "",
) -> Report:
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    auc, auc_ci = _auc_with_interval(y_true, probabilities, seed)
    roc = None
    is_abnormal = None if point.normal_index is None else (y_true != point.normal_index).astype(int)
    if is_abnormal is not None and 0 < is_abnormal.sum() < len(is_abnormal):  # a curve needs both kinds
        fpr, tpr, thresholds = roc_curve(is_abnormal, point.abnormal_scores(probabilities))
        roc = Roc(fpr=_round(fpr), tpr=_round(tpr), thresholds=_round(np.minimum(thresholds, 1.0)))
    return Report(
        n=int(len(y_true)), classes=list(classes),
        class_counts=np.bincount(y_true, minlength=len(classes)).tolist(),
        operating_point=point, auc=auc, auc_ci=auc_ci, roc=roc,
        at_operating_point=_decision_metrics(y_true, point.decide(probabilities), point, seed),
        at_half=_decision_metrics(y_true, point.at_half().decide(probabilities), point, seed),
        split=split,
    )


def _decision_metrics(y_true: np.ndarray, y_pred: np.ndarray, point: OperatingPoint, seed: int) -> DecisionMetrics:
    classes = point.classes
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    binary = {}
    if point.normal_index is not None:
        truth = y_true != point.normal_index
        called = y_pred != point.normal_index
        tp, wrong = np.sum(truth & called), np.sum(truth != called)
        binary = {
            "sensitivity": _ratio(tp, np.sum(truth)),
            "specificity": _ratio(np.sum(~truth & ~called), np.sum(~truth)),
            "precision": _ratio(tp, np.sum(called)),
            # F1 from counts: defined (0) even when nothing was called abnormal and precision is undefined.
            "f1": float(2 * tp / (2 * tp + wrong)) if tp + wrong > 0 else None,
        }
    intervals = _bootstrap_decisions(y_true, y_pred, point.normal_index, seed)
    return DecisionMetrics(
        accuracy=float(np.mean(y_true == y_pred)),
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        per_class={name: ClassMetrics(precision=float(p), recall=float(r), f1=float(f), support=int(n))
                   for name, p, r, f, n in zip(classes, precision, recall, f1, support)},
        macro_f1=float(np.mean(f1)),
        **binary, **{f"{k}_ci": v for k, v in intervals.items()},
    )


def _bootstrap_indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(N_BOOTSTRAP, n))


def _bootstrap_decisions(y_true, y_pred, normal_index, seed) -> dict:
    idx = _bootstrap_indices(len(y_true), seed)
    t, p = y_true[idx], y_pred[idx]
    samples = {"accuracy": np.mean(t == p, axis=1)}
    if normal_index is not None:
        truth, called = t != normal_index, p != normal_index
        tp, fn = np.sum(truth & called, 1), np.sum(truth & ~called, 1)
        tn, fp = np.sum(~truth & ~called, 1), np.sum(~truth & called, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples.update(sensitivity=tp / (tp + fn), specificity=tn / (tn + fp), precision=tp / (tp + fp),
                           f1=2 * tp / (2 * tp + fp + fn))
    return {k: _percentile_interval(v) for k, v in samples.items()}


def _auc_with_interval(y_true: np.ndarray, probabilities: np.ndarray, seed: int):
    """The AUC (scikit-learn) and its bootstrap 95 % interval, all resamples computed at once."""
    present = np.unique(y_true)
    if len(present) < 2 or (probabilities.shape[1] > 2 and len(present) < probabilities.shape[1]):
        return None, None
    if probabilities.shape[1] == 2:
        auc = roc_auc_score(y_true, probabilities[:, 1])
    else:
        auc = roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")
    idx = _bootstrap_indices(len(y_true), seed)
    truth, scores = y_true[idx], probabilities[idx]  # N_BOOTSTRAP x n, N_BOOTSTRAP x n x C
    if probabilities.shape[1] == 2:
        samples = _rank_auc(truth == 1, scores[..., 1])
    else:  # one-vs-rest, macro: the mean of every class's AUC against the others
        samples = np.mean([_rank_auc(truth == k, scores[..., k]) for k in range(probabilities.shape[1])], axis=0)
    return float(auc), _percentile_interval(samples)


def _rank_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC as the Mann-Whitney statistic (ties count half), as scikit-learn's equals; NaN where
    a row lacks either class. A thousand resamples cost one ranking instead of a thousand metric calls."""
    ranks = _average_ranks(scores)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(positive, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks within each row, ties sharing their average rank (scipy's rankdata, without the second
    scipy.stats costs to import)."""
    order = np.argsort(scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    position = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    starts = np.ones(scores.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(scores.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, scores.shape[1] - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(scores.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _percentile_interval(samples: np.ndarray) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def _ratio(numerator, denominator) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]
