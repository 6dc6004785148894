"""The dashboard's drawing helpers: worklist order and CSV, number formatting, report tables, charts."""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pandas as pd
import pytest
from e2e_support import quick_checkpoints

from core.jobs.progress import StepLoss
from core.serving.predict import Prediction
from core.store.registry import list_models
from core.training.events import EpochEvent
from dashboard.components import kept_settings
from dashboard.components.charts import class_roc_curves, confusion_matrix, live_training, roc_curves
from dashboard.components.reports import (RocCurve, duration, escape_markdown, metrics_table, per_class_table,
                                          roc_input, spreadsheet_safe, with_interval)
from dashboard.components.triage_view import detail_lines, probability_lines
from dashboard.components.worklist import in_worklist_order, worklist, worklist_columns, worklist_csv
from dashboard.folder_stamp import folder_stamp
from dashboard.state import FilmResult


def _result(name: str, priority: str | None, score: float | None, warnings=()) -> FilmResult:
    p = 0.5 if score is None else score
    prediction = Prediction("m", {"NORMAL": 1 - p, "PNEUMONIA": p}, "PNEUMONIA" if priority == "urgent" else "NORMAL",
                            priority, score, 0.7, list(warnings))
    return FilmResult(name, name, np.zeros((4, 4), np.uint8), (4, 4), "PNG", {}, prediction)


BATCH = [
    _result("routine-low.png", "routine", 0.10),
    FilmResult("broken.png", "x", error="broken.png is not an image we can read."),
    _result("urgent-mid.png", "urgent", 0.80),
    _result("blank.png", None, 0.5, ["The image is almost uniform (blank)."]),
    _result("urgent-high.png", "urgent", 0.95),
    _result("routine-high.png", "routine", 0.60),
]


def test_worklist_puts_urgent_first_then_untriaged_and_unreadable_then_routine():
    """A film the model would not triage may be urgent: it once came after every routine film (a review); so may a
    file no one could read, which came last (another review)."""
    order = [r.file for r in in_worklist_order(BATCH)]
    assert order == ["urgent-high.png", "urgent-mid.png", "blank.png", "broken.png", "routine-high.png",
                     "routine-low.png"]
    table = worklist(BATCH)
    assert list(table.columns) == ["Reading order", "File", "Priority", "Label", "Top class", "Probability",
                                   "Abnormal score", "Warnings", "Film ID"]
    assert list(table["Film ID"]) == [r.digest[:8] for r in in_worklist_order(BATCH)]  # which file, whatever its name
    # numbered, so a table sorted by its Priority words (Not triaged < Routine < Unreadable < Urgent) sorts back
    assert list(table["Reading order"]) == [1, 2, 3, 4, 5, 6]
    assert list(table["Priority"]) == ["Urgent", "Urgent", "Not triaged", "Unreadable", "Routine", "Routine"]
    assert table.loc[0, "Probability"] == pytest.approx(0.95)
    assert table.loc[5, "Top class"] == "NORMAL" and table.loc[5, "Probability"] == pytest.approx(0.90)
    assert "blank" in table.loc[2, "Warnings"] and "not an image" in table.loc[3, "Warnings"]
    assert list(table["Label"][[0, 1, 4, 5]]) == ["PNEUMONIA", "PNEUMONIA", "NORMAL", "NORMAL"]
    assert table["Label"][[2, 3]].isna().all()  # a film that was not triaged gets no call
    # nor any figure that would read as one (found in a browser audit: "Not triaged | PNEUMONIA | 99.21 %")
    assert table.loc[2, ["Top class", "Probability", "Abnormal score"]].isna().all()
    with_classes = worklist(BATCH, ("NORMAL", "PNEUMONIA"))
    assert with_classes.loc[2, ["p(NORMAL)", "p(PNEUMONIA)"]].isna().all()
    assert with_classes.loc[0, "p(PNEUMONIA)"] == pytest.approx(0.95)


