"""Metrics and the operating point against values worked out by hand on ten films."""
from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.metrics import evaluate_probabilities
from core.evaluation.shares import with_count_intervals
from core.store.reports import ClassMetrics, OperatingPoint, Report
from core.tasks import find_normal_index
from core.limits import THRESHOLD_MARGIN
from core.training.operating_point import choose_operating_point

CLASSES = ["NORMAL", "PNEUMONIA"]
# Ten films: five normal, five pneumonia, with the model's p(PNEUMONIA) (= the abnormal score).
TRUTH = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
SCORES = np.array([0.10, 0.20, 0.35, 0.60, 0.05, 0.90, 0.80, 0.55, 0.30, 0.70])
PROBS = np.stack([1 - SCORES, SCORES], axis=1)


def point_at(threshold: float, classes=CLASSES, normal_index: int | None = 0) -> OperatingPoint:
    return OperatingPoint(classes=tuple(classes), normal_index=normal_index, threshold=threshold)


def pair_counting_auc(truth, scores):
    """AUC as the share of (abnormal, normal) pairs the scores order correctly, ties counting half."""
    positives, negatives = scores[truth == 1], scores[truth == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@pytest.fixture(scope="module")
def report_at_half():
    return evaluate_probabilities(TRUTH, PROBS, CLASSES, point_at(0.5))


def test_hand_case_at_threshold_half(report_at_half):
    # called abnormal (score >= 0.5): normals 0.60 (FP); pneumonias 0.90 0.80 0.55 0.70 (TP), 0.30 missed (FN)
    report = report_at_half
    assert isinstance(report, Report)
    assert report.n == 10 and report.class_counts == [5, 5] and report.classes == CLASSES
    assert report.confusion_matrix == [[4, 1], [1, 4]]
    assert report.accuracy == pytest.approx(0.8)
    assert report.sensitivity == pytest.approx(0.8)
    assert report.specificity == pytest.approx(0.8)
    assert isinstance(report.per_class["NORMAL"], ClassMetrics)
    assert report.per_class["NORMAL"].model_dump(exclude={"recall_ci"}) == pytest.approx(
        {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 5})
    low, high = report.per_class["NORMAL"].recall_ci
    assert 0.0 <= low < 0.8 < high <= 1.0  # five films: a wide interval around the recall
    assert report.threshold == 0.5


def test_hand_case_in_the_cli_json(report_at_half):
    """The same figures under the CLI's old keys, and the JSON reads back to the same report."""
    data = report_at_half.to_json()
    assert data["n"] == 10 and data["threshold"] == 0.5
    assert data["confusion_matrix"] == data["at_0.5"]["confusion_matrix"] == [[4, 1], [1, 4]]
    assert (data["accuracy"], data["sensitivity"], data["specificity"]) == pytest.approx((0.8, 0.8, 0.8))
    assert data["per_class"]["PNEUMONIA"] == pytest.approx({"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 5,
                                                            "recall_ci": list(report_at_half.per_class["PNEUMONIA"].recall_ci)})
    assert data["operating_point"]["normal_class"] == "NORMAL"
    assert Report.model_validate(data) == report_at_half


def test_auc_equals_pair_counting(report_at_half):
    assert pair_counting_auc(TRUTH, SCORES) == pytest.approx(22 / 25)  # worked out by hand as well
    assert report_at_half.auc == pytest.approx(22 / 25)


def test_auc_counts_ties_as_half():
    scores = np.array([0.2, 0.5, 0.5, 0.9])
    truth = np.array([0, 0, 1, 1])
    report = evaluate_probabilities(truth, np.stack([1 - scores, scores], 1), CLASSES,
                                    point_at(0.5))
    assert report.auc == pytest.approx(pair_counting_auc(truth, scores)) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("classes", [CLASSES, ["COVID19", "NORMAL"]])
def test_the_auc_stated_is_the_area_under_the_curve_drawn_even_where_softmax_saturates(classes):
    """float32 softmax rounds p(abnormal) to 1.0 past a logit gap of about 17, where 1 - p(normal) still orders
    the films: the stated AUC once read the first and the curve the second (0.900 against 0.967 here)."""
    import torch

    rng = np.random.default_rng(0)
    normal = classes.index("NORMAL")
    abnormal = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    gaps = np.r_[rng.uniform(17, 30, 100), rng.uniform(17, 22, 20), rng.uniform(-10, 0, 80)]  # abnormal - normal
    logits = np.zeros((200, 2), np.float32)
    logits[:, 1 - normal] = gaps
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    truth = np.where(abnormal, 1 - normal, normal)
    report = evaluate_probabilities(truth, probs, classes, point_at(0.5, classes, normal))
    area = float(np.trapezoid(report.roc.tpr, report.roc.fpr))
    assert report.auc == pytest.approx(area, abs=1e-5) and report.auc > 0.95
    assert report.auc_ci[0] <= report.auc <= report.auc_ci[1]
    # and early stopping picks its epoch on that same AUC (the training loop still read p(abnormal): a review)
    from core.films.folders import FilmSet
    from core.training.loop import _auc

    assert _auc(FilmSet((), truth, tuple(classes)), probs) == pytest.approx(report.auc, abs=1e-12)


def test_top_level_figures_are_at_the_operating_point():
    point = point_at(0.25)
    report = evaluate_probabilities(TRUTH, PROBS, CLASSES, point)
    # at 0.25 every pneumonia is called; normals 0.35 and 0.60 are false alarms
    assert report.confusion_matrix == [[3, 2], [0, 5]]
    assert (report.sensitivity, report.specificity, report.accuracy) == pytest.approx((1.0, 0.6, 0.8))
    assert report.threshold == 0.25
    assert report.at_half.confusion_matrix == [[4, 1], [1, 4]]
    assert report.at_operating_point.sensitivity == report.sensitivity
    assert report.at_operating_point.confusion_matrix == report.confusion_matrix


@pytest.mark.parametrize("key", ["accuracy", "sensitivity", "specificity", "auc"])
def test_bootstrap_intervals_are_ordered_and_hold_the_estimate(report_at_half, key):
    low, high = getattr(report_at_half, f"{key}_ci")
    assert 0.0 <= low <= getattr(report_at_half, key) <= high <= 1.0
    assert low < high  # ten films leave real uncertainty


def test_bootstrap_is_reproducible_and_seeded(report_at_half):
    again = evaluate_probabilities(TRUTH, PROBS, CLASSES, point_at(0.5))
    other = evaluate_probabilities(TRUTH, PROBS, CLASSES, point_at(0.5), seed=1)
    assert again.auc_ci == report_at_half.auc_ci
    assert again.accuracy_ci == report_at_half.accuracy_ci
    assert other.auc_ci != report_at_half.auc_ci
    assert other.accuracy_ci == report_at_half.accuracy_ci  # a share of films: from its counts, not resampled


Z2 = 1.959963984540054 ** 2


def test_shares_of_films_get_wilson_intervals_that_do_not_collapse_at_all_or_none():
    """37 abnormal films all flagged and 13 normals all cleared: a resampled interval is 100-100 %, which promises
    certainty; the Wilson interval's lower end at k = n is n / (n + z^2) (z = 1.96), and its upper end at 0 is
    z^2 / (n + z^2). 4 of 5 by the textbook formula: 0.3755-0.9638."""
    truth = np.array([0] * 13 + [1] * 37)
    scores = np.where(truth == 1, 0.9, 0.1)
    report = evaluate_probabilities(truth, np.stack([1 - scores, scores], axis=1), CLASSES, point_at(0.5))
    top = report.at_operating_point
    assert top.sensitivity == 1.0 and top.sensitivity_ci == pytest.approx([37 / (37 + Z2), 1.0])
    assert top.specificity == 1.0 and top.specificity_ci == pytest.approx([13 / (13 + Z2), 1.0])
    assert top.accuracy_ci == pytest.approx([50 / (50 + Z2), 1.0])
    assert top.per_class["NORMAL"].recall_ci == pytest.approx([13 / (13 + Z2), 1.0])
    assert top.precision_ci == pytest.approx([37 / (37 + Z2), 1.0])
    nothing = evaluate_probabilities(truth, np.stack([1 - scores, scores], axis=1) * 0 + [1.0, 0.0], CLASSES,
                                     point_at(0.5)).at_operating_point  # nothing flagged
    assert nothing.sensitivity == 0.0 and nothing.sensitivity_ci == pytest.approx([0.0, Z2 / (37 + Z2)])
    assert nothing.precision is None and nothing.precision_ci is None  # nothing called abnormal: no share
    four_of_five = report_at_half_of(5, 4)
    assert four_of_five == pytest.approx([0.3755, 0.9638], abs=1e-4)


def report_at_half_of(films: int, hits: int) -> list[float]:
    """The sensitivity interval of ``hits`` of ``films`` abnormal films flagged (and one normal film)."""
    truth = np.array([0] + [1] * films)
    scores = np.array([0.1] + [0.9] * hits + [0.1] * (films - hits))
    return evaluate_probabilities(truth, np.stack([1 - scores, scores], axis=1), CLASSES,
                                  point_at(0.5)).sensitivity_ci


def test_roc_curve_runs_from_origin_to_corner(report_at_half):
    roc = report_at_half.roc
    assert (roc.fpr[0], roc.tpr[0]) == (0.0, 0.0)
    assert (roc.fpr[-1], roc.tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    assert max(roc.thresholds) <= 1.0
    assert len(roc.fpr) == len(roc.tpr) == len(roc.thresholds)


@pytest.mark.parametrize("truth", [
    TRUTH,  # both kinds of film, but none reaches the threshold 0.99: no film is called abnormal
    np.zeros(10, dtype=int),  # a folder of normal films only
], ids=["nothing-called-abnormal", "normal-films-only"])
def test_undefined_ratios_are_none_not_a_crash(truth):
    """Sensitivity or precision has no denominator here; the report says None instead of crashing.

    Regression: F1 was once ``sens + prec`` with one of them None (TypeError in weak training runs).
    """
    report = evaluate_probabilities(truth, PROBS, CLASSES, point_at(0.99))
    top = report.at_operating_point
    assert top.precision is None  # nothing called abnormal
    assert top.specificity == 1.0
    if truth.any():
        assert top.sensitivity == 0.0 and report.auc == pytest.approx(22 / 25)
    else:
        assert top.sensitivity is None and report.auc is None and report.auc_ci is None


# --- operating point ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target, threshold, sensitivity, specificity", [
    (0.8, 0.55, 0.8, 0.8),   # sorted pneumonia scores 0.90 0.80 0.70 0.55 | 0.30: the 4th reaches 80 %
    (0.95, 0.30, 1.0, 0.6),  # all five needed: down to 0.30, taking normals 0.35 and 0.60 along
    (0.2, 0.90, 0.2, 1.0),   # one of five is enough: the highest score
])
def test_choose_operating_point_by_hand(target, threshold, sensitivity, specificity):
    point = choose_operating_point(TRUTH, PROBS, CLASSES, target)
    assert point.threshold == pytest.approx(threshold - THRESHOLD_MARGIN, abs=1e-12)  # a hair below that film
    assert point.validation_sensitivity == pytest.approx(sensitivity)
    assert point.validation_specificity == pytest.approx(specificity)
    assert point.normal_index == 0 and point.target_sensitivity == target


