"""Two models read on the same films, compared film by film: is one really better, or is the gap noise?

Side-by-side intervals overlap far more often than a difference is in doubt, because both models meet the same
hard and easy films; a paired comparison accounts for that (a review: Compare had no such test). Each difference
is the first model's figure minus the second's, with a 95 % interval:

- AUC: resampling the shared films once for both models (as every report's intervals resample films); with fewer
  than 20 films of a kind, no narrower than the two Hanley-McNeil errors combined as if the models were unrelated
  (an upper bound: two readings of the same films go together), as a single AUC's interval is widened there;
- sensitivity and specificity at each model's own threshold: Newcombe's interval for a difference of paired
  proportions (his method 10, from Wilson intervals), so a handful of films never reads as certain, and McNemar's
  exact test on the films of that kind only one of the two called right: do they lean one way more than chance?

The same test on all films together is given too; it weighs accuracy at this folder's own mix of abnormal and
normal films, so the verdict (:func:`verdict`) leaves it out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from core.evaluation.metrics import film_weights, percentile_interval, resampled_aucs
from core.evaluation.reported import SMALL_CLASS, hanley_mcneil_interval, wilson_interval
from core.store.base import Interval


@dataclass(frozen=True)
class FilmScores:
    """One model's reading of a folder, film by film (abnormal against normal, at its operating point); ``keys``
    name the films inside the folder, so two models' readings line up even when one of them skipped a film."""
    keys: tuple[str, ...]
    positive: tuple[bool, ...]  # the film's folder is an abnormal class
    scores: tuple[float, ...]  # 1 - p(normal)
    called: tuple[bool, ...]  # abnormal at the model's threshold (urgent)

    def __post_init__(self) -> None:
        if not len(self.keys) == len(self.positive) == len(self.scores) == len(self.called):
            raise ValueError("a reading gives every film a key, a label, a score and a call")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("a reading names each film once")
        if not all(math.isfinite(s) for s in self.scores):
            raise ValueError("a reading's scores are finite numbers")


@dataclass(frozen=True)
class PairedDifference:
    n: int  # films both models read
    abnormal: int
    auc: float | None  # first minus second; None without films of both kinds
    auc_ci: Interval | None
    sensitivity: float | None
    sensitivity_ci: Interval | None
    sensitivity_p: float | None  # McNemar's exact test on the abnormal films only one of the two called urgent
    specificity: float | None
    specificity_ci: Interval | None
    specificity_p: float | None  # and on the normal films only one called routine
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
    auc = ci = None
    abnormal, normal = int(positive.sum()), int((~positive).sum())
    if abnormal and normal:
        one, two = (float(resampled_aucs(positive, s, np.ones((1, len(s))))[0]) for s in scores)
        weights = film_weights(len(shared), seed)
        auc, ci = one - two, _interval(resampled_aucs(positive, scores[0], weights)
                                       - resampled_aucs(positive, scores[1], weights))
        if ci is not None and min(abnormal, normal) < SMALL_CLASS:
            half = math.hypot(*(_hanley_mcneil_half(v, abnormal, normal) for v in (one, two)))
            ci = (max(-1.0, min(ci[0], auc - half)), min(1.0, max(ci[1], auc + half)))
    sensitivity, sensitivity_ci, sensitivity_p = _paired_shares(called, positive)
    specificity, specificity_ci, specificity_p = _paired_shares([~c for c in called], ~positive)
    right = [c == positive for c in called]
    first_only, second_only = int(np.sum(right[0] & ~right[1])), int(np.sum(right[1] & ~right[0]))
    return PairedDifference(n=len(shared), abnormal=abnormal, auc=auc, auc_ci=ci, sensitivity=sensitivity,
                            sensitivity_ci=sensitivity_ci, sensitivity_p=sensitivity_p, specificity=specificity,
                            specificity_ci=specificity_ci, specificity_p=specificity_p, first_only_right=first_only,
                            second_only_right=second_only, p_value=_mcnemar(first_only, second_only))


def verdict(diff: PairedDifference, first: str, second: str) -> str:
    """In words, what the films show of the two models: a ranking whose AUC interval leaves out 0, and a sensitivity
    or specificity whose films only one model called right lean one way (McNemar's exact test within that kind of
    film, p < 0.05: a handful of films never suffices), a trade-off said as one; otherwise that no difference is
    shown, which does not show the two are equal. The test on all films together is left out: it weighs the two
    kinds by this folder's mix of them."""
    def leads(value: float | None, p_value: float | None) -> str | None:
        return None if value is None or p_value is None or p_value >= 0.05 or value == 0 else \
            (first if value > 0 else second)

    ranks = None if not diff.auc_ci or diff.auc_ci[0] <= 0 <= diff.auc_ci[1] else (first if diff.auc > 0 else second)
    finds, spares = leads(diff.sensitivity, diff.sensitivity_p), leads(diff.specificity, diff.specificity_p)
    said = ([f"{ranks} ranks these films better (AUC)"] if ranks else []) + (
        [f"{finds} calls more abnormal films urgent (sensitivity, p = {diff.sensitivity_p:.2g})"] if finds else []) + (
        [f"{spares} calls more normal films routine (specificity, p = {diff.specificity_p:.2g})"] if spares else [])
    if not said:
        return "No difference shown on these films (which does not show the two are equal)"
    return ("A trade-off: " if finds and spares and finds != spares else "") + "; ".join(said)


def _paired_shares(called: list[np.ndarray], among: np.ndarray
                   ) -> tuple[float | None, Interval | None, float | None]:
    """The difference of the shares of ``among`` films the two models called, with Newcombe's interval for paired
    proportions (method 10, with its corrected correlation; Statistics in Medicine 1998): Wilson's interval of each
    share, joined through the correlation of the two calls. Two identical readings get an interval about 0, not
    none: a few films bound the difference no better than they bound each share."""
    n = int(among.sum())
    if not n:
        return None, None, None
    one, two = called[0][among], called[1][among]
    both, first_only = int(np.sum(one & two)), int(np.sum(one & ~two))
    second_only, neither = int(np.sum(~one & two)), int(np.sum(~one & ~two))
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    (l1, u1), (l2, u2) = wilson_interval(p1, n), wilson_interval(p2, n)
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    agreement = both * neither - first_only * second_only
    agreement = max(0.0, agreement - n / 2) if agreement > 0 else agreement  # Newcombe's continuity correction
    phi = agreement / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return p1 - p2, (max(-1.0, p1 - p2 - below), min(1.0, p1 - p2 + above)), _mcnemar(first_only, second_only)


def _mcnemar(first_only: int, second_only: int) -> float:
    """McNemar's exact (binomial, two-sided) p-value on the films only one of two readings has; 1 with none."""
    return float(min(1.0, binomtest(first_only, first_only + second_only).pvalue)) if first_only + second_only else 1.0


def _hanley_mcneil_half(auc: float, abnormal: int, normal: int) -> float:
    """Half the width of Hanley-McNeil's 95 % interval (its unclipped side)."""
    low, high = hanley_mcneil_interval(min(1.0, max(0.0, auc)), abnormal, normal)
    return max(auc - low, high - auc)


def _interval(samples: np.ndarray) -> Interval | None:
    """The resampled differences' 95 % percentile interval, as every report's (core.evaluation.metrics)."""
    interval = percentile_interval(samples)
    return None if interval is None else (interval[0], interval[1])
