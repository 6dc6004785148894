"""How the promise travels (#13): figures beside internal validation on the model card and on Compare.

One real model is trained per session with the ``kermany-batch`` holdout (logistic, 64 px, one epoch, 400 films
of kermany-224/train), so it carries an out-of-batch report; the quick models of e2e_support were trained
without a holdout, and the shipped models predate it. Expected numbers are read from the model's JSON file
itself, not from the record the page formats, and rounded as the page displays them.

The "adults" report (specificity on shared-data/tb/train/Normal) is withdrawn: that folder holds smoothed
noise textures, not films. A version that still stores it (written before the withdrawal) must load and must
not show it anywhere.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from e2e_support import FILMS_DIR, ROOT, TRAIN_DIR, app_page, quick_checkpoints, require
from streamlit.testing.v1 import AppTest

from core.store.atomic import atomic_write_json
from core.store.checkpoints import load_checkpoint
from core.store.records import Calibration, read_model_record
from core.store.registry import list_models
from core.store.reports import WITHDRAWN
from core.training.other_reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED, OUT_OF_BATCH, TIGHTER_FRAMING
from dashboard.components.charts import travel_intervals
from dashboard.components.reports import percent, threshold_value
from core.evaluation.site_range import stored_site_range
from dashboard.components.travel import (FIGURES, NOT_MEASURED, VALIDATION, line_summaries,
                                         metrics_with_travel, other_reports_in_order, out_of_batch_origin,
                                         read_at_another_threshold, site_range_line, travel_comparison, travel_points,
                                         travel_table)

HELD_OUT_MODEL = "pneumonia-logistic-v1"
QUICK_MODELS = ["pneumonia-cnn5-v1", "pneumonia-mlp-v1"]


@functools.cache
def _held_out_template() -> Path:
    from core.store.records import TrainConfig
    from core.training.train import train

    require(TRAIN_DIR, "the Kermany train split")
    folder = Path(tempfile.mkdtemp(prefix="cxr-test-holdout-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    train(TRAIN_DIR, TrainConfig(arch="logistic", epochs=1, image_size=64, max_films=400, augment=False,
                                 holdout="kermany-batch"), directory=folder)
    return folder


@pytest.fixture
def held_out_folder(tmp_path) -> Path:
    """A site folder holding only the model trained with a holdout (its task's default)."""
    return Path(shutil.copytree(_held_out_template(), tmp_path / "held-out", ignore=shutil.ignore_patterns(".*")))


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """The quick models (no other reports; cnn5 the default) beside the model trained with a holdout."""
    folder = quick_checkpoints(tmp_path / "mixed")
    for path in _held_out_template().glob(f"{HELD_OUT_MODEL}.*"):  # weights, description, population check
        shutil.copy(path, folder)
    return folder


def _stored_json(folder: Path) -> dict:
    return json.loads((folder / f"{HELD_OUT_MODEL}.json").read_text())


def _percent(value: float, interval: list[float]) -> str:
    return f"{value * 100:.1f} % ({interval[0] * 100:.1f}–{interval[1] * 100:.1f})"


def _auc(value: float, interval: list[float]) -> str:
    if interval[0] == interval[1]:  # a few perfectly separated films: every resample the same
        return f"{value:.3f} (no interval: every resample of these films gives the same value)"
    return f"{value:.3f} ({interval[0]:.3f}–{interval[1]:.3f})"


def _entry(folder: Path, name: str):
    entries, problems = list_models(folder)
    assert not problems
    return next(e for e in entries if e.name == name)


def test_the_card_table_shows_every_set_of_films_with_the_stored_figures(held_out_folder):
    stored = _stored_json(held_out_folder)
    batch, validation = stored["other_reports"][OUT_OF_BATCH], stored["report"]
    assert set(stored["other_reports"]) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    assert batch["class_counts"][0] > 0 and batch["class_counts"][1] > 0  # both classes held out
    table = travel_table(_entry(held_out_folder, HELD_OUT_MODEL).record)
    assert list(table.index) == list(FIGURES)
    assert list(table.columns) == ["Validation", "Other batch"]
    # the same held-out films framed tighter: a line under the table (the sidebar has no room for a column)
    framed = stored["other_reports"][TIGHTER_FRAMING]
    assert framed["n"] == batch["n"]
    framed_spec = _percent(framed["at_operating_point"]["specificity"], framed["at_operating_point"]["specificity_ci"])
    record = _entry(held_out_folder, HELD_OUT_MODEL).record
    collection_line, framed_collection_line, line = line_summaries(record)
    assert line.startswith(f"**Another batch, framed 15 % tighter (synthetic)** ({framed['n']} films): AUC ")
    assert line.endswith(f"specificity {framed_spec}.")
    # Kermany-type films of another collection, real ones: a line too, with its stored figures
    collection = stored["other_reports"][OTHER_COLLECTION]
    collection_spec = _percent(collection["at_operating_point"]["specificity"],
                               collection["at_operating_point"]["specificity_ci"])
    assert collection_line.startswith(f"**Another collection (viral pneumonias)** ({collection['n']} films): AUC "
                                      f"{_auc(collection['auc'], collection['auc_ci'])}; sensitivity ")
    assert collection_line.endswith(f"specificity {collection_spec}.")
    # the same films framed tighter, then the range over both readings: what a new site may see
    collection_framed = stored["other_reports"][OTHER_COLLECTION_FRAMED]
    assert framed_collection_line.startswith(f"**Another collection, framed 15 % tighter** ({collection['n']} films)")
    specificities = [r["at_operating_point"]["specificity_ci"] for r in (collection, collection_framed)]
    low, high = min(i[0] for i in specificities), max(i[1] for i in specificities)
    assert site_range_line(record).startswith("**Range at a new site** (from the lowest to the highest 95 % interval "
                                              "end of another collection as collected and framed 15 % tighter; how")
    assert site_range_line(record).endswith(f"specificity {low * 100:.1f}–{high * 100:.1f} %.")
    assert list(table["Other batch"]) == [
        str(batch["n"]), _auc(batch["auc"], batch["auc_ci"]),
        _percent(batch["at_operating_point"]["sensitivity"], batch["at_operating_point"]["sensitivity_ci"]),
        _percent(batch["at_operating_point"]["specificity"], batch["at_operating_point"]["specificity_ci"])]
    assert table.loc["AUC", "Validation"] == _auc(validation["auc"], validation["auc_ci"])
    # the report was read at the shipped operating point
    assert batch["operating_point"]["threshold"] == stored["operating_point"]["threshold"]


def test_a_model_trained_without_a_holdout_shows_another_batch_as_not_measured(tmp_path):
    folder = quick_checkpoints(tmp_path / "quick")
    record = _entry(folder, "pneumonia-cnn5-v1").record
    # no batch was held out
    assert set(record.other_reports) == {TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    assert record.other_reports[TIGHTER_FRAMING].n == record.report.n
    table = travel_table(record)
    assert list(table.columns) == ["Validation", "Other batch"]
    assert list(table["Other batch"]) == [NOT_MEASURED] * 4
    assert table.loc["n", "Validation"] == str(record.report.n)
    assert out_of_batch_origin(record) is None and read_at_another_threshold(record) == []


def test_a_shipped_baseline_shows_the_figures_of_its_recipes_holdout_run_and_says_so():
    record = read_model_record(ROOT / "checkpoints" / "pneumonia-logistic-v1.json")
    assert record.training.config.holdout is None  # trained on every film, the held-out batch included
    run = record.holdout_run
    assert (run.name, run.rule, run.precision) == ("pneumonia-logistic-holdout-v1", "kermany-batch", "fp32")
    lent = record.other_reports[OUT_OF_BATCH]
    assert (lent.n, lent.class_counts, lent.threshold) == (1154, [394, 760], run.threshold)
    table = travel_table(record)
    # the project's own figures follow as a line
    assert list(table.columns) == ["Validation", "Other batch"]
    assert table.loc["n", "Other batch"] == "1154"
    assert table.loc["AUC", "Other batch"] == _auc(lent.auc, list(lent.auc_ci))
    assert table.loc["AUC", "Validation"] == _auc(record.report.auc, list(record.report.auc_ci))
    assert "another run of the same recipe" in out_of_batch_origin(record)
    assert read_at_another_threshold(record) == []  # the run's own threshold, said in the sentence instead


def test_a_shipped_model_without_another_batch_shows_it_as_not_measured():
    record = read_model_record(ROOT / "checkpoints" / "covid-cnn5-v1.json")
    assert set(record.other_reports) == {TIGHTER_FRAMING} and record.holdout_run is None
    table = travel_table(record)
    assert list(table["Other batch"]) == [NOT_MEASURED] * 4  # three classes: the AUC is macro, and says so
    assert table.loc["AUC", "Validation"] == _auc(record.report.auc, list(record.report.auc_ci)) + ", macro"


def test_the_card_says_which_weights_and_which_threshold_the_figures_describe(held_out_folder):
    record = _entry(held_out_folder, HELD_OUT_MODEL).record
    assert record.training.config.holdout == "kermany-batch"
    assert "this run's own" in out_of_batch_origin(record)
    retrained = record.model_copy(update={"training": record.training.model_copy(update={
        "config": record.training.config.model_copy(update={"holdout": None})})})
    assert "retrained on every film" in out_of_batch_origin(retrained)
    assert read_at_another_threshold(record) == []
    recalibrated = record.model_copy(update={"operating_point": record.operating_point.model_copy(
        update={"threshold": record.operating_point.threshold / 2})})
    assert read_at_another_threshold(recalibrated) == ["Another batch", "Another collection (viral pneumonias)",
                                                       "Another collection, framed 15 % tighter",
                                                       "Another batch, framed 15 % tighter (synthetic)"]


def test_compare_table_and_chart_put_models_side_by_side(mixed_folder):
    stored = _stored_json(mixed_folder)
    entries, _ = list_models(mixed_folder)
    table = travel_comparison(entries)
    assert set(table.columns) == {HELD_OUT_MODEL, *QUICK_MODELS}
    batch = stored["other_reports"][OUT_OF_BATCH]["at_operating_point"]
    assert table.loc["Another batch: specificity", HELD_OUT_MODEL] == _percent(batch["specificity"],
                                                                              batch["specificity_ci"])
    assert (table.loc["Another batch: specificity", QUICK_MODELS] == NOT_MEASURED).all()
    rows = ("Another batch", "Another collection (viral pneumonias)", "Another collection, framed 15 % tighter",
            "Another batch, framed 15 % tighter (synthetic)", "Validation films, framed 15 % tighter (synthetic)",
            "Range at a new site")  # the quick models held no batch out: they framed their validation films
    expected = [f"{films}: {label}" for films in rows for label in ("films", "AUC", "sensitivity", "specificity")]
    assert list(table.index) == [*expected[:4], "Another batch: read at threshold", *expected[4:]]
    read_at = table.loc["Another batch: read at threshold"]  # it held the batch out itself: its own threshold
    assert read_at[HELD_OUT_MODEL] == f"{threshold_value(stored['other_reports'][OUT_OF_BATCH]['threshold'])} (this " \
                                      "version's)"
    assert (read_at[QUICK_MODELS] == NOT_MEASURED).all()
    spans = stored_site_range(_entry(mixed_folder, HELD_OUT_MODEL).record.other_reports)
    assert table.loc["Range at a new site: specificity", HELD_OUT_MODEL] == \
        f"{spans.specificity[0] * 100:.1f}–{spans.specificity[1] * 100:.1f} %"
    merged = list(metrics_with_travel([(e, e.record.report) for e in entries]).index)
    threshold = merged.index("Internal validation: Threshold (abnormal score)")  # its rows named as the others are
    assert merged[threshold + 1: threshold + 1 + len(table)] == list(table.index)  # after the threshold
    assert merged[threshold + 1 + len(table)] == "Parameters"
    chart = travel_intervals(travel_points(entries))
    assert [t.name for t in chart.data] == [n for e in entries for n in (e.name, e.name)]  # sensitivity, specificity
    (trace,) = [t for t in chart.data if t.name == HELD_OUT_MODEL and t.xaxis == "x2"]  # the specificity panel
    row = list(trace.y).index("Another batch")
    assert trace.x[row] == pytest.approx(batch["specificity"])
    assert trace.customdata[row] == percent(batch["specificity"])  # the hover as the tables write it
    assert trace.error_x.arrayminus[row] == pytest.approx(batch["specificity"] - batch["specificity_ci"][0])
    assert trace.error_x.array[row] == pytest.approx(batch["specificity_ci"][1] - batch["specificity"])


def _app(settings_env, folder: Path, tmp_path: Path, page: str | None = None) -> AppTest:
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    return app_page(page)


def _card_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption])