@pytest.mark.parametrize("seed", range(5))
def test_operating_point_is_the_highest_threshold_reaching_the_target(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 200)
    scores = np.clip(rng.normal(0.35 + 0.3 * truth, 0.2), 0, 1).round(2)  # rounded: many ties
    probs = np.stack([1 - scores, scores], 1)
    point = choose_operating_point(truth, probs, CLASSES, 0.9)
    abnormal = 1 - probs[:, 0]

    def sensitivity(t):
        return np.mean(abnormal[truth == 1] >= t)

    assert sensitivity(point.threshold) >= 0.9
    higher = np.unique(abnormal[abnormal > point.threshold + 2 * THRESHOLD_MARGIN])  # above the film that set it
    assert all(sensitivity(t) < 0.9 for t in higher)
    called = point.decide(probs) == 1
    assert np.mean(called[truth == 1]) == pytest.approx(point.validation_sensitivity)


@pytest.mark.parametrize("gap", [0.05, 1e-6])
def test_the_threshold_sits_a_hair_below_its_film_and_keeps_every_film_on_its_side(gap):
    """Scored again elsewhere, the film that set the threshold moves by about 1e-7: it must stay urgent, and
    the next lower film (however close) must stay where it was."""
    truth = np.array([0, 0, 1, 1, 1, 1])
    scores = np.array([0.10, 0.50 - gap, 0.50, 0.60, 0.70, 0.80])  # a normal film just under the one that sets it
    point = choose_operating_point(truth, np.stack([1 - scores, scores], 1), CLASSES, 1.0)
    assert point.threshold == pytest.approx(0.50 - min(THRESHOLD_MARGIN, gap / 2), abs=1e-12)
    assert 0.50 - 2e-7 >= point.threshold > 0.50 - gap  # the film scored a little lower is still urgent...
    assert point.validation_sensitivity == 1.0 and point.validation_specificity == 1.0  # ...and nothing moved


