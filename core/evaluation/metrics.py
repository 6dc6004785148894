"""Evaluation: scikit-learn metrics at the operating point and at 0.5, with 95 % intervals.

"Abnormal" means any class that is not the normal class; its score is 1 - p(normal). Binary metrics
(sensitivity, specificity) are abnormal-vs-normal; per-class precision/recall/F1 use the decided label, and
``flag_recall`` is each abnormal class's share of films called abnormal (triage sensitivity per class).
With more than two classes a report adds one-vs-rest AUCs and curves per class and the reading by the most
probable class (``at_argmax``, how published multi-class accuracy is measured) and each abnormal class against
the normal class alone (``against_normal``, how a two-class seed of that pair is measured); films from two
sources or more get figures per source. Films of a subset of the model's classes are measured over the classes present.

Intervals of proportions of films (accuracy, sensitivity, specificity, precision, each class's recall and flag
recall) are Wilson score intervals of their counts (core.evaluation.shares, from the confusion matrix alone):
a percentile bootstrap cannot reach past what it resamples, so 37 of 37 films read right gave "100 % (100-100)".
AUCs and F1 come from resamples (``N_BOOTSTRAP`` draws of films with replacement, made once per report and kept as
how often each film was drawn), each figure computed for all resamples at once. Films are resampled one by one,
though a patient may have several (773 pneumonia films of 326 patients in the shared validation split): drawing
patients instead (:func:`patient_weights`, bench/patient_intervals.py) moved no end of five shipped models'
AUC, sensitivity and specificity intervals by more than 0.61 points, on validation and on a held-out batch
(docs/measurements.md): their errors hardly cluster by patient, so reports keep resampling films.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from core.evaluation.reported import few_films_widened, widened_for_few
from core.evaluation.shares import count_intervals, wilson_of
from core.store.reports import (ClassMetrics, DecisionMetrics, OperatingPoint, PairFigures, Report, Roc,
                                SourceFigures)

N_BOOTSTRAP = 1000
AUC_CHUNK = 100  # resamples whose AUCs are computed at once


def evaluate_probabilities(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str] | tuple[str, ...], point: OperatingPoint,
    seed: int = 0, split: str = "", sources: Sequence[str] | None = None,
) -> Report:
    """The report of these films' probabilities read at ``point``; ``sources``: one data source per film."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = list(classes)
    weights = _bootstrap_weights(len(y_true), seed)
    aucs = few_films_widened(_aucs(y_true, probabilities, weights, classes, point.normal_index), y_true, classes,
                             point.normal_index)
    roc = None
    is_abnormal = None if point.normal_index is None else (y_true != point.normal_index).astype(int)
    if is_abnormal is not None and 0 < is_abnormal.sum() < len(is_abnormal):  # a curve needs both kinds
        roc = _roc(is_abnormal, point.abnormal_scores(probabilities))
    several = len(classes) > 2
    decided = point.decide(probabilities)
    return Report(
        n=int(len(y_true)), classes=classes,
        class_counts=np.bincount(y_true, minlength=len(classes)).tolist(),
        operating_point=point, auc=aucs.auc, auc_ci=aucs.auc_ci, roc=roc,
        at_operating_point=_decision_metrics(y_true, decided, point, weights),
        at_half=_decision_metrics(y_true, point.at_half().decide(probabilities), point, weights),
        split=split,
        class_auc=aucs.class_auc if several else None,
        class_auc_ci=aucs.class_auc_ci if several else None,
        class_roc={classes[k]: _roc((y_true == k).astype(int), probabilities[:, k])
                   for k in _both_kinds(y_true, len(classes))} if several else None,
        at_argmax=_decision_metrics(y_true, probabilities.argmax(axis=1), point, weights) if several else None,
        by_source=_by_source(y_true, decided, point, sources),
        against_normal=_against_normal(y_true, probabilities, classes, point.normal_index, weights)
        if several and point.normal_index is not None else None,
    )