def test_the_card_says_where_a_recalibrated_threshold_came_from():
    from dashboard.components.model_card import operating_point_text, recalibration_origin

    # the previous default as it was shipped: the first ensemble re-chosen for 96 % instead of 98 %
    calibration = Calibration.model_validate({
        "from": "pneumonia-resnet18-224-ensemble-v1", "previous_threshold": 0.17295099632644653,
        "previous_policy": "highest threshold with validation sensitivity >= 98%", "target_sensitivity": 0.96})
    default = read_model_record(ROOT / "checkpoints" / "pneumonia-resnet18-224-wide-ensemble-v1.json").model_copy(
        update={"calibration": calibration})
    assert recalibration_origin(default) == (" Re-chosen from pneumonia-resnet18-224-ensemble-v1 (threshold 0.17295) "
                                             "with the same weights, on the same validation films.")
    assert recalibration_origin(read_model_record(ROOT / "checkpoints" / "pneumonia-logistic-v1.json")) == ""
    on_site = default.model_copy(update={"calibration": default.calibration.model_copy(
        update={"source": "site folder", "folder": "ward-films/2026", "previous_threshold": None})})
    assert recalibration_origin(on_site) == (" Re-chosen from pneumonia-resnet18-224-ensemble-v1 with the same "
                                             "weights, on the site folder `ward-films/2026`.")
    # the sentence it ends: the target was met on the films named, validation or the site's
    assert operating_point_text(default).endswith(
        "chosen for ≥ 96 % sensitivity on validation." + recalibration_origin(default))
    assert operating_point_text(on_site).endswith(
        "chosen for ≥ 96 % sensitivity on the site folder's films." + recalibration_origin(on_site))