def test_operating_point_needs_both_kinds_of_film():
    with pytest.raises(ValueError):
        choose_operating_point(np.zeros(10, dtype=int), PROBS, CLASSES)


def test_operating_point_round_trips_through_json_dict():
    point = choose_operating_point(TRUTH, PROBS, CLASSES, 0.8)
    data = point.to_json()
    assert data["normal_class"] == "NORMAL" and point.normal_class == "NORMAL"
    assert data["threshold"] == pytest.approx(0.55, abs=2 * THRESHOLD_MARGIN) and data["target_sensitivity"] == 0.8
    assert OperatingPoint.model_validate(data) == point


@pytest.mark.parametrize("classes, index", [
    (("NORMAL", "PNEUMONIA"), 0),
    (("Covid", "Normal", "Viral Pneumonia"), 1),
    (("No Finding", "Effusion"), 0),
    (("healthy", "sick"), 0),
    (("Normal", "NORMAL"), None),  # ambiguous
    (("Cat", "Dog"), None),
    (("abnormal", "other"), None),
])
def test_find_normal_index(classes, index):
    assert find_normal_index(classes) == index


def test_decide_three_classes_by_hand():
    point = point_at(0.6, ("Covid", "Normal", "Viral"), 1)
    probs = np.array([
        [0.50, 0.30, 0.20],  # abnormal 0.70 >= 0.6 -> the likelier abnormal class, Covid
        [0.30, 0.45, 0.25],  # abnormal 0.55 <  0.6 -> Normal
        [0.10, 0.30, 0.60],  # abnormal 0.70 -> Viral
        [0.35, 0.40, 0.25],  # abnormal 0.60 reaches the threshold -> Covid, although Normal is most likely
    ])
    assert point.decide(probs).tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(point.abnormal_scores(probs), [0.70, 0.55, 0.70, 0.60])


