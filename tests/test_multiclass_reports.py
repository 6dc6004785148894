"""Reports for more than two classes (#14), worked by hand for exact values: per-class triage sensitivity,
one-vs-rest AUCs, the reading by the most probable class, each abnormal class against the normal class alone,
figures per source, films of a subset of the classes, and older JSON without these keys."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from core.evaluation.metrics import evaluate_probabilities
from core.store.reports import OperatingPoint, Report

COVID_CLASSES = ("COVID-19", "NORMAL", "VIRAL PNEUMONIA")


# --- reports by hand ----------------------------------------------------------------------------------
# Six films read at 0.5: [COVID, COVID, VIRAL, VIRAL, NORMAL, NORMAL]
SIX_TRUTH = np.array([0, 0, 2, 2, 1, 1])
SIX_PROBS = np.array([
    [0.70, 0.20, 0.10],  # flagged (0.80), COVID; argmax COVID
    [0.20, 0.60, 0.20],  # not flagged (0.40): NORMAL; argmax NORMAL
    [0.40, 0.35, 0.25],  # flagged (0.65), labelled COVID (likelier abnormal); argmax COVID
    [0.05, 0.30, 0.65],  # flagged, VIRAL
    [0.10, 0.80, 0.10],  # not flagged
    [0.45, 0.40, 0.15],  # flagged (0.60), COVID; argmax COVID
])
HALF = OperatingPoint(classes=COVID_CLASSES, normal_index=1, threshold=0.5)


@pytest.fixture(scope="module")
def six_report() -> Report:
    return evaluate_probabilities(SIX_TRUTH, SIX_PROBS, COVID_CLASSES, HALF)


def test_flag_recall_is_the_share_of_each_class_called_abnormal(six_report):
    top = six_report.at_operating_point
    assert top.flag_recall == pytest.approx({"COVID-19": 0.5, "VIRAL PNEUMONIA": 1.0})
    # the label may still be the wrong abnormal class: VIRAL recall by label is 1 of 2
    assert {k: m.recall for k, m in top.per_class.items()} == pytest.approx(
        {"COVID-19": 0.5, "NORMAL": 0.5, "VIRAL PNEUMONIA": 0.5})
    assert top.sensitivity == pytest.approx(0.75) and top.specificity == pytest.approx(0.5)
    # two films each: Wilson intervals of 1 of 2 and of 2 of 2 (textbook values); 2 of 2 is not a certainty
    assert top.flag_recall_ci["COVID-19"] == pytest.approx((0.0945312, 0.9054688), abs=1e-6)
    assert top.flag_recall_ci["VIRAL PNEUMONIA"] == pytest.approx((0.3423802, 1.0), abs=1e-6)
    for metrics in top.per_class.values():
        assert metrics.recall_ci[0] <= metrics.recall <= metrics.recall_ci[1]


def test_reading_by_the_most_probable_class(six_report):
    argmax = six_report.at_argmax
    assert argmax.accuracy == pytest.approx(3 / 6)  # films 1, 4, 5 right
    assert argmax.confusion_matrix == [[1, 1, 0], [1, 1, 0], [1, 0, 1]]
    assert argmax.flag_recall == pytest.approx({"COVID-19": 0.5, "VIRAL PNEUMONIA": 1.0})
    assert six_report.at_operating_point.accuracy == pytest.approx(3 / 6)  # films 1, 4, 5 at the threshold


def test_one_vs_rest_aucs(six_report):
    for k, name in enumerate(COVID_CLASSES):
        assert six_report.class_auc[name] == pytest.approx(roc_auc_score(SIX_TRUTH == k, SIX_PROBS[:, k]))
        low, high = six_report.class_auc_ci[name]
        assert 0.0 <= low <= high <= 1.0
        roc = six_report.class_roc[name]
        assert (roc.fpr[0], roc.tpr[0], roc.fpr[-1], roc.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert six_report.auc == pytest.approx(np.mean(list(six_report.class_auc.values())))
    # NORMAL against the rest is the triage score's AUC
    triage = roc_auc_score(SIX_TRUTH != 1, 1 - SIX_PROBS[:, 1])
    assert six_report.class_auc["NORMAL"] == pytest.approx(triage)


def test_summary_gives_per_class_recall_for_several_classes(six_report):
    summary = six_report.summary()
    assert summary["flag_recall"] == pytest.approx({"COVID-19": 0.5, "VIRAL PNEUMONIA": 1.0})
    assert summary["recall"] == pytest.approx({"COVID-19": 0.5, "NORMAL": 0.5, "VIRAL PNEUMONIA": 0.5})


def test_figures_per_source(six_report):
    sources = ["covid-3class", "covid-3class", "kermany", "kermany", "tb", "tb"]
    report = evaluate_probabilities(SIX_TRUTH, SIX_PROBS, COVID_CLASSES, HALF, sources=sources)
    assert list(report.by_source) == ["covid-3class", "kermany", "tb"]
    tb = report.by_source["tb"]  # two normals, one called COVID-19: the shortcut this measures
    assert (tb.n, tb.class_counts, tb.accuracy, tb.flagged, tb.recall) == (
        2, {"NORMAL": 2}, 0.5, 0.5, {"NORMAL": 0.5})
    kermany = report.by_source["kermany"]
    assert (kermany.n, kermany.class_counts, kermany.flagged) == (2, {"VIRAL PNEUMONIA": 2}, 1.0)
    assert kermany.recall == {"VIRAL PNEUMONIA": 0.5} and kermany.accuracy == 0.5
    assert report.by_source["covid-3class"].recall == {"COVID-19": 0.5}
    # the rest of the report is the same as without sources
    assert report.model_copy(update={"by_source": {}}) == six_report
    assert Report.model_validate(report.to_json()) == report


def test_one_source_gives_no_figures_per_source_and_a_wrong_count_is_refused():
    assert evaluate_probabilities(SIX_TRUTH, SIX_PROBS, COVID_CLASSES, HALF, sources=["tb"] * 6).by_source == {}
    with pytest.raises(ValueError, match="5 sources were given for 6 films"):
        evaluate_probabilities(SIX_TRUTH, SIX_PROBS, COVID_CLASSES, HALF, sources=["tb"] * 5)


@pytest.mark.parametrize("keep, aucs", [
    ([0, 1, 4, 5], {"COVID-19", "NORMAL"}),  # no viral film: AUCs of the two classes present
    ([4, 5], set()),  # normal films only
])
def test_a_subset_of_the_classes(keep, aucs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-learn or numpy warnings either
        report = evaluate_probabilities(SIX_TRUTH[keep], SIX_PROBS[keep], COVID_CLASSES, HALF)
    assert report.auc is None and report.auc_ci is None
    assert set(report.class_auc) == set(report.class_auc_ci) == set(report.class_roc) == aucs
    viral = report.at_operating_point.per_class["VIRAL PNEUMONIA"]
    assert viral.support == 0 and viral.recall_ci is None
    assert "VIRAL PNEUMONIA" not in report.at_operating_point.flag_recall
    assert report.class_counts[2] == 0 and report.n == len(keep)
    if not aucs:
        assert report.roc is None and report.at_operating_point.flag_recall == {}
        assert report.at_operating_point.specificity == 0.5
        # macro F1 over the classes with films here, NORMAL alone: neither VIRAL PNEUMONIA (no film, no call) nor
        # COVID-19 (no film, called once: an F1 of 0 the per-class table shows as "no films") drags it down; that
        # stray call already costs NORMAL its recall (a review: 18 of 20 pneumonia films right read 0.316)
        assert report.at_operating_point.macro_f1 == pytest.approx(2 / 3)
        assert report.at_operating_point.f1 is None and report.at_operating_point.f1_ci is None  # no abnormal film


def test_older_multiclass_json_without_the_new_keys_loads():
    report = evaluate_probabilities(SIX_TRUTH, SIX_PROBS, COVID_CLASSES, HALF)
    data = report.to_json()
    for key in ("class_auc", "class_auc_ci", "class_roc", "at_argmax", "by_source", "against_normal"):
        data.pop(key)
    for reading in ("at_operating_point", "at_0.5"):
        data[reading].pop("flag_recall"), data[reading].pop("flag_recall_ci")
        for metrics in data[reading]["per_class"].values():
            metrics.pop("recall_ci")
    old = Report.model_validate(data)
    assert old.at_argmax is None and old.class_auc is None and old.by_source == {}
    assert old.at_operating_point.flag_recall is None and old.accuracy == report.accuracy
    assert old.summary()["flag_recall"] is None and old.against_normal is None


def test_each_abnormal_class_against_normal_alone(six_report):
    """COVID films 0, 1 and normal films 4, 5 by p(COVID) against p(NORMAL): film 0 right (0.70 > 0.20), film 1
    wrong (0.20 < 0.60), film 4 right, film 5 wrong (0.45 > 0.40). VIRAL films 2, 3 and the same normals by
    p(VIRAL) against p(NORMAL): film 2 wrong (0.25 < 0.35), film 3 right, both normals right."""
    pairs = six_report.against_normal
    assert set(pairs) == {"COVID-19", "VIRAL PNEUMONIA"}
    covid, viral = pairs["COVID-19"], pairs["VIRAL PNEUMONIA"]
    assert (covid.n, covid.class_counts, covid.accuracy) == (4, {"COVID-19": 2, "NORMAL": 2}, 0.5)
    assert (viral.n, viral.class_counts, viral.accuracy) == (4, {"VIRAL PNEUMONIA": 2, "NORMAL": 2}, 0.75)
    covid_films = [0, 1, 4, 5]
    two = SIX_PROBS[covid_films][:, [1, 0]]
    assert covid.accuracy == accuracy_score(SIX_TRUTH[covid_films] == 0, two[:, 1] > two[:, 0])
    assert covid.auc == pytest.approx(roc_auc_score(SIX_TRUTH[covid_films] == 0, two[:, 1] / two.sum(1)))
    assert covid.auc == pytest.approx(0.75)  # 0.70/0.90 and 0.20/0.80 against 0.10/0.90 and 0.45/0.85
    for pair in (covid, viral):
        assert pair.accuracy_ci[0] <= pair.accuracy <= pair.accuracy_ci[1]
        assert pair.auc_ci[0] <= pair.auc <= pair.auc_ci[1]
    assert six_report.summary()["against_normal"] == {
        "COVID-19": {"accuracy": 0.5, "auc": covid.auc}, "VIRAL PNEUMONIA": {"accuracy": 0.75, "auc": viral.auc}}


def test_against_normal_needs_both_classes_for_an_auc_and_skips_absent_classes():
    keep = [0, 1]  # COVID films only
    report = evaluate_probabilities(SIX_TRUTH[keep], SIX_PROBS[keep], COVID_CLASSES, HALF)
    covid = report.against_normal["COVID-19"]
    assert set(report.against_normal) == {"COVID-19"} and covid.auc is None and covid.auc_ci is None
    assert covid.accuracy == 0.5 and covid.class_counts == {"COVID-19": 2, "NORMAL": 0}
    binary = evaluate_probabilities(np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]), ("NORMAL", "PNEUMONIA"),
                                    OperatingPoint(classes=("NORMAL", "PNEUMONIA"), normal_index=0, threshold=0.5))
    assert binary.against_normal is None and "against_normal" not in binary.summary()
