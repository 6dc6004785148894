"""Evaluation: scikit-learn metrics at the operating point and at 0.5, with bootstrap 95 % intervals.

"Abnormal" means any class that is not the normal class; its score is 1 - p(normal). Binary metrics
(sensitivity, specificity) are abnormal-vs-normal; per-class precision/recall/F1 use the decided label.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from core.operating_point import OperatingPoint, abnormal_scores, decide

N_BOOTSTRAP = 1000


def evaluate_probabilities(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str], point: OperatingPoint, seed: int = 0
) -> dict:
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    report = {
        "n": int(len(y_true)),
        "classes": list(classes),
        "class_counts": np.bincount(y_true, minlength=len(classes)).tolist(),
        "operating_point": point.to_dict(),
    }
    auc, auc_ci = _auc_with_interval(y_true, probabilities, seed)
    report["auc"], report["auc_ci"] = auc, auc_ci
    if point.normal_index is not None:
        is_abnormal = (y_true != point.normal_index).astype(int)
        fpr, tpr, thresholds = roc_curve(is_abnormal, abnormal_scores(probabilities, point.normal_index))
        report["roc"] = {"fpr": _round(fpr), "tpr": _round(tpr), "thresholds": _round(np.minimum(thresholds, 1.0))}
    report["at_operating_point"] = _decision_metrics(y_true, decide(probabilities, point), point, seed)
    report["at_0.5"] = _decision_metrics(y_true, decide(probabilities, point.at_half()), point, seed)
    # The CLI contract reads these at top level: they are the figures at the shipped operating point.
    top = report["at_operating_point"]
    for key in ("accuracy", "accuracy_ci", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci",
                "per_class", "confusion_matrix"):
        if key in top:
            report[key] = top[key]
    report["threshold"] = point.threshold
    return report


def _decision_metrics(y_true: np.ndarray, y_pred: np.ndarray, point: OperatingPoint, seed: int) -> dict:
    classes = point.classes
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    out = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "macro_f1": float(np.mean(f1)),
    }
    if point.normal_index is not None:
        truth = y_true != point.normal_index
        called = y_pred != point.normal_index
        out["sensitivity"] = _ratio(np.sum(truth & called), np.sum(truth))
        out["specificity"] = _ratio(np.sum(~truth & ~called), np.sum(~truth))
        out["precision"] = _ratio(np.sum(truth & called), np.sum(called))
        # F1 from counts: defined (0) even when nothing was called abnormal and precision is undefined.
        tp = np.sum(truth & called)
        wrong = np.sum(truth != called)
        out["f1"] = float(2 * tp / (2 * tp + wrong)) if tp + wrong > 0 else None
    intervals = _bootstrap_decisions(y_true, y_pred, point.normal_index, seed)
    out.update({f"{k}_ci": v for k, v in intervals.items()})
    return out


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
            samples["sensitivity"] = tp / (tp + fn)
            samples["specificity"] = tn / (tn + fp)
            samples["precision"] = tp / (tp + fp)
            samples["f1"] = 2 * tp / (2 * tp + fp + fn)
    return {k: _percentile_interval(v) for k, v in samples.items()}


def _auc_with_interval(y_true: np.ndarray, probabilities: np.ndarray, seed: int):
    def auc_of(t, p):
        if len(np.unique(t)) < 2:
            return np.nan
        if p.shape[1] == 2:
            return roc_auc_score(t, p[:, 1])
        present = np.unique(t)
        if len(present) < p.shape[1]:
            return np.nan
        return roc_auc_score(t, p, multi_class="ovr", average="macro")

    auc = auc_of(y_true, probabilities)
    if np.isnan(auc):
        return None, None
    samples = [auc_of(y_true[i], probabilities[i]) for i in _bootstrap_indices(len(y_true), seed)]
    return float(auc), _percentile_interval(np.asarray(samples, dtype=np.float64))


def _percentile_interval(samples: np.ndarray) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def _ratio(numerator, denominator) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]
