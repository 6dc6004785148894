"""What the Compare page says about its own figures (a review of it, 2026-12-06): models read on different films are
flagged, a perfect F1 gets the interval its films allow, a multi-class ROC legend says its AUC is abnormal against
normal (not the table's macro AUC), and the per-class curves' hovers never round up to certainty."""
from __future__ import annotations

import dataclasses

import numpy as np

from core.evaluation.folder import report_line
from core.evaluation.metrics import evaluate_probabilities
from core.store.registry import list_models
from core.store.reports import DecisionMetrics
from dashboard.components.charts import class_roc_curves, roc_curves
from core.wording import fixed
from dashboard.components.reports import RocCurve, metrics_table, roc_input, with_interval
from dashboard.components.same_films import films_apart

from conftest import REPO

HELD_OUT = "pneumonia-resnet18-224-wide-ensemble-v1"  # validated with another batch held out: 850 films


def _shipped() -> dict:
    entries, problems = list_models(REPO / "checkpoints")
    assert not problems
    return {entry.name: entry for entry in entries}


def test_models_validated_on_other_films_are_said_to_be_read_apart():
    shipped = _shipped()
    same = [(shipped[name], shipped[name].record.report) for name in ("pneumonia-cnn5-v1", "pneumonia-mlp-v1")]
    assert films_apart(same) is None  # both validated on the same 1,038 films (one fingerprint)
    apart = same + [(shipped[HELD_OUT], shipped[HELD_OUT].record.report)]
    words = films_apart(apart)
    assert words.startswith("These models were not read on the same films (pneumonia-cnn5-v1, pneumonia-mlp-v1: "
                            f"1,038 films; {HELD_OUT}: 850 films)")
    assert "Evaluate on a folder" in words
    # read on one folder: the same films, whatever each model's own validation was
    folder = [(entry, report.model_copy(update={"split": "folder shared-data/films", "n": 16, "class_counts": [8, 8]}))
              for entry, report in apart]
    assert films_apart(folder) is None
    skipped = folder[:2] + [(folder[2][0], folder[2][1].model_copy(update={"n": folder[2][1].n - 1}))]
    assert "Evaluate on a folder" not in films_apart(skipped)  # figures from a folder: no advice to use one


def test_a_copy_of_a_stored_validation_report_is_still_told_apart_by_its_films_fingerprint():
    """A review: the stored report was recognised by object identity, so a copy of it (a cache, a page's own
    re-read) fell back to comparing counts, and two validations of equal size on other films read as the same."""
    shipped = _shipped()
    cnn5, mlp = shipped["pneumonia-cnn5-v1"], shipped["pneumonia-mlp-v1"]
    data = mlp.record.data
    other = data.model_copy(update={"validation": data.validation.model_copy(update={"sha256": "0" * 64})})
    elsewhere = dataclasses.replace(mlp, record=mlp.record.model_copy(update={"data": other}))
    rows = [(cnn5, cnn5.record.report.model_copy()), (elsewhere, elsewhere.record.report.model_copy())]
    assert films_apart(rows).startswith("These models were not read on the same films (pneumonia-cnn5-v1: 1,038 "
                                        "films; pneumonia-mlp-v1: 1,038 films)")
    assert films_apart([(cnn5, cnn5.record.report.model_copy()), (mlp, mlp.record.report.model_copy())]) is None


def test_a_perfect_f1_gets_the_interval_its_films_allow_not_too_few_films():
    """covid-cnn5-v1 reads its 50 validation films without a mistake: every resample gives F1 1, and the page said
    "no interval: too few films" beside accuracy's 92.9-100 % on the same films."""
    entry = _shipped()["covid-cnn5-v1"]
    figures = entry.record.report.at_operating_point
    assert figures.f1 == 1.0 and figures.f1_ci == figures.sensitivity_ci  # 37 abnormal films, no mistake: Wilson
    assert 0.90 < figures.f1_ci[0] < 0.91 and figures.f1_ci[1] == 1.0
    table = metrics_table([(entry, entry.record.report)])
    assert "no interval" not in " ".join(table[entry.name].astype(str))
    made = DecisionMetrics(accuracy=1.0, confusion_matrix=[[5, 0], [0, 20]], per_class={
        name: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": k} for name, k in (("NORMAL", 5),
                                                                                        ("PNEUMONIA", 20))},
                           macro_f1=1.0, f1=1.0, f1_ci=(1.0, 1.0))
    assert made.f1_ci[0] < 0.9 and made.f1_ci[1] == 1.0  # 20 abnormal films
    assert with_interval(1.0, [1.0, 1.0], as_percent=False) == (
        "1.000 (no interval: every resample of these films gives the same value)")  # never "too few films"