def test_a_film_the_busy_server_has_not_read_yet_is_no_unreadable_file_and_comes_before_the_routine():
    """It may be urgent: below the routine films it waited behind the whole list (found by a review)."""
    waiting = FilmResult("waiting.png", "w", error="The server is busy reading other users' films.", retry=True)
    table = worklist([*BATCH, waiting])
    assert list(table["Priority"]) == ["Urgent", "Urgent", "Not read yet", "Not triaged", "Unreadable", "Routine",
                                       "Routine"]
    assert table.loc[2, "File"] == "waiting.png" and "busy" in table.loc[2, "Warnings"]


def test_worklist_csv_holds_every_probability_the_model_and_threshold():
    table = pd.read_csv(io.BytesIO(worklist_csv(BATCH, "pneumonia-cnn5-v1")))
    assert len(table) == len(BATCH)
    assert {"File", "Priority", "Model", "Threshold", "p(NORMAL)", "p(PNEUMONIA)"} <= set(table.columns)
    assert table.loc[0, "File"] == "urgent-high.png" and table.loc[0, "p(PNEUMONIA)"] == pytest.approx(0.95)
    assert (table["Model"] == "pneumonia-cnn5-v1").all() and "Probability" not in table  # which class's? (a review)
    assert table.loc[0, "p(most probable class)"] == pytest.approx(0.95) and pd.isna(table.loc[3, "p(NORMAL)"])


@pytest.mark.parametrize("value, interval, as_percent, text", [
    (0.8612, [0.7848, 0.9367], True, "86.1 % (78.5–93.7)"),
    (0.9042, [0.8333, 0.9576], False, "0.904 (0.833–0.958)"),
    (0.5, None, True, "50.0 %"),
    (None, [0.1, 0.2], True, "—"),
    (1.0, [1.0, 1.0], False, "1.000 (no interval: every resample of these films gives the same value)"),
    (0.0, [0.0, 0.0], False, "0.000 (no interval: every resample of these films gives the same value)"),
    # found by a review: short of 1 is never shown as 1 (the default's other-batch AUC read "1.000"), above 0 never 0
    (0.9996693828479829, [0.99897, 1.0], False, "0.9997 (0.999–1.000)"),
    (0.9996, [0.9977, 0.9999], True, "99.96 % (99.8–99.99)"),
    (0.0004, [0.00001, 0.0022], True, "0.04 % (0.001–0.2)"),
    (1e-9, [0.0, 0.9999999999], True, "<0.0001 % (0.0–99.9999)"),
])
def test_values_are_shown_with_their_interval(value, interval, as_percent, text):
    assert with_interval(value, interval, as_percent) == text


def test_a_threshold_near_1_or_0_is_not_shown_as_1_or_0():
    from dashboard.components.reports import threshold_value

    assert [threshold_value(t) for t in (0.999996, 0.000004, 0.47098292, 0.5, -1e-6)] == [
        "0.999996", "0.000004", "0.47098", "0.500", "0 (every film urgent)"]  # never "-0.000" (a review)


@pytest.mark.parametrize("seconds, text", [(None, "—"), (7.4, "7 s"), (326.3, "5 min 26 s"), (7260, "2 h 01 min")])
def test_durations_read_naturally(seconds, text):
    assert duration(seconds) == text


