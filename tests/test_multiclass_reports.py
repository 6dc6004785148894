"""Operating points and reports for more than two classes (#14): each abnormal class meets the target on its
own with a film to spare, per-class triage sensitivity, one-vs-rest AUCs, the reading by the most probable
class, figures per source and films of a subset of the classes. Hand cases for exact values; a tiny 3-class
model trained here on the real COVID films for real probabilities; the shipped binary models unchanged."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.evaluation.metrics import evaluate_probabilities
from core.store.reports import OperatingPoint, Report
from core.training.operating_point import choose_operating_point

from conftest import REPO, require

COVID_CLASSES = ("COVID-19", "NORMAL", "VIRAL PNEUMONIA")


def todays_pooled_threshold(y_true, probabilities, normal: int, target: float) -> float:
    """The binary rule as it stood before #14 (every abnormal film pooled), kept verbatim as the reference."""
    scores = 1.0 - np.asarray(probabilities)[:, normal]
    truth = np.asarray(y_true) != normal
    candidates = np.unique(scores)[::-1]
    threshold = float(candidates[-1])
    for t in candidates:
        if np.mean(scores[truth] >= t) >= target:
            threshold = float(t)
            break
    return threshold


def three_class_probs(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Probabilities with abnormal score ``scores`` (= 1 - p(NORMAL)): an abnormal film's own class takes 80 %
    of it, a normal film's splits evenly."""
    probs = np.zeros((len(truth), 3))
    probs[:, 1] = 1.0 - scores
    own = np.where(truth == 0, 0.8, np.where(truth == 2, 0.2, 0.5))
    probs[:, 0], probs[:, 2] = own * scores, (1 - own) * scores
    return probs


# --- the operating point by hand ----------------------------------------------------------------------
# COVID-19: 10 films, eight high and two low outliers; VIRAL PNEUMONIA: 40 films 0.90 down to 0.51;
# NORMAL: 10 films. Target 90 %.
COVID_SCORES = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.40, 0.30]
VIRAL_SCORES = [round(0.90 - 0.01 * i, 2) for i in range(40)]
NORMAL_SCORES = [0.05, 0.10, 0.15, 0.20, 0.25, 0.32, 0.35, 0.45, 0.60, 0.70]
HAND_TRUTH = np.array([0] * 10 + [2] * 40 + [1] * 10)
HAND_SCORES = np.array(COVID_SCORES + VIRAL_SCORES + NORMAL_SCORES)
HAND_PROBS = three_class_probs(HAND_TRUTH, HAND_SCORES)


def test_pooling_would_let_the_large_class_carry_the_small_one():
    # 50 abnormal films, 45 needed: down to the 37th viral film (0.54), which leaves 2 of 10 COVID films out
    pooled = todays_pooled_threshold(HAND_TRUTH, HAND_PROBS, 1, 0.9)
    assert pooled == pytest.approx(0.54)
    assert np.mean(np.array(COVID_SCORES) >= pooled) == pytest.approx(0.8)


@pytest.mark.parametrize("spare, threshold, covid, specificity", [
    (1, 0.30, 1.0, 0.5),  # COVID 10 of 10 (9 + 1 spare) -> 0.30; viral 37 of 40 -> 0.54; the lower wins
    (0, 0.40, 0.9, 0.7),  # COVID 9 of 10 -> 0.40; viral 36 of 40 -> 0.55
])
def test_each_abnormal_class_meets_the_target_on_its_own(spare, threshold, covid, specificity):
    point = choose_operating_point(HAND_TRUTH, HAND_PROBS, COVID_CLASSES, 0.9, spare_films=spare)
    assert point.threshold == pytest.approx(threshold)
    assert point.validation_class_sensitivity == pytest.approx({"COVID-19": covid, "VIRAL PNEUMONIA": 1.0})
    assert point.validation_class_films == {"COVID-19": 10, "VIRAL PNEUMONIA": 40}
    assert point.validation_specificity == pytest.approx(specificity)  # normals 0.45 0.60 0.70 (+ 0.32 0.35)
    assert point.validation_sensitivity == pytest.approx((10 * covid + 40) / 50)
    assert point.spare_films == spare and point.target_sensitivity == 0.9
    assert "each abnormal class (COVID-19, VIRAL PNEUMONIA)" in point.policy
    assert point.policy.endswith(f"with {spare} of its films to spare" if spare else ">= 90%")