def test_a_multi_class_roc_legend_says_its_auc_is_abnormal_against_normal():
    shipped = _shipped()
    covid, pneumonia = (shipped[name].record.report for name in ("covid-efficientnet_lite0-v1", "pneumonia-cnn5-v1"))
    several, two = roc_input("covid", covid), roc_input("pneumonia", pneumonia)
    assert several.auc == covid.class_auc["NORMAL"] != covid.auc  # the curve's area is not the table's macro AUC
    names = [trace.name for trace in roc_curves([several, two]).data]
    assert f"covid (AUC abnormal vs normal {fixed(several.auc, 3)})" in names
    assert f"pneumonia (AUC {fixed(two.auc, 3)})" in names


def test_the_per_class_curves_hover_their_points_without_rounding_up():
    figure = class_roc_curves({"COVID-19": [RocCurve("m", [0, 0.00004, 1], [0, 0.99996, 1], 0.99, 0.5, None,
                                                      None)]})
    curve = figure.data[1]
    assert list(curve.customdata[1]) == ["0.00004", "0.99996"]
    assert "%{customdata[1]}" in curve.hovertemplate and "%{y:.3f}" not in curve.hovertemplate


def test_evaluate_s_line_names_a_macro_auc_gives_intervals_and_never_rounds_up():
    shipped = _shipped()
    covid = shipped["covid-efficientnet_lite0-v1"].record.report
    line = report_line("covid", covid)
    assert line.startswith("covid on 50 films (24 COVID-19, 13 NORMAL, 13 VIRAL PNEUMONIA): accuracy ")
    assert "AUC (macro, one-vs-rest) 0.994 (0.980–1.000)" in line and "at threshold 0.543" in line
    pneumonia = shipped["pneumonia-cnn5-v1"].record.report.model_copy(update={"auc": 0.99967})
    assert ", AUC 0.9997 (" in report_line("p", pneumonia)  # not "1.000"
    point = shipped["pneumonia-cnn5-v1"].record.operating_point
    sick = evaluate_probabilities(np.ones(6, dtype=np.int64), np.tile([[0.1, 0.9]], (6, 1)), point.classes, point)
    line = report_line("p", sick)
    assert "AUC — (needs films of every class)" in line and "sensitivity 1.000 (" in line
    assert "specificity — (no normal films here) at threshold " in line


def test_one_class_spelled_two_ways_is_one_panel_and_no_warning_of_other_classes():
    """A review: two models of one task whose classes differ only in spelling (older models keep their own) would
    be told they were trained on different classes, and each spelling got its own per-class panel."""
    from dashboard.components.class_figures import class_curves

    covid = _shipped()["covid-efficientnet_lite0-v1"].record.report
    spelled = {"COVID-19": "COVID19", "NORMAL": "Normal", "VIRAL PNEUMONIA": "Viral Pneumonia"}
    older = covid.model_copy(update={"classes": [spelled[c] for c in covid.classes],
                                     "class_roc": {spelled[c]: roc for c, roc in covid.class_roc.items()},
                                     "class_auc": {spelled[c]: auc for c, auc in covid.class_auc.items()}})
    curves = class_curves([("new", covid), ("old", older)])
    assert list(curves) == ["COVID-19", "NORMAL", "VIRAL PNEUMONIA"]
    assert all([c.name for c in panel] == ["new", "old"] and panel[0].auc == panel[1].auc for panel in curves.values())