def test_no_normal_class_means_argmax():
    point = choose_operating_point(np.array([0, 1, 2]), np.eye(3), ["Cat", "Dog", "Cow"])
    assert point.normal_index is None
    assert point.decide(np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])).tolist() == [1, 0]
    report = evaluate_probabilities(np.array([1, 0]), np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]),
                                    ["Cat", "Dog", "Cow"], point)
    assert report.accuracy == 1.0
    # no normal class: no abnormal-vs-normal figures and no ROC curve, at either reading
    assert report.sensitivity is None and report.specificity is None and report.roc is None
    assert report.at_operating_point.sensitivity is None and report.at_half.precision is None


@pytest.mark.parametrize("classes", [2, 3])
def test_bootstrap_auc_interval_equals_one_sklearn_call_per_resample(classes):
    """The all-resamples-at-once interval is the one a loop of roc_auc_score calls gives (ties included), and so
    is every resample's AUC counted from how often each film was drawn."""
    from sklearn.metrics import roc_auc_score

    from core.evaluation.metrics import (N_BOOTSTRAP, _auc_with_interval, _bootstrap_indices, _bootstrap_weights,
                                         _weighted_auc)

    rng = np.random.default_rng(7)
    y = rng.integers(0, classes, 45)
    probs = np.round(rng.random((45, classes)), 2) + 0.01  # many ties
    probs /= probs.sum(axis=1, keepdims=True)
    samples, first_class = [], []
    for i in _bootstrap_indices(len(y), seed=3):
        first_class.append(roc_auc_score(y[i] == 0, probs[i, 0]) if 0 < np.sum(y[i] == 0) < len(i) else np.nan)
        if len(np.unique(y[i])) < classes:
            continue
        samples.append(roc_auc_score(y[i], probs[i, 1]) if classes == 2
                       else roc_auc_score(y[i], probs[i], multi_class="ovr", average="macro"))
    assert len(samples) > N_BOOTSTRAP * 0.9
    np.testing.assert_allclose(_weighted_auc(y == 0, probs[:, 0], _bootstrap_weights(len(y), seed=3)), first_class,
                               atol=1e-12)
    auc, interval = _auc_with_interval(y, probs, seed=3)
    np.testing.assert_allclose(interval, np.percentile(samples, [2.5, 97.5]), atol=1e-12)