def _against_normal(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str], normal: int,
                    weights: np.ndarray) -> dict[str, PairFigures]:
    """Each abnormal class with films here against the normal class alone (see PairFigures): its films and the
    normal films, each called by the larger of the two probabilities; the accuracy's Wilson interval, the AUC's
    from the report's resamples restricted to these films."""
    figures = {}
    for k in range(len(classes)):
        if k == normal or not np.any(y_true == k):
            continue
        mine = (y_true == k) | (y_true == normal)
        positive = y_true[mine] == k
        pair = probabilities[mine][:, [normal, k]]
        with np.errstate(invalid="ignore", divide="ignore"):  # both probabilities 0: a tie, scored 0.5
            score = np.nan_to_num(pair[:, 1] / pair.sum(axis=1), nan=0.5)
        # a tie is called normal here (an operating point, read with >=, calls a film at its threshold abnormal)
        right = (pair[:, 1] > pair[:, 0]) == positive
        drawn = weights[:, mine]
        both = bool(positive.any() and (~positive).any())
        figures[classes[k]] = PairFigures(
            n=int(mine.sum()), class_counts={classes[k]: int(positive.sum()), classes[normal]: int((~positive).sum())},
            accuracy=float(right.mean()), accuracy_ci=wilson_of(int(right.sum()), int(mine.sum())),
            auc=float(roc_auc_score(positive, score)) if both else None,
            auc_ci=widened_for_few(float(roc_auc_score(positive, score)),
                                   percentile_interval(_weighted_auc(positive, score, drawn)),
                                   int(positive.sum()), int((~positive).sum())) if both else None,
        )
    return figures


def _decision_metrics(y_true: np.ndarray, y_pred: np.ndarray, point: OperatingPoint, weights: np.ndarray
                      ) -> DecisionMetrics:
    classes, normal = point.classes, point.normal_index
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    binary = {}
    if normal is not None:
        truth = y_true != normal
        called = y_pred != normal
        tp, wrong = np.sum(truth & called), np.sum(truth != called)
        binary = {
            "sensitivity": _ratio(tp, np.sum(truth)),
            "specificity": _ratio(np.sum(~truth & ~called), np.sum(~truth)),
            "precision": _ratio(tp, np.sum(called)),
            # F1 from counts: defined (0) even when nothing was called abnormal and precision is undefined; not on
            # films with no abnormal one, where it is 0 at the first false alarm (a review: "0.000 (0.000-0.885)")
            "f1": float(2 * tp / (2 * tp + wrong)) if tp + wrong > 0 and truth.any() else None,
            "flag_recall": {classes[k]: float(np.mean(called[y_true == k]))
                            for k in labels if k != normal and support[k]},
        }
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    intervals, recall_ci, flag_ci = count_intervals(confusion, normal)
    if normal is not None:
        intervals["f1"] = _f1_interval(y_true != normal, y_pred != normal, weights) if binary["f1"] is not None \
            else None
    # Macro F1 over the classes these films hold: a class with no film here has no F1 of its own (the per-class
    # table says "no films"); a stray call into it already costs the true class its recall (a review: counted
    # as 0, as scikit-learn's default does, it read 0.316 for 18 of 20 pneumonia films called right)
    seen = support > 0
    return DecisionMetrics(
        accuracy=float(np.mean(y_true == y_pred)),
        confusion_matrix=confusion.tolist(),
        per_class={name: ClassMetrics(precision=float(p), recall=float(r), f1=float(f), support=int(n),
                                      recall_ci=recall_ci.get(k))
                   for k, (name, p, r, f, n) in enumerate(zip(classes, precision, recall, f1, support))},
        macro_f1=float(np.mean(f1[seen])),
        **binary, **{f"{k}_ci": v for k, v in intervals.items()},
        flag_recall_ci=None if normal is None else {classes[k]: v for k, v in flag_ci.items()},
    )