def test_the_default_margin_is_one_film_and_is_recorded_in_json():
    point = choose_operating_point(HAND_TRUTH, HAND_PROBS, COVID_CLASSES, 0.9)
    assert point.spare_films == 1 and point.threshold == pytest.approx(0.30)
    assert OperatingPoint.model_validate(point.to_json()) == point


@pytest.mark.parametrize("films, needed", [
    (22, 22),  # 21 of 22 reach 95 %; one to spare: all of them
    (30, 30),  # 29 + 1
    (40, 39),  # 38 + 1
    (100, 96),  # 95 + 1
])
def test_films_a_class_needs_at_95_percent(films, needed):
    """Distinct scores 1.00, 0.99, ...: the threshold is the ``needed``-th highest of the class."""
    scores = np.round(1.0 - 0.005 * np.arange(films), 3)
    truth = np.array([0] * films + [2] * 5 + [1] * 5)  # 5 viral films, all above every COVID film
    all_scores = np.concatenate([scores, np.full(5, 1.0), np.full(5, 0.01)])
    point = choose_operating_point(truth, three_class_probs(truth, all_scores), COVID_CLASSES, 0.95)
    assert point.threshold == pytest.approx(scores[needed - 1])
    assert point.validation_class_sensitivity["COVID-19"] == pytest.approx(needed / films)


def test_a_class_without_validation_films_is_left_out_not_a_crash():
    keep = HAND_TRUTH != 2
    point = choose_operating_point(HAND_TRUTH[keep], HAND_PROBS[keep], COVID_CLASSES, 0.9)
    assert point.threshold == pytest.approx(0.30)
    assert point.validation_class_sensitivity == {"COVID-19": 1.0}
    assert point.validation_class_films == {"COVID-19": 10, "VIRAL PNEUMONIA": 0}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.8, 0.95, 0.98])
def test_binary_thresholds_are_todays(seed, target):
    """One abnormal class: the pooled rule, no margin, the same words (many tied scores)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 300)
    scores = np.clip(rng.normal(0.35 + 0.3 * truth, 0.2), 0, 1).round(2)
    probs = np.stack([1 - scores, scores], 1)
    point = choose_operating_point(truth, probs, ("NORMAL", "PNEUMONIA"), target)
    assert point.threshold == todays_pooled_threshold(truth, probs, 0, target)
    assert point.policy == f"highest threshold with validation sensitivity >= {target:.0%}"
    assert point.spare_films == 0
    assert point.validation_class_sensitivity == {"PNEUMONIA": point.validation_sensitivity}


@pytest.fixture(scope="module")
def shipped_mlp():
    """The shipped NORMAL/PNEUMONIA MLP and its recorded validation films' probabilities (1038 real films)."""
    from core.films.tensor import load_tensors
    from core.models.inference import probabilities_in_batches
    from core.store.checkpoints import load_checkpoint
    from core.training.calibrate import recorded_validation_split

    require(REPO.parent / "shared" / "data" / "kermany-224" / "train")
    loaded = load_checkpoint(REPO / "checkpoints" / "pneumonia-mlp-v1.json")
    val_set = recorded_validation_split(loaded.record)
    return loaded, val_set, probabilities_in_batches(loaded.model, load_tensors(val_set, loaded.image_size))


@pytest.mark.slow
def test_a_shipped_binary_model_gets_the_threshold_it_shipped_with(shipped_mlp):
    loaded, val_set, probs = shipped_mlp
    stored = loaded.operating_point
    point = choose_operating_point(val_set.labels, probs, val_set.classes, stored.target_sensitivity)
    assert point.threshold == todays_pooled_threshold(val_set.labels, probs, 0, stored.target_sensitivity)
    assert point.threshold == pytest.approx(stored.threshold, abs=1e-6)
    assert (point.validation_sensitivity, point.validation_specificity) == pytest.approx(
        (stored.validation_sensitivity, stored.validation_specificity))
    report = evaluate_probabilities(val_set.labels, probs, val_set.classes, stored)
    assert report.at_operating_point.flag_recall == {"PNEUMONIA": report.sensitivity}
    assert report.class_auc is None and report.at_argmax is None and report.by_source == {}
    assert set(report.summary()) == {"n", "auc", "accuracy", "sensitivity", "specificity", "threshold"}


