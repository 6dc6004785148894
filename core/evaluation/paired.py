"""Two models read on the same films, compared film by film: is one really better, or is the gap noise?

Side-by-side intervals overlap far more often than a difference is in doubt, because both models meet the same
hard and easy films; a paired comparison resamples the films once for both (a review: Compare had no such test).
Each difference (first model minus second) gets a 95 % paired bootstrap interval over films, and the calls at each
model's own operating point McNemar's exact test on the films where exactly one of them was right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from core.evaluation.metrics import patient_weights, resampled_aucs
from core.store.base import Interval


@dataclass(frozen=True)
class FilmScores:
    """One model's reading of a folder, film by film (abnormal against normal, at its operating point); ``keys``
    name the films inside the folder, so two models' readings line up even when one of them skipped a film."""
    keys: tuple[str, ...]
    positive: tuple[bool, ...]  # the film's folder is an abnormal class
    scores: tuple[float, ...]  # 1 - p(normal)
    called: tuple[bool, ...]  # abnormal at the model's threshold (urgent)


@dataclass(frozen=True)
class PairedDifference:
    n: int  # films both models read
    abnormal: int
    auc: float | None  # first minus second; None without films of both kinds
    auc_ci: Interval | None
    sensitivity: float | None
    sensitivity_ci: Interval | None
    specificity: float | None
    specificity_ci: Interval | None
    first_only_right: int  # films the first model called right and the second wrong
    second_only_right: int
    p_value: float  # McNemar's exact test on those two counts (1.0 when there are none)


def paired_difference(first: FilmScores, second: FilmScores, seed: int = 0) -> PairedDifference | None:
    """The second model's figures subtracted from the first's on the films both read; None when they share none."""
    where = {key: i for i, key in enumerate(second.keys)}
    shared = [(i, where[key]) for i, key in enumerate(first.keys) if key in where]
    if not shared:
        return None
    a, b = (np.array([i for i, _ in shared]), np.array([j for _, j in shared]))
    positive = np.asarray(first.positive, dtype=bool)[a]
    if not np.array_equal(positive, np.asarray(second.positive, dtype=bool)[b]):
        raise ValueError("the two readings label the same films differently")
    scores = [np.asarray(first.scores, dtype=np.float64)[a], np.asarray(second.scores, dtype=np.float64)[b]]
    called = [np.asarray(first.called, dtype=bool)[a], np.asarray(second.called, dtype=bool)[b]]
    weights = patient_weights([str(k) for k in range(len(shared))], seed)  # one "patient" per film: films resampled
    auc = ci = None
    if 0 < positive.sum() < len(positive):
        one, two = (resampled_aucs(positive, s, np.ones((1, len(s))))[0] for s in scores)
        auc, ci = float(one - two), _interval(resampled_aucs(positive, scores[0], weights)
                                              - resampled_aucs(positive, scores[1], weights))
    sensitivity, sensitivity_ci = _share_difference(called, positive, weights)
    specificity, specificity_ci = _share_difference([~c for c in called], ~positive, weights)
    right = [c == positive for c in called]
    first_only, second_only = int(np.sum(right[0] & ~right[1])), int(np.sum(right[1] & ~right[0]))
    p_value = binomtest(first_only, first_only + second_only).pvalue if first_only + second_only else 1.0
    return PairedDifference(n=len(shared), abnormal=int(positive.sum()), auc=auc, auc_ci=ci,
                            sensitivity=sensitivity, sensitivity_ci=sensitivity_ci, specificity=specificity,
                            specificity_ci=specificity_ci, first_only_right=first_only, second_only_right=second_only,
                            p_value=float(min(1.0, p_value)))


def verdict(diff: PairedDifference, first: str, second: str) -> str:
    """In words: which model the films favour, on ranking (the AUC interval) and on its calls (McNemar)."""
    said = []
    if diff.auc_ci and (diff.auc_ci[0] > 0 or diff.auc_ci[1] < 0):
        said.append(f"{first if diff.auc_ci[0] > 0 else second} ranks these films better")
    if diff.p_value < 0.05:
        said.append(f"{first if diff.first_only_right > diff.second_only_right else second} calls more of them "
                    f"right (p = {diff.p_value:.3g})")
    return "; ".join(said) if said else "No difference shown on these films"


def _share_difference(called: list[np.ndarray], among: np.ndarray, weights: np.ndarray
                      ) -> tuple[float | None, Interval | None]:
    """The difference of the share of ``among`` films each model called, with its paired resampled interval."""
    if not among.any():
        return None, None
    share = [float(np.mean(c[among])) for c in called]
    with np.errstate(invalid="ignore", divide="ignore"):
        drawn = [(weights @ (c & among)) / (weights @ among) for c in called]
    return share[0] - share[1], _interval(drawn[0] - drawn[1])


def _interval(samples: np.ndarray) -> Interval | None:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))