def test_report_tables_and_roc_inputs_come_from_the_stored_reports(tmp_path):
    entries, problems = list_models(quick_checkpoints(tmp_path / "checkpoints"))
    assert not problems and len(entries) == 2
    rows = [(e, e.record.report) for e in entries]
    table = metrics_table(rows)
    assert list(table.columns) == [e.name for e in entries]
    for metric in ("Accuracy", "Sensitivity", "Specificity", "Precision", "F1", "AUC", "Parameters",
                   "Inference per film", "Training time"):
        assert metric in table.index
    report = entries[0].record.report
    assert table.loc["AUC", entries[0].name] == with_interval(report.auc, report.auc_ci, as_percent=False)
    assert table.loc["Sensitivity", entries[0].name] == with_interval(report.sensitivity, report.sensitivity_ci)
    assert table.loc["Parameters", entries[0].name] == f"{entries[0].record.parameters:,}"
    fast = list(rows)
    fast[0] = (type(entries[0])(entries[0].record.model_copy(update={"inference_ms_per_film": 0.031}),
                                entries[0].is_default, entries[0].json_path, entries[0].tier), rows[0][1])
    assert metrics_table(fast).loc["Inference per film", entries[0].name] == "0.031 ms"  # not "0.0 ms"
    curve = roc_input(entries[0].name, report)
    point = report.at_operating_point
    assert (curve.name, curve.auc, curve.threshold) == (entries[0].name, report.auc, report.threshold)
    assert curve.fpr == report.roc.fpr and curve.tpr == report.roc.tpr
    assert curve.point_fpr == pytest.approx(1 - point.specificity)
    assert curve.point_tpr == pytest.approx(point.sensitivity)
    assert roc_input("no-roc", report.model_copy(update={"roc": None})) is None
    # normal films only, all read normal: no abnormal-vs-normal F1, and the macro F1 is not passed off as one
    undefined = report.model_copy(update={"at_operating_point": point.model_copy(update={"f1": None, "f1_ci": None})})
    assert metrics_table([(entries[0], undefined)]).loc["F1", entries[0].name] == "—"
    per_class = per_class_table(report)
    assert list(per_class["Class"]) == ["NORMAL", "PNEUMONIA"]
    assert per_class["Films"].sum() == report.n
    assert list(per_class["Recall"]) == [point.per_class[c].recall for c in ("NORMAL", "PNEUMONIA")]
    # nothing called PNEUMONIA: its precision is undefined, not 0 ("every call wrong"; found by a review)
    from dashboard.components.class_figures import class_table

    never = report.model_copy(update={"at_operating_point": point.model_copy(update={
        "confusion_matrix": [[sum(row), 0] for row in point.confusion_matrix]})})
    assert per_class_table(never)["Precision"].isna().tolist() == [False, True]
    from dashboard.components.compare_view import per_class_view

    assert "— (never called)" in per_class_view(never).to_string() and "nan" not in per_class_view(never).to_string()
    assert list(class_table(never)["Precision"]) == [f"{point.per_class['NORMAL'].precision:.3f}", "— (never called)"]
    # a folder of pneumonia films only: NORMAL's recall and F1 do not exist, not 0 ("missed every normal film")
    without = point.per_class["NORMAL"].model_copy(update={"support": 0, "recall": 0.0, "f1": 0.0})
    only = report.model_copy(update={"at_operating_point": point.model_copy(update={
        "per_class": {**point.per_class, "NORMAL": without}})})
    assert per_class_table(only)[["Recall", "F1"]].isna().values.tolist() == [[True, True], [False, False]]
    assert per_class_view(only).to_string().count("— (no films)") == 2


def test_a_three_class_curve_carries_its_own_area_not_the_macro_auc():
    """The curve drawn is abnormal against normal (1 − p(normal)); with three classes its area is the normal
    class's one-vs-rest AUC, which the legend must show, not the report's macro AUC (a shipped COVID model)."""
    from pathlib import Path

    from core.store.records import read_model_record

    report = read_model_record(Path(__file__).resolve().parent.parent / "checkpoints"
                               / "covid-efficientnet_lite0-v1.json").report
    curve = roc_input("covid", report)
    assert report.auc != pytest.approx(report.class_auc["NORMAL"], abs=1e-3)  # the two differ for this model
    assert curve.auc == report.class_auc["NORMAL"]
    assert curve.auc == pytest.approx(np.trapezoid(curve.tpr, curve.fpr), abs=1e-5)  # its area, from its points
    subset = report.model_copy(update={"auc": None, "auc_ci": None})  # films of some classes only: no macro AUC
    assert roc_input("covid", subset).auc == report.class_auc["NORMAL"]