@pytest.mark.parametrize("classes", [CLASSES, ["COVID-19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]])
def test_intervals_re_read_from_a_reports_counts_are_the_ones_it_has(classes):
    """What re-reads a stored report's intervals from its confusion matrices gives a fresh report's own, to the
    bit; a report with stale (resampled) shares gets them replaced, its AUC and F1 intervals kept."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, len(classes), 200)
    probs = rng.dirichlet(np.ones(len(classes)), 200) + np.eye(len(classes))[truth] * rng.random((200, 1))
    probs /= probs.sum(axis=1, keepdims=True)
    report = evaluate_probabilities(truth, probs, classes, point_at(0.4, classes, classes.index("NORMAL")))
    assert with_count_intervals(report).to_json() == report.to_json()
    stale = report.model_copy(update={"at_operating_point": report.at_operating_point.model_copy(
        update={"specificity_ci": [1.0, 1.0], "accuracy_ci": [0.5, 0.5]})})
    assert with_count_intervals(stale).to_json() == report.to_json()


def test_a_perfect_auc_gets_the_interval_its_films_allow_not_none():
    """Every resample of perfectly separated films gives AUC 1, so the percentile interval was (1, 1) and the card
    read "no interval: too few films", whatever the films (the shipped COVID-19 card, 24 + 13 films: a review).
    Such an interval is replaced by Hanley-McNeil's from the films per class, stored reports included."""
    from conftest import REPO
    from core.evaluation.reported import hanley_mcneil_interval
    from core.store.records import read_model_record

    report = read_model_record(REPO / "checkpoints" / "covid-cnn5-v1.json").report
    counts = dict(zip(report.classes, report.class_counts))
    n = sum(counts.values())
    covid = hanley_mcneil_interval(1.0, counts["COVID-19"], n - counts["COVID-19"])
    assert report.class_auc_ci["COVID-19"] == pytest.approx(covid) and covid[0] < 0.999
    pair = report.against_normal["COVID-19"]
    assert pair.auc_ci == pytest.approx(hanley_mcneil_interval(1.0, *pair.class_counts.values()))
    lows = [hanley_mcneil_interval(1.0, k, n - k)[0] for k in counts.values()]  # macro: the classes' mean
    assert report.auc == 1.0 and report.auc_ci == pytest.approx((sum(lows) / len(lows), 1.0))
    y = np.array([0] * 12 + [1] * 12)  # and two classes, computed afresh: 12 + 12 films
    fresh = evaluate_probabilities(y, np.stack([0.95 - y * 0.9, y * 0.9 + 0.05], axis=1), CLASSES, point_at(0.5))
    assert fresh.auc == 1.0 and fresh.auc_ci == pytest.approx(hanley_mcneil_interval(1.0, 12, 12))


def test_an_operating_point_is_never_chosen_on_a_nan_probability():
    """A NaN sorted first took a place in the ranking and was never flagged: 20 abnormal films with one NaN at a
    95 % target gave validation sensitivity 0.90 without a word (a statistics review; inference refuses NaN
    today, so this guards the rule itself)."""
    truth = np.array([0] * 10 + [1] * 20)
    scores = np.linspace(0.01, 0.99, 30)
    scores[15] = np.nan
    with pytest.raises(ValueError, match="finite probability for every validation film"):
        choose_operating_point(truth, np.stack([1 - scores, scores], axis=1), CLASSES, 0.95)


def test_an_auc_on_a_handful_of_one_class_is_given_at_least_hanley_mcneils_width():
    """A metrics review: resampling films regardless of class, and keeping only resamples that hold both kinds,
    gave one abnormal film among 40 normals an AUC of 0.900 "(0.800-0.975)"; Hanley-McNeil's for 1 + 40 films is
    (0.490-1.000). Under 20 films of either kind the wider of the two is given."""
    from core.evaluation.reported import hanley_mcneil_interval

    truth = np.array([0] * 40 + [1])
    scores = np.concatenate([np.linspace(0, 1, 40), [0.9]])
    report = evaluate_probabilities(truth, np.stack([1 - scores, scores], axis=1), CLASSES, point_at(0.5))
    low, high = hanley_mcneil_interval(report.auc, 1, 40)
    assert report.auc == pytest.approx(0.9, abs=0.01)
    assert report.auc_ci[0] <= low and report.auc_ci[1] >= high and low < 0.55
    from core.evaluation.reported import widened_for_few

    assert widened_for_few(0.9, [0.85, 0.95], 20, 400) == [0.85, 0.95]  # 20 of each kind or more: as resampled
    assert widened_for_few(0.9, [0.85, 0.95], 19, 400) == [pytest.approx(v)
                                                           for v in hanley_mcneil_interval(0.9, 19, 400)]
    three = evaluate_probabilities(np.array([0] * 30 + [1] * 30 + [2] * 2), np.tile([0.2, 0.3, 0.5], (62, 1)) +
                                   np.r_[np.zeros((60, 3)), [[0, -0.2, 0.2]] * 2], ["NORMAL", "A", "B"],
                                   point_at(0.5, ["NORMAL", "A", "B"]))
    assert three.class_auc_ci["B"][0] <= hanley_mcneil_interval(three.class_auc["B"], 2, 60)[0]  # each class's too
    # the macro headline of three classes too (a Compare review: 3 films of one class read 0.999 "(0.994-1.000)")
    y = np.array([0] * 100 + [1] * 100 + [2] * 3)
    p = np.clip(np.where(np.eye(3)[y] == 1, 0.6, 0.2) + np.random.default_rng(1).normal(0, 0.12, (203, 3)), 0.01, None)
    few = evaluate_probabilities(y, p / p.sum(1, keepdims=True), ["NORMAL", "A", "B"],
                                 point_at(0.5, ["NORMAL", "A", "B"]))
    mean_low = np.mean([few.class_auc_ci[name][0] for name in ("NORMAL", "A", "B")])
    assert few.auc_ci[0] == pytest.approx(mean_low) and few.auc_ci[0] < 0.992  # resampled alone: 0.999