def test_every_shipped_json_still_loads_through_the_registry(settings_env, tmp_path):
    from core.store.registry import list_models

    settings_env(CXR_CHECKPOINTS=str(REPO / "checkpoints"), CXR_MODELS=str(tmp_path))
    entries, problems = list_models()
    assert problems == [] and len(entries) == len(list((REPO / "checkpoints").glob("*-v*.json")))
    for entry in entries:
        record = entry.record
        if record.operating_point.spare_films is None:  # written before #14: the new fields have defaults
            assert record.operating_point.validation_class_sensitivity is None
        for report in (record.report, *record.other_reports.values()):
            assert report.summary()["n"] == report.n
            if len(report.classes) == 2:
                assert report.at_argmax is None and report.by_source == {} and report.class_auc is None


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
    low, high = top.flag_recall_ci["COVID-19"]
    assert low == 0.0 and high == 1.0  # two films: anything can happen
    assert top.flag_recall_ci["VIRAL PNEUMONIA"] == (1.0, 1.0)  # both flagged in every resample
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
        # macro F1 over NORMAL (present) and COVID-19 (called once): not dragged down by VIRAL PNEUMONIA
        assert report.at_operating_point.macro_f1 == pytest.approx(np.mean([2 / 3, 0.0]))


def test_older_multiclass_json_without_the_new_keys_loads():
    report = evaluate_probabilities(SIX_TRUTH, SIX_PROBS, COVID_CLASSES, HALF)
    data = report.to_json()
    for key in ("class_auc", "class_auc_ci", "class_roc", "at_argmax", "by_source"):
        data.pop(key)
    for reading in ("at_operating_point", "at_0.5"):
        data[reading].pop("flag_recall"), data[reading].pop("flag_recall_ci")
        for metrics in data[reading]["per_class"].values():
            metrics.pop("recall_ci")
    old = Report.model_validate(data)
    assert old.at_argmax is None and old.class_auc is None and old.by_source == {}
    assert old.at_operating_point.flag_recall is None and old.accuracy == report.accuracy
    assert old.summary()["flag_recall"] is None


# --- a tiny 3-class model on the real COVID films -----------------------------------------------------