def test_probability_lines_keep_the_model_order_and_bold_its_label():
    lines = probability_lines({"NORMAL": 0.2, "PNEUMONIA": 0.8}, "PNEUMONIA")
    assert lines == [(0.2, "NORMAL · 20.0 %"), (0.8, "**PNEUMONIA** · 80.0 %")]
    three = probability_lines({"COVID-19": 0.5004, "NORMAL": 0.4996, "VIRAL_PNEUMONIA*": 0.0}, "COVID-19")
    assert [t for _, t in three] == ["**COVID-19** · 50.0 %", "NORMAL · 50.0 %", r"VIRAL\_PNEUMONIA\* · <0.0001 %"]
    # never rounded to certainty: the same figures the Grad-CAM caption gives
    sure = probability_lines({"NORMAL": 0.999716, "PNEUMONIA": 0.000284}, "NORMAL")
    assert [t for _, t in sure] == ["**NORMAL** · 99.97 %", "PNEUMONIA · 0.03 %"]
    hover = class_roc_curves({"COVID-19": [RocCurve("m", [0, 0, 1], [0, 1, 1], 0.99967, 0.5, None, None)]})
    assert "(AUC 0.9997)" in hover.data[1].hovertemplate
    assert probability_lines({"NORMAL": 1.0000001}, "NORMAL")[0][0] == 1.0  # a bar never runs past its end
    # a saturated output (stored to 6 decimals: 1.0, 0.0) is no certainty either (a review: "PNEUMONIA · 100.0 %")
    saturated = probability_lines({"NORMAL": 0.0, "PNEUMONIA": 1.0}, "PNEUMONIA")
    assert [t for _, t in saturated] == ["NORMAL · <0.0001 %", "**PNEUMONIA** · >99.9999 %"]


def test_film_details_read_as_words_one_line_each():
    text = detail_lines({"format": "DICOM", "bit depth": 15, "PhotometricInterpretation": "MONOCHROME1",
                         "TransferSyntax": "JPEG 2000 Image Compression", "Odd*Key": "<b>_x_</b>"})
    assert text.splitlines() == ["- Format: DICOM", "- Bit depth: 15", "- Photometric interpretation: MONOCHROME1",
                                 "- Transfer syntax: JPEG 2000 Image Compression", r"- Odd\*key: \<b\>\_x\_\</b\>"]


def test_kept_settings_come_back_within_their_choices_and_stay_bounded(monkeypatch):
    session: dict = {}
    monkeypatch.setattr(kept_settings, "st", type("St", (), {"session_state": session}))
    assert kept_settings.restore("method", "gradcam", ["gradcam", "eigencam"]) == "method"
    assert session["method"] == "gradcam"  # the first time: the default
    kept_settings.keep("method", "eigencam")
    del session["method"]  # Streamlit dropped the widget's value: another page was shown
    kept_settings.restore("method", "gradcam", ["gradcam", "eigencam"])
    assert session["method"] == "eigencam"
    del session["method"]
    kept_settings.restore("method", "gradcam", ["gradcam"])  # no longer offered: the default
    assert session["method"] == "gradcam"
    for i in range(kept_settings.KEEP_AT_MOST):
        kept_settings.keep(f"class-{i}", "NORMAL")
    kept = session[kept_settings.KEPT]
    assert len(kept) == kept_settings.KEEP_AT_MOST and "method" not in kept  # the least recently drawn went
    kept_settings.keep("class-0", "PNEUMONIA")  # drawn again: now the most recent
    kept_settings.keep("class-new", "NORMAL")
    assert len(kept) == kept_settings.KEEP_AT_MOST and kept["class-0"] == "PNEUMONIA" and "class-1" not in kept