def _by_source(y_true: np.ndarray, decided: np.ndarray, point: OperatingPoint, sources: Sequence[str] | None
               ) -> dict[str, SourceFigures]:
    """Figures at the operating point per data source, when the films come from two sources or more."""
    if sources is None:
        return {}
    sources = np.asarray(sources, dtype=object)
    if sources.shape != y_true.shape:
        raise ValueError(f"{len(sources)} sources were given for {len(y_true)} films")
    names = sorted(set(sources.tolist()))
    if len(names) < 2:
        return {}
    classes, normal = point.classes, point.normal_index
    figures = {}
    for name in names:
        mine = sources == name
        truth, called = y_true[mine], decided[mine]
        present = [k for k in range(len(classes)) if np.any(truth == k)]
        figures[str(name)] = SourceFigures(
            n=int(mine.sum()), class_counts={classes[k]: int(np.sum(truth == k)) for k in present},
            accuracy=float(np.mean(truth == called)),
            flagged=None if normal is None else float(np.mean(called != normal)),
            recall={classes[k]: float(np.mean(called[truth == k] == k)) for k in present},
        )
    return figures


def _bootstrap_indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(N_BOOTSTRAP, n))


def _bootstrap_weights(n: int, seed: int) -> np.ndarray:
    """How many times each film is drawn in each resample of :func:`_bootstrap_indices` (N_BOOTSTRAP x n, as
    4-byte floats: exact for these counts, and for their sums to 16 million). A resample's figure is then a weighted
    sum: counts are one matrix product, an AUC one sort of the films instead of a thousand. The same draws, made
    AUC_CHUNK resamples at a time: all at once, a 100,000-film folder took 2.4 GB (a resource review)."""
    rng, weights = np.random.default_rng(seed), np.empty((N_BOOTSTRAP, n), dtype=np.float32)
    for first in range(0, N_BOOTSTRAP, AUC_CHUNK):
        rows = min(AUC_CHUNK, N_BOOTSTRAP - first)
        drawn = rng.integers(0, n, size=(rows, n)) + np.arange(rows)[:, None] * n
        weights[first : first + rows] = np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n)
    return weights


def film_weights(n: int, seed: int) -> np.ndarray:
    """Each resample's count of each of ``n`` films (resamples x films), as every report's intervals draw them."""
    return _bootstrap_weights(n, seed)


def patient_weights(patients: Sequence[str], seed: int) -> np.ndarray:
    """Like :func:`_bootstrap_weights`, resampling patients instead of films (a cluster bootstrap): each resample
    draws as many patients as there are, with replacement, and each film counts as often as its patient was
    drawn, so a patient's films are always in or out together. One patient per film gives film resampling."""
    names, patient_of = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    rows = np.arange(N_BOOTSTRAP)[:, None] * len(names)
    drawn = np.random.default_rng(seed).integers(0, len(names), size=(N_BOOTSTRAP, len(names)))
    counts = np.bincount((rows + drawn).ravel(), minlength=N_BOOTSTRAP * len(names)).reshape(N_BOOTSTRAP, -1)
    return counts[:, patient_of].astype(np.float64)