def test_triage_card_shows_the_other_batch_figures_with_their_intervals(held_out_folder, tmp_path, settings_env):
    stored = _stored_json(held_out_folder)
    at = _app(settings_env, held_out_folder, tmp_path)
    assert at.sidebar.selectbox[0].value == HELD_OUT_MODEL
    (table,) = [t.value for t in at.sidebar.table]
    batch = stored["other_reports"][OUT_OF_BATCH]["at_operating_point"]
    assert table.loc["Spec.", "Other batch"] == _percent(batch["specificity"], batch["specificity_ci"])
    assert table.loc["n", "Other batch"] == str(stored["other_reports"][OUT_OF_BATCH]["n"])
    card = _card_text(at)
    assert "How the promise travels" in card and "overstate what a new site will see" in card
    assert "specificity fell from 91–100 % on validation to 41.5–73.5 %" in card  # the hidden test
    assert "this run's own" in card and "not measured on another batch" not in card
    assert "**Another batch, framed 15 % tighter (synthetic)**" in card
    assert "a floor on the loss, not a forecast" in card
    spans = stored_site_range(_entry(held_out_folder, HELD_OUT_MODEL).record.other_reports)
    assert "**Range at a new site** (from the lowest to the highest 95 % interval end" in card and \
        f"specificity {spans.specificity[0] * 100:.1f}–{spans.specificity[1] * 100:.1f} %." in card
    assert "recalibrate on a site's own labelled films" in card
    assert "Adults" not in card and "the network alone" not in card  # the withdrawn adult-normals row is gone
    assert str(TRAIN_DIR.resolve()) not in card  # folders by their data-root label only