def test_charts_carry_the_numbers_they_are_given():
    roc = roc_curves([RocCurve(name="a", fpr=[0, 0.5, 1], tpr=[0, 0.9, 1], auc=0.8, threshold=0.3,
                               point_fpr=0.5, point_tpr=0.9)])
    assert [t.name for t in roc.data] == ["chance", "a (AUC 0.800)", "a operating point"]
    assert list(roc.data[2].x) == [0.5] and list(roc.data[2].y) == [0.9]
    near = roc_curves([RocCurve(name="b", fpr=[0, 0.00004, 1], tpr=[0, 0.99996, 1], auc=0.99, threshold=0.3,
                                point_fpr=0.00004, point_tpr=0.99996)])  # hovers never round to certainty
    assert list(near.data[1].customdata[1]) == ["0.00004", "0.99996"]  # a curve's point (a review)
    assert list(near.data[2].customdata[0]) == ["0.99996", "0.99996"]  # the operating point's
    matrix = confusion_matrix([[3, 1], [0, 4]], ["NORMAL", "PNEUMONIA"], "a")
    assert [list(r) for r in matrix.data[0].z] == [[3, 1], [0, 4]]
    epoch = EpochEvent(epoch=1, epochs=3, train_loss=0.65, val_loss=0.6, val_auc=0.8, seconds=2.0)
    live = live_training([StepLoss(epoch=0.5, loss=0.7)], [epoch], 3)
    assert list(live.data[0].x) == [0.5] and list(live.data[0].y) == [0.7]
    assert list(live.data[1].y) == [0.6] and list(live.data[2].y) == [0.8]
    assert live.data[0].mode == "markers" and live.layout.legend.y == 0  # one step: a line draws nothing; legend below
    assert live.layout.yaxis2.range[0] == pytest.approx(0.39)  # the AUC axis starts just under 0.4 ...
    worst = EpochEvent(epoch=1, epochs=3, train_loss=0.65, val_loss=0.6, val_auc=0.0, seconds=2.0)
    assert live_training([], [worst], 3).layout.yaxis2.range[0] == pytest.approx(-0.01)  # ... or under the worst epoch


def test_a_model_keeps_its_colour_in_every_chart_also_where_others_have_nothing_to_draw():
    """Found in a browser audit: with the ensemble first and no training history, every other model's training
    curve took the colour the ensemble had in the ROC chart."""
    from core.store.records import EpochRecord
    from dashboard.components.charts import PALETTE, training_curves

    order = ["ensemble", "cnn5", "logistic"]
    history = [EpochRecord(epoch=1, train_loss=0.5, val_loss=0.4, val_auc=0.9, seconds=1.0)]
    curves = training_curves({"cnn5": history, "logistic": history}, order)
    assert {t.legendgroup: t.line.color for t in curves.data} == {"cnn5": PALETTE[1], "logistic": PALETTE[2]}
    roc = roc_curves([RocCurve(name="logistic", fpr=[0, 1], tpr=[0, 1], auc=0.5, threshold=0.5, point_fpr=None,
                               point_tpr=None)], order)
    assert roc.data[1].line.color == PALETTE[2]