def test_the_other_batch_threshold_is_called_this_version_s_only_when_it_is():
    """A review: an older record whose other-batch figures came from another run (no holdout_run named) had that
    run's threshold labelled "(this version's)"."""
    from dashboard.components.travel import other_batch_threshold

    record = _shipped()[HELD_OUT].record  # trained with the batch held out: its own figures, its own threshold
    assert record.holdout_run is None and other_batch_threshold(record).endswith("(this version's)")
    point = record.operating_point.model_copy(update={"threshold": 0.09805})
    batch = record.other_reports["out-of-batch"].model_copy(update={"operating_point": point})
    older = record.model_copy(update={"other_reports": {**record.other_reports, "out-of-batch": batch}})
    assert other_batch_threshold(older).startswith("0.09805 (another run; this version's is 0.2759")


def test_with_three_classes_precision_and_f1_say_they_are_abnormal_against_normal_beside_a_macro_f1():
    """A review: every COVID-19 film read as viral pneumonia showed precision 100 % and F1 1.000, unqualified."""
    from dashboard.components.reports import F1, MACRO_F1, PRECISION

    covid = _shipped()["covid-efficientnet_lite0-v1"]
    classes = covid.record.classes  # COVID-19, NORMAL, VIRAL PNEUMONIA
    labels = np.repeat([0, 1, 2], 10)
    read_as = {0: [0.05, 0.05, 0.9], 1: [0.05, 0.9, 0.05], 2: [0.05, 0.05, 0.9]}  # COVID-19 read as viral
    report = evaluate_probabilities(labels, np.array([read_as[k] for k in labels]), classes,
                                    covid.record.operating_point)
    table = metrics_table([(covid, report)])
    assert table.loc[PRECISION, covid.name].startswith("100.0 %") and table.loc[F1, covid.name].startswith("1.000")
    assert table.loc[MACRO_F1, covid.name] == "0.556" and "Precision" not in table.index and "F1" not in table.index
    two = _shipped()["pneumonia-mlp-v1"]
    assert {"Precision", "F1"} <= set(metrics_table([(two, two.record.report)]).index)  # two classes: as before


def test_the_ensemble_table_and_a_lent_run_s_validation_auc_never_round_up_to_1():
    """A review: the ensemble command's table printed the default's other-batch AUC 0.99967 as "1.000 (0.999-1.000)",
    and a lent run's validation AUC was written with the same rounding on the card and Compare."""
    from core.training.ensemble import _line, _standing
    from dashboard.components.travel import out_of_batch_origin

    default = _shipped()["pneumonia-resnet18-lite1-224-wide-all-ensemble-v1"].record
    line = _line(_standing(default.name, default.model_copy(update={"other_reports": {
        **default.other_reports, "out-of-batch": default.other_reports["out-of-batch"].model_copy(
            update={"auc": 0.99967, "auc_ci": [0.99929, 0.9999]})}})))
    assert "1.000 (" not in line and "0.9997 (0.999–0.9999)" in line  # its specificity is a real 1.000
    run = default.holdout_run.model_copy(update={"validation_auc": 0.99967})
    assert "validation AUC 0.9997" in out_of_batch_origin(default.model_copy(update={"holdout_run": run}))


def test_a_task_whose_films_carry_no_batch_says_so_instead_of_a_skipped_check():
    from core.store.records import read_model_record
    from dashboard.components.model_card import not_measured_elsewhere

    shipped = REPO / "checkpoints"
    covid = read_model_record(shipped / "covid-efficientnet_lite0-v1.json")  # its films name no batch to hold out
    assert "out-of-batch" not in covid.other_reports
    assert "its films' names carry no acquisition batch to hold out" in not_measured_elsewhere(covid)
    pneumonia = read_model_record(shipped / "pneumonia-cnn5-v1.json")
    assert "(trained before that check, or without a holdout)" in not_measured_elsewhere(
        pneumonia.model_copy(update={"other_reports": {}}))