def test_triage_card_of_a_model_without_a_holdout_says_not_measured(tmp_path, settings_env):
    at = _app(settings_env, quick_checkpoints(tmp_path / "quick"), tmp_path)
    assert at.sidebar.selectbox[0].value == "pneumonia-cnn5-v1"
    card = _card_text(at)
    assert "**not measured on another batch**" in card and "overstate what a new site will see" in card
    (table,) = [t.value for t in at.sidebar.table]
    assert list(table["Other batch"]) == [NOT_MEASURED] * 4
    assert list(table.columns) == ["Validation", "Other batch"]


def test_compare_lists_out_of_batch_figures_for_each_model_that_has_them(mixed_folder, tmp_path, settings_env):
    stored = _stored_json(mixed_folder)
    at = _app(settings_env, mixed_folder, tmp_path, "views/compare.py")
    at.multiselect[0].set_value([*QUICK_MODELS, HELD_OUT_MODEL])
    at.run()
    assert not at.exception
    table = at.dataframe[0].value  # the metrics table: validation, then the other sets, then size and speed
    assert list(table.columns) == [*QUICK_MODELS, HELD_OUT_MODEL]
    batch = stored["other_reports"][OUT_OF_BATCH]
    assert table.loc["Another batch: AUC", HELD_OUT_MODEL] == _auc(batch["auc"], batch["auc_ci"])
    assert table.loc["Another batch: sensitivity", HELD_OUT_MODEL] == _percent(
        batch["at_operating_point"]["sensitivity"], batch["at_operating_point"]["sensitivity_ci"])
    assert (table.loc["Another batch: AUC", QUICK_MODELS] == NOT_MEASURED).all()
    which = next(c.value for c in at.caption if c.value.startswith("Which films"))
    assert f"**{HELD_OUT_MODEL}**: out-of-batch: {batch['n']} films" in which
    assert f"**{HELD_OUT_MODEL}**: The other-batch figures are this run's own" in which
    assert all(f"**{name}**: not measured on another batch" in which for name in QUICK_MODELS)
    assert any(m.value.startswith("**How the promise travels.**") and "overstate what a new site will see" in m.value
               for m in at.markdown)
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "Sensitivity" in c.proto.spec
                 and "error_x" in c.proto.spec)
    held = [t for t in chart["data"] if t["name"] == HELD_OUT_MODEL]
    assert {y for t in held for y in t["y"]} == {VALIDATION, "Another batch", "Another collection (viral pneumonias)",
                                                 "Another collection, framed 15 % tighter",
                                                 "Another batch, framed 15 % tighter (synthetic)"}
    spans = stored_site_range(_entry(mixed_folder, HELD_OUT_MODEL).record.other_reports)
    assert table.loc["Range at a new site: AUC", HELD_OUT_MODEL] == f"{spans.auc[0]:.3f}–{spans.auc[1]:.3f}"