@pytest.fixture(scope="module")
def covid_model(data_dir, tmp_path_factory):
    """A cnn5 at 32 px, 2 epochs, 150 of the COVID set's films: real probabilities in seconds. Without the
    population check, whose ImageNet features of every training film would cost a minute on 2 CPU cores
    and are not what these tests measure."""
    from core.store.checkpoints import load_checkpoint
    from core.store.records import TrainConfig
    from core.training import train as training

    folder = require(data_dir / "covid-3class" / "train")
    directory = tmp_path_factory.mktemp("covid-tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "try_fit_population_check", lambda *args, **kwargs: (None, None))
        record = training.train(folder, TrainConfig(arch="cnn5", epochs=2, image_size=32, max_films=150, seed=0),
                                directory=directory)
    return load_checkpoint(directory / f"{record.name}.json")


@pytest.fixture(scope="module")
def covid_validation(covid_model):
    from core.films.tensor import load_tensors
    from core.models.inference import probabilities_in_batches
    from core.training.calibrate import recorded_validation_split

    val_set = recorded_validation_split(covid_model.record)
    return val_set, probabilities_in_batches(covid_model.model, load_tensors(val_set, covid_model.image_size))


@pytest.mark.slow
def test_trained_three_class_point_gives_every_abnormal_class_its_target_and_a_film(covid_model, covid_validation):
    val_set, probs = covid_validation
    point = covid_model.operating_point
    classes = covid_model.classes
    normal = point.normal_index
    assert classes[normal].upper() == "NORMAL" and point.spare_films == 1
    scores = 1 - probs[:, normal]

    def every_class_has_a_film_to_spare(threshold: float) -> bool:
        """Missing one more film of any abnormal class would still reach the target (or all are flagged)."""
        for k in range(len(classes)):
            mine = scores[val_set.labels == k]
            flagged = int(np.sum(mine >= threshold))
            if k != normal and flagged < len(mine) and (flagged - 1) / len(mine) < point.target_sensitivity:
                return False
        return True

    for k, name in enumerate(classes):
        if k != normal:
            mine = scores[val_set.labels == k]
            assert point.validation_class_films[name] == len(mine) > 0
            assert point.validation_class_sensitivity[name] == pytest.approx(np.mean(mine >= point.threshold))
    assert every_class_has_a_film_to_spare(point.threshold)
    # the highest such threshold: at the next higher score some class loses its margin
    assert not every_class_has_a_film_to_spare(np.min(scores[scores > point.threshold + 1e-6]))
    again = choose_operating_point(val_set.labels, probs, classes, point.target_sensitivity)
    assert again.threshold == pytest.approx(point.threshold, abs=1e-6)
    assert again.validation_class_sensitivity == point.validation_class_sensitivity


@pytest.mark.slow
def test_trained_three_class_report(covid_model, covid_validation):
    val_set, probs = covid_validation
    report = covid_model.record.report
    point = covid_model.operating_point
    assert report.at_operating_point.flag_recall == pytest.approx(point.validation_class_sensitivity)
    assert report.at_argmax.accuracy == pytest.approx(np.mean(probs.argmax(1) == val_set.labels), abs=1e-9)
    assert set(report.class_auc) == set(covid_model.classes)
    for k, name in enumerate(covid_model.classes):
        assert report.class_auc[name] == pytest.approx(roc_auc_score(val_set.labels == k, probs[:, k]), abs=1e-6)
    assert report.auc == pytest.approx(np.mean(list(report.class_auc.values())), abs=1e-9)
    assert report.auc > 0.7  # a real, if tiny, model


@pytest.mark.slow
def test_real_films_from_two_sources(covid_model, data_dir):
    """The COVID model's normal class on paediatric normals and on the adult normals of the TB set."""
    from core.films.folders import FilmSet
    from core.films.tensor import load_tensors
    from core.models.inference import probabilities_in_batches

    normal = covid_model.operating_point.normal_index
    paths = (sorted((data_dir / "covid-3class" / "train" / "Normal").iterdir())[:8]
             + sorted(require(data_dir / "tb" / "train" / "Normal").iterdir())[:8])
    films = FilmSet(tuple(paths), np.full(16, normal), covid_model.classes)
    probs = probabilities_in_batches(covid_model.model, load_tensors(films, covid_model.image_size))
    sources = ["covid-3class"] * 8 + ["tb"] * 8
    report = evaluate_probabilities(films.labels, probs, covid_model.classes, covid_model.operating_point,
                                    sources=sources)
    called = covid_model.operating_point.decide(probs) != normal
    for name, part in (("covid-3class", slice(0, 8)), ("tb", slice(8, 16))):
        figures = report.by_source[name]
        assert figures.n == 8 and figures.class_counts == {covid_model.classes[normal]: 8}
        assert figures.flagged == pytest.approx(np.mean(called[part]))
        assert figures.accuracy == figures.recall[covid_model.classes[normal]] == pytest.approx(
            1 - np.mean(called[part]))
    assert report.auc is None and report.class_auc == {} and report.roc is None


@pytest.mark.slow
def test_evaluating_a_folder_of_two_of_the_three_classes(covid_model, data_dir, tmp_path):
    from core.evaluation.folder import evaluate_folder

    covid, normal = covid_model.classes[0], covid_model.classes[covid_model.operating_point.normal_index]
    for name, source in ((covid, "Covid"), (normal, "Normal")):
        (tmp_path / name).mkdir()
        for path in sorted((data_dir / "covid-3class" / "train" / source).iterdir())[-6:]:
            (tmp_path / name / path.name).symlink_to(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate_folder(covid_model, tmp_path, workers=1)
    assert report.n == 12 and report.auc is None and set(report.class_auc) == {covid, normal}
    assert report.class_counts == [6 if c in (covid, normal) else 0 for c in covid_model.classes]
    assert set(report.at_operating_point.flag_recall) == {covid}
    assert report.summary()["recall"].keys() == {covid, normal}