def _sources_of_a_folder_of_junk():
    from core.store.reports import SkippedFilm
    from dashboard.components.compare_view import sources

    from conftest import REPO
    from core.store.registry import find_model

    entry = find_model("pneumonia-logistic-v1", REPO / "checkpoints")
    junk = [SkippedFilm(file=f"site/junk-{k}.png", error="not an image") for k in range(150)]
    sources([(entry, entry.record.report.model_copy(update={"skipped": junk}))])


def test_a_folder_of_many_unreadable_files_lists_the_first_hundred_and_counts_them_all():
    """Found by a resource review: 100,000 junk files in an evaluated folder drew a 13 MB table per model at every
    rerun of Compare."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_sources_of_a_folder_of_junk).run()
    assert not at.exception
    assert at.expander[0].label == "pneumonia-logistic-v1: 150 file(s) left out: unreadable, not triaged, or copies"
    assert len(at.table[0].value) == 100 and "The first 100 of them are listed." in [c.value for c in at.caption]


def test_each_model_on_a_chart_has_its_own_dash_and_marker_besides_its_colour():
    """An accessibility review: every model's ROC line was solid and every operating point a diamond, so two of the
    four models Compare opens on (3 CIEDE2000 units apart under deuteranopia) could be told apart by nothing."""
    names = ["a", "b", "c", "d"]
    chart = roc_curves([RocCurve(name=n, fpr=[0, 0.2, 1], tpr=[0, 0.8, 1], auc=0.8, threshold=0.5, point_fpr=0.2,
                                 point_tpr=0.8) for n in names], names)
    lines = [t for t in chart.data if t.mode == "lines" and t.name != "chance"]
    points = [t for t in chart.data if t.mode == "markers"]
    assert len({t.line.dash for t in lines}) == len({t.marker.symbol for t in points}) == 4
    panels = class_roc_curves({"NORMAL": [RocCurve(name=n, fpr=[0, 1], tpr=[0, 1], auc=0.5, threshold=None,
                                                   point_fpr=None, point_tpr=None) for n in names]}, names)
    assert [t.line.dash for t in panels.data if t.showlegend] == [t.line.dash for t in lines]


def test_the_metrics_note_says_precision_depends_on_the_films_mix():
    """A statistics review: precision was shown beside sensitivity with no word that it moves with prevalence."""
    from dashboard.components.reports import METRICS_NOTE

    assert "Precision (the share of urgent calls that are abnormal) depends on how many films are abnormal" in \
        METRICS_NOTE and "lower where disease is rarer" in METRICS_NOTE


def _sources_of_two_models_with_the_same_films_left_out():
    from conftest import REPO
    from core.store.registry import find_model
    from core.store.reports import SkippedFilm
    from dashboard.components.compare_view import sources

    junk = [SkippedFilm(file=f"site/junk-{k}.png", error="not an image") for k in range(3)]
    entries = [find_model(name, REPO / "checkpoints") for name in ("pneumonia-logistic-v1", "pneumonia-mlp-v1")]
    sources([(entry, entry.record.report.model_copy(update={"skipped": junk})) for entry in entries])


def test_the_same_films_left_out_for_every_model_are_listed_once():
    """A browser review: the identical table of left-out films stood once for each of four models."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_sources_of_two_models_with_the_same_films_left_out).run()
    assert not at.exception and [e.label for e in at.expander] == [
        "every model evaluated: 3 file(s) left out: unreadable, not triaged, or copies"]


def test_the_one_vs_rest_legend_sits_below_the_axis_titles():
    """A browser review: at y=-0.08 of the plot the legend lay on the first panel's "1 − specificity" title when the
    panels stood in one row; it is placed in the figure's bottom margin now, below every axis title."""
    curve = RocCurve(name="m", fpr=[0, 1], tpr=[0, 1], auc=0.5, threshold=None, point_fpr=None, point_tpr=None)
    legend = class_roc_curves({c: [curve] for c in ("COVID-19", "NORMAL", "VIRAL PNEUMONIA")}).layout.legend
    assert (legend.yref, legend.yanchor, legend.y) == ("container", "bottom", 0)