def test_compare_of_models_never_measured_on_another_batch_says_so(tmp_path, settings_env):
    at = _app(settings_env, quick_checkpoints(tmp_path / "quick"), tmp_path, "views/compare.py")
    table = at.dataframe[0].value
    assert (table.loc[["Another batch: films", "Another batch: AUC", "Another batch: sensitivity",
                       "Another batch: specificity", "Another batch: read at threshold"]] == NOT_MEASURED).all().all()
    which = next(c.value for c in at.caption if c.value.startswith("Which films"))
    assert all(f"**{name}**: not measured on another batch" in which for name in QUICK_MODELS)


def test_evaluating_on_the_sixteen_films_says_they_chose_the_policy(tmp_path, settings_env):
    require(FILMS_DIR, "films")
    at = _app(settings_env, quick_checkpoints(tmp_path / "quick"), tmp_path, "views/compare.py")
    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    assert next(s for s in at.selectbox if s.label.startswith("Folder of films")).value == "films"
    assert not any("no longer a clean check" in i.value for i in at.info)  # not before anything is evaluated
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert not at.exception and not at.error
    assert any("16 full-resolution films" in i.value and "no longer a clean check" in i.value for i in at.info)


def test_summary_with_intervals_carries_each_figure_its_interval_and_films(held_out_folder):
    stored = _stored_json(held_out_folder)
    record = _entry(held_out_folder, HELD_OUT_MODEL).record
    batch = record.other_reports[OUT_OF_BATCH].summary_with_intervals()
    raw = stored["other_reports"][OUT_OF_BATCH]
    assert batch["specificity_ci"] == tuple(raw["at_operating_point"]["specificity_ci"])
    assert batch["auc_ci"] == tuple(raw["auc_ci"]) and batch["n"] == raw["n"]
    assert batch["threshold"] == stored["operating_point"]["threshold"]
    assert json.loads(json.dumps(batch))["sensitivity_ci"] == raw["at_operating_point"]["sensitivity_ci"]  # JSON-able