def resampled_aucs(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each resample's ROC AUC for resample weights (resamples x films, as :func:`patient_weights` gives)."""
    return _weighted_auc(np.asarray(positive, dtype=bool), np.asarray(scores, dtype=np.float64), weights)


def _f1_interval(truth: np.ndarray, called: np.ndarray, weights: np.ndarray) -> list[float] | None:
    """The abnormal-vs-normal F1's interval from the report's resamples (F1 is not a share of films)."""
    columns = np.stack([truth & called, truth != called], axis=1).astype(weights.dtype)  # no float64 copy of weights
    tp, wrong = (weights @ columns).astype(np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):  # resamples with neither: NaN, left out
        return percentile_interval(2 * tp / (2 * tp + wrong))


class _Aucs(NamedTuple):
    auc: float | None
    auc_ci: list[float] | None
    class_auc: dict[str, float]
    class_auc_ci: dict[str, list[float] | None]


def _aucs(y_true: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, classes: list[str] | None = None,
          normal: int | None = None) -> _Aucs:
    """The headline AUC (binary: of the abnormal score 1 - p(normal), the one the curve and the operating point
    read, or without a normal class of the second class's probability; more classes: scikit-learn's macro
    one-vs-rest, only when every class has films) and, for more than two classes, one-vs-rest AUC per class
    with films of both kinds; each with its bootstrap interval, all resamples computed at once."""
    n_classes = probabilities.shape[1]
    classes = classes or [str(k) for k in range(n_classes)]
    if n_classes == 2:
        if len(np.unique(y_true)) < 2:
            return _Aucs(None, None, {}, {})
        # not p(abnormal) itself: a float32 softmax rounds it to 1.0 past a logit gap of about 17, where
        # 1 - p(normal) still orders the films, so the stated AUC differed from the curve's area (a review)
        positive, score = (y_true == 1, probabilities[:, 1]) if normal is None else \
            (y_true != normal, 1.0 - probabilities[:, normal])
        samples = _weighted_auc(positive, score, weights)
        return _Aucs(float(roc_auc_score(positive, score)), percentile_interval(samples), {}, {})
    per_class = {k: _weighted_auc(y_true == k, probabilities[:, k], weights) for k in _both_kinds(y_true, n_classes)}
    class_auc = {classes[k]: float(roc_auc_score(y_true == k, probabilities[:, k])) for k in per_class}
    class_ci = {classes[k]: percentile_interval(v) for k, v in per_class.items()}
    if len(per_class) < n_classes:
        return _Aucs(None, None, class_auc, class_ci)
    auc = roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")
    # macro: the mean of every class's AUC against the others (NaN in a resample that lacks a class)
    return _Aucs(float(auc), percentile_interval(np.mean(list(per_class.values()), axis=0)), class_auc, class_ci)


def _auc_with_interval(y_true: np.ndarray, probabilities: np.ndarray, seed: int):
    """The headline AUC and its bootstrap 95 % interval."""
    aucs = _aucs(y_true, probabilities, _bootstrap_weights(len(y_true), seed))
    return aucs.auc, aucs.auc_ci


def _both_kinds(y_true: np.ndarray, n_classes: int) -> list[int]:
    """Classes with films both of them and of others here: where a one-vs-rest AUC or curve exists."""
    counts = np.bincount(y_true, minlength=n_classes)
    return [k for k in range(n_classes) if 0 < counts[k] < len(y_true)]


def _roc(positive: np.ndarray, scores: np.ndarray) -> Roc:
    fpr, tpr, thresholds = roc_curve(positive, scores)
    return Roc(fpr=_round(fpr), tpr=_round(tpr), thresholds=_round(np.minimum(thresholds, 1.0)))


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each resample's ROC AUC as the Mann-Whitney statistic with films counted as often as they were drawn
    (ties count half), which is scikit-learn's AUC of that resample; NaN where a resample lacks either kind.
    The films are sorted once; per resample it is a sum over the distinct scores."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # one group per distinct score
    is_positive, aucs = positive[order], np.empty(len(weights))
    # AUC_CHUNK resamples at a time: the five resamples x films copies below, for all 1,000 at once, took 1.1 GB
    # for a 20,000-film folder (a review)
    for first in range(0, len(weights), AUC_CHUNK):
        drawn = weights[first : first + AUC_CHUNK, order].astype(np.float64, copy=False)  # sums past 2**24
        pos = np.add.reduceat(drawn * is_positive, starts, axis=1)
        neg = np.add.reduceat(drawn * ~is_positive, starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negatives scoring lower than each group
        wins = np.sum(pos * (below + 0.5 * neg), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs[first : first + AUC_CHUNK] = wins / (pos.sum(axis=1) * neg.sum(axis=1))
    return aucs


def percentile_interval(samples: np.ndarray) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def _ratio(numerator, denominator) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]