def test_folder_stamp_changes_when_films_come_go_or_are_replaced_in_place(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    empty = folder_stamp(tmp_path)
    (tmp_path / "NORMAL" / "new.png").write_bytes(b"x")
    one = folder_stamp(tmp_path)
    assert one != empty and folder_stamp(tmp_path) == one  # the same tree, the same stamp
    folder_time = (tmp_path / "NORMAL").stat().st_mtime
    (tmp_path / "NORMAL" / "new.png").write_bytes(b"another film")  # overwritten in place
    later = time.time() + 5
    os.utime(tmp_path / "NORMAL" / "new.png", (later, later))
    os.utime(tmp_path / "NORMAL", (folder_time, folder_time))  # the folder's own time says nothing changed
    replaced = folder_stamp(tmp_path)
    assert replaced not in (empty, one)
    (tmp_path / "NORMAL" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a dangling link does not blind it
    assert folder_stamp(tmp_path) not in ("", replaced) and folder_stamp(tmp_path / "missing") == ""


def test_an_unreadable_sub_folder_is_a_line_of_the_stamp_not_the_whole_folder_gone(tmp_path, monkeypatch):
    """One sub-folder this server may not list (lost+found at a mount point, a private .folder) made the stamp
    "", which Compare reads as the folder moved or deleted: nothing could be evaluated there."""
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "NORMAL" / "a.png").write_bytes(b"x")
    (tmp_path / ".private").mkdir()
    listing = os.scandir

    def locked(path):  # what a 0700 folder of another owner answers (tests run as root, which may list it)
        if os.fspath(path).endswith(".private"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", locked)
    stamp = folder_stamp(tmp_path)
    assert stamp not in ("",) and folder_stamp(tmp_path) == stamp
    (tmp_path / "NORMAL" / "b.png").write_bytes(b"y")
    assert folder_stamp(tmp_path) not in ("", stamp)
    monkeypatch.setattr(os, "scandir", lambda path: locked(path) if os.fspath(path) != os.fspath(tmp_path) else
                        (_ for _ in ()).throw(PermissionError(13, "Permission denied", os.fspath(path))))
    assert folder_stamp(tmp_path) == ""  # the folder itself unreadable: gone, as before

def test_folder_stamp_follows_linked_class_folders_as_the_evaluation_reads_them(tmp_path):
    """An evaluation folder built of links to class folders elsewhere: a film added there is seen (else Compare
    would show the last evaluation's figures again), and a link back up the tree does not loop."""
    (tmp_path / "films" / "NORMAL").mkdir(parents=True)
    (tmp_path / "films" / "NORMAL" / "a.png").write_bytes(b"x")
    site = tmp_path / "site-eval"
    site.mkdir()
    (site / "NORMAL").symlink_to(tmp_path / "films" / "NORMAL", target_is_directory=True)
    (site / "NORMAL" / "loop").symlink_to(site, target_is_directory=True)
    before = folder_stamp(site)
    (tmp_path / "films" / "NORMAL" / "b.png").write_bytes(b"y")
    assert folder_stamp(site) not in ("", before)
    # a link deeper than a class folder is not read by the evaluation: its tree is not walked either
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "films" / "NORMAL" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    settled = folder_stamp(site)
    (tmp_path / "elsewhere" / "c.png").write_bytes(b"z")
    assert folder_stamp(site) == settled
    # with split folders, the class folders under a (linked) split are followed too
    split = tmp_path / "split-eval"
    split.mkdir()
    (split / "test").symlink_to(site, target_is_directory=True)
    before = folder_stamp(split)
    (tmp_path / "films" / "NORMAL" / "d.png").write_bytes(b"w")
    assert folder_stamp(split) not in ("", before)


FORMULAS = ['=HYPERLINK("http://evil.invalid","click").png', "+cmd.png", "-2+3.png", "@SUM(A1).png",
            "\tfilm.png", "\rfilm.png"]


@pytest.mark.parametrize("name", FORMULAS)
def test_worklist_csv_cells_a_spreadsheet_would_run_are_neutralised(name):
    batch = [_result(name, "urgent", 0.9),
             FilmResult(name, "y", error=f"{name} is not an image we can read."),
             _result("plain-film.png", "routine", 0.1, ["-3 dB: a warning that starts with a minus"])]
    table = pd.read_csv(io.BytesIO(worklist_csv(batch, "=model")), keep_default_na=False)
    assert list(table["File"]) == ["'" + name, "'" + name, "plain-film.png"]
    assert table.loc[1, "Warnings"].startswith("'" + name) and table.loc[2, "Warnings"].startswith("'-3 dB")
    assert (table["Model"] == "'=model").all()
    assert float(table.loc[0, "p(PNEUMONIA)"]) == pytest.approx(0.9)  # numbers stay numbers
    assert not any(str(cell).startswith(("=", "+", "-", "@", "\t", "\r")) for cell in table.to_numpy().ravel())


@pytest.mark.parametrize("value, safe", [("a=b.png", "a=b.png"), (-0.5, -0.5), (None, None), ("", ""),
                                         ("=1+1", "'=1+1"), ("@x", "'@x")])
def test_spreadsheet_safe_only_touches_text_that_starts_a_formula(value, safe):
    assert spreadsheet_safe(value) == safe


@pytest.mark.parametrize("text, escaped", [
    ("**Doe**, _Jane_.png", r"\*\*Doe\*\*, \_Jane\_.png"),
    (":red[x] :material/home: $x$", r"\:red\[x\] \:material/home: \$x\$"),
    ("<img src=x>#1 [a](http://e.invalid)", "\\<img src=x\\>#1 \\[a\\](http\\:\u2060//e.invalid)"),
    # web and e-mail addresses the browser would turn into links by itself: a word joiner keeps them text
    ("www.evil.example.png", "www\u2060.evil.example.png"), ("WWW.e.invalid", "WWW\u2060.e.invalid"),
    ("see https://e.invalid", "see https\\:\u2060//e.invalid"), ("admin@e.invalid.png", "admin\u2060@e.invalid.png"),
    ("# Doe", r"\# Doe"), ("1. Doe", r"1\. Doe"), ("- Doe", r"\- Doe"), ("=Doe", r"\=Doe"),
    ("two\nlines", "two lines"),
    ("person1946_bacteria_4874.jpeg", r"person1946\_bacteria\_4874.jpeg"),
    ("Not triaged: the image does not look like a usable chest film.",  # plain sentences stay as they are
     "Not triaged: the image does not look like a usable chest film."),
])
def test_escape_markdown_makes_names_literal(text, escaped):
    assert escape_markdown(text) == escaped


def test_a_recorded_folder_with_spaces_in_its_name_shows_none_of_its_words(tmp_path):
    """A split names its folder by server path; Compare and the card label it. Split at spaces, a folder
    "My Ward Films" once showed "Ward" on its own between two labels: the whole path is taken while it exists."""
    from types import SimpleNamespace

    from dashboard.components.reports import films_in_words

    folder = tmp_path / "My Ward Films" / "train"
    folder.mkdir(parents=True)
    split = (f"validation: 50 films, a patient-disjoint 20% of {folder} after holding out another batch "
             f"(kermany-batch); out-of-batch ({folder}).")
    shown = films_in_words(SimpleNamespace(split=split))
    assert shown == ("validation: 50 films, a patient-disjoint 20% of a folder outside the data roots after holding "
                     "out another batch (kermany-batch); out-of-batch (a folder outside the data roots).")
    assert not any(word in shown for word in ("Ward", "Films", str(tmp_path)))
    # the same folder deleted since: none of its words either (a review: "Jane Doe 1234" showed "Doe")
    gone = films_in_words(SimpleNamespace(split="a patient-disjoint fifth of /srv/ward films/Jane Doe 1234/train"))
    assert gone == "a patient-disjoint fifth of a folder outside the data roots"


def test_the_abnormal_score_shows_as_many_decimals_as_tell_it_from_the_threshold():
    """A routine film scoring 0.7306 against a threshold of 0.73135 read "0.731", the threshold to 3 decimals: the
    column now shows 4 decimals, and its help the threshold at the same."""
    def scored(score: float, priority: str) -> FilmResult:
        prediction = Prediction("m", {"NORMAL": 1 - score, "PNEUMONIA": score}, "NORMAL", priority, score, 0.73135, [])
        return FilmResult(f"{score}.png", "x", np.zeros((4, 4), np.uint8), (4, 4), "PNG", {}, prediction)

    column = worklist_columns(("NORMAL", "PNEUMONIA"), [scored(0.7306, "routine"), scored(0.95, "urgent")])
    score = column["Abnormal score"]
    assert score["type_config"]["format"] == "%.4f"  # 0.7306 and the threshold 0.73135 differ at four decimals
    assert score["help"] == "1 − p(normal); urgent at or above the threshold, 0.7313."
    nearer = worklist_columns(("NORMAL", "PNEUMONIA"), [scored(0.7313, "routine")])["Abnormal score"]
    assert nearer["type_config"]["format"] == "%.5f"
    assert worklist_columns(("NORMAL", "PNEUMONIA"), BATCH)["Abnormal score"]["type_config"]["format"] == "%.3f"