# What versions written before the withdrawal stored, word for word (core.training.other_reports until #14).
OLD_ADULTS = "adults"
OLD_ADULTS_SPLIT = ("adults: outside the training population (150 adult normal films of the Tuberculosis Chest X-ray "
                    "Database, shared-data/tb/train/Normal); the network alone, without the chest-film check")


@pytest.fixture
def old_version_folder(held_out_folder) -> Path:
    """The held-out model as a version written before the withdrawal: its JSON also stores an ``adults`` report
    (the old key and wording), read at an earlier threshold, so it would be named among those too if shown."""
    path = held_out_folder / f"{HELD_OUT_MODEL}.json"
    stored = json.loads(path.read_text())
    adults = json.loads(json.dumps(stored["other_reports"][OUT_OF_BATCH]))
    adults["split"] = OLD_ADULTS_SPLIT
    adults["operating_point"]["threshold"] /= 2
    stored["other_reports"][OLD_ADULTS] = adults
    atomic_write_json(path, stored)  # the store's own writer, as the old version was written
    return held_out_folder


def test_a_version_storing_the_withdrawn_adults_report_loads_and_nothing_shows_it(old_version_folder, tmp_path,
                                                                                  settings_env):
    assert OLD_ADULTS in WITHDRAWN
    entries, problems = list_models(old_version_folder)
    assert not problems
    record = _entry(old_version_folder, HELD_OUT_MODEL).record
    assert set(record.other_reports) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED,
                                         OLD_ADULTS}  # as stored
    loaded = load_checkpoint(old_version_folder / f"{HELD_OUT_MODEL}.json")
    assert loaded.record.other_reports[OLD_ADULTS].split == OLD_ADULTS_SPLIT
    assert [key for key, _, _ in other_reports_in_order(record)] == [OUT_OF_BATCH, OTHER_COLLECTION,
                                                                     OTHER_COLLECTION_FRAMED, TIGHTER_FRAMING]
    assert list(travel_table(record).columns) == ["Validation", "Other batch"]
    assert read_at_another_threshold(record) == []  # its older threshold is not mentioned either
    framings = ("Another batch", "Another collection (viral pneumonias)", "Another collection, framed 15 % tighter",
                "Another batch, framed 15 % tighter (synthetic)")
    rows = (*framings, "Range at a new site")
    expected = [f"{films}: {label}" for films in rows for label in ("films", "AUC", "sensitivity", "specificity")]
    assert list(travel_comparison(entries).index) == [*expected[:4], "Another batch: read at threshold", *expected[4:]]
    assert {p.films for p in travel_points(entries)} == {VALIDATION, *framings}

    card_page = _app(settings_env, old_version_folder, tmp_path)
    card = _card_text(card_page)
    assert "How the promise travels" in card and "Other batch" in card
    assert "adults" not in card and "the network alone" not in card and "earlier threshold" not in card
    (table,) = [t.value for t in card_page.sidebar.table]
    assert list(table.columns) == ["Validation", "Other batch"]

    compare = _app(settings_env, old_version_folder, tmp_path, "views/compare.py")
    compare.multiselect[0].set_value([HELD_OUT_MODEL]).run()
    assert not compare.exception
    rows = list(compare.dataframe[0].value.index)
    assert "Another batch: films" in rows and not [row for row in rows if "adults" in row.lower()]
    which = next(c.value for c in compare.caption if c.value.startswith("Which films"))
    assert "adults" not in which and "out-of-batch" in which
