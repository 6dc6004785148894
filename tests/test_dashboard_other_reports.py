"""How the promise travels (#13): figures beside internal validation on the model card and on Compare.

One real model is trained per session with the ``kermany-batch`` holdout (logistic, 64 px, one epoch, 400 films
of kermany-224/train), so it carries an out-of-batch report and the adult-normals report; the quick models of
e2e_support were trained without a holdout (adults only), and the shipped models predate both. Expected
numbers are read from the model's JSON file itself, not from the record the page formats, and rounded as the
page displays them.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from e2e_support import FILMS_DIR, ROOT, TRAIN_DIR, quick_checkpoints, require
from streamlit.testing.v1 import AppTest

from core.store.records import read_model_record
from core.store.registry import list_models
from core.training.other_reports import ADULTS, OUT_OF_BATCH
from dashboard.components.charts import travel_intervals
from dashboard.components.reports import (FIGURES, NOT_MEASURED, TRAVEL_TITLES, VALIDATION,
                                          metrics_with_travel, out_of_batch_origin, read_at_another_threshold,
                                          travel_comparison, travel_points, travel_table)

APP = str(ROOT / "dashboard" / "app.py")
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
    for suffix in (".json", ".pt"):
        shutil.copy(_held_out_template() / f"{HELD_OUT_MODEL}{suffix}", folder)
    return folder


def _stored_json(folder: Path) -> dict:
    return json.loads((folder / f"{HELD_OUT_MODEL}.json").read_text())


def _percent(value: float, interval: list[float]) -> str:
    return f"{value * 100:.1f} % ({interval[0] * 100:.1f}–{interval[1] * 100:.1f})"


def _auc(value: float, interval: list[float]) -> str:
    return f"{value:.3f} ({interval[0]:.3f}–{interval[1]:.3f})"


def _entry(folder: Path, name: str):
    entries, problems = list_models(folder)
    assert not problems
    return next(e for e in entries if e.name == name)


def test_the_card_table_shows_every_set_of_films_with_the_stored_figures(held_out_folder):
    stored = _stored_json(held_out_folder)
    batch, adults, validation = stored["other_reports"][OUT_OF_BATCH], stored["other_reports"][ADULTS], stored["report"]
    assert batch["class_counts"][0] > 0 and batch["class_counts"][1] > 0  # both classes held out
    assert adults["class_counts"] == [150, 0]  # the adult normals of shared-data/tb/train/Normal
    table = travel_table(_entry(held_out_folder, HELD_OUT_MODEL).record)
    assert list(table.index) == list(FIGURES)
    assert list(table.columns) == ["Validation", "Other batch", "Adults"]
    assert list(table["Other batch"]) == [
        str(batch["n"]), _auc(batch["auc"], batch["auc_ci"]),
        _percent(batch["at_operating_point"]["sensitivity"], batch["at_operating_point"]["sensitivity_ci"]),
        _percent(batch["at_operating_point"]["specificity"], batch["at_operating_point"]["specificity_ci"])]
    # one class: there is no AUC and no sensitivity, and the table says why instead of a number
    assert list(table["Adults"]) == [
        "150", "— (one class only)", "— (one class only)",
        _percent(adults["at_operating_point"]["specificity"], adults["at_operating_point"]["specificity_ci"])]
    assert table.loc["AUC", "Validation"] == _auc(validation["auc"], validation["auc_ci"])
    # every report was read at the shipped operating point
    assert batch["operating_point"]["threshold"] == adults["operating_point"]["threshold"] == \
        stored["operating_point"]["threshold"]


def test_a_model_trained_without_a_holdout_shows_another_batch_as_not_measured(tmp_path):
    folder = quick_checkpoints(tmp_path / "quick")
    record = _entry(folder, "pneumonia-cnn5-v1").record
    adults = json.loads((folder / "pneumonia-cnn5-v1.json").read_text())["other_reports"][ADULTS]
    assert set(record.other_reports) == {ADULTS}
    table = travel_table(record)
    assert list(table["Other batch"]) == [NOT_MEASURED] * 4
    assert table.loc["Spec.", "Adults"] == _percent(
        adults["at_operating_point"]["specificity"], adults["at_operating_point"]["specificity_ci"])
    assert table.loc["n", "Validation"] == str(record.report.n)
    assert out_of_batch_origin(record) is None and read_at_another_threshold(record) == []


def test_a_shipped_model_from_before_these_checks_shows_both_as_not_measured():
    record = read_model_record(ROOT / "checkpoints" / "pneumonia-logistic-v1.json")
    assert record.other_reports == {}
    table = travel_table(record)
    assert list(table.columns) == ["Validation", "Other batch", "Adults"]
    assert list(table["Other batch"]) == list(table["Adults"]) == [NOT_MEASURED] * 4
    assert table.loc["AUC", "Validation"] == _auc(record.report.auc, list(record.report.auc_ci))


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
    assert sorted(read_at_another_threshold(recalibrated)) == ["Adults outside the training population",
                                                               "Another batch"]


def test_known_keys_are_the_ones_training_writes():
    assert {OUT_OF_BATCH, ADULTS} <= set(TRAVEL_TITLES)


def test_compare_table_and_chart_put_models_side_by_side(mixed_folder):
    stored = _stored_json(mixed_folder)
    entries, _ = list_models(mixed_folder)
    table = travel_comparison(entries)
    assert set(table.columns) == {HELD_OUT_MODEL, *QUICK_MODELS}
    batch = stored["other_reports"][OUT_OF_BATCH]["at_operating_point"]
    assert table.loc["Another batch: specificity", HELD_OUT_MODEL] == _percent(batch["specificity"],
                                                                              batch["specificity_ci"])
    assert (table.loc["Another batch: specificity", QUICK_MODELS] == NOT_MEASURED).all()
    assert (table.loc["Adults outside the training population: films"] == "150").all()  # every model has adults
    merged = list(metrics_with_travel([(e, e.record.report) for e in entries]).index)
    threshold = merged.index("Threshold (abnormal score)")
    assert merged[threshold + 1: threshold + 1 + len(table)] == list(table.index)  # after the threshold
    assert merged[threshold + 1 + len(table)] == "Parameters"
    adults = stored["other_reports"][ADULTS]["at_operating_point"]
    chart = travel_intervals(travel_points(entries))
    assert [t.name for t in chart.data] == [n for e in entries for n in (e.name, e.name)]  # sensitivity, specificity
    (trace,) = [t for t in chart.data if t.name == HELD_OUT_MODEL and t.xaxis == "x2"]  # the specificity panel
    row = list(trace.y).index("Adults outside the training population")
    assert trace.x[row] == pytest.approx(adults["specificity"])
    assert trace.error_x.arrayminus[row] == pytest.approx(adults["specificity"] - adults["specificity_ci"][0])
    assert trace.error_x.array[row] == pytest.approx(adults["specificity_ci"][1] - adults["specificity"])


def _app(settings_env, folder: Path, tmp_path: Path, page: str | None = None) -> AppTest:
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    at = AppTest.from_file(APP, default_timeout=180)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception
    return at


def _card_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption])


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
    assert "this run's own" in card and "not measured on another batch" not in card
    assert "the network alone, without the chest-film check" in card  # which films the adult row is
    assert str(TRAIN_DIR.resolve()) not in card  # folders by their data-root label only


def test_triage_card_of_a_model_without_a_holdout_says_not_measured(tmp_path, settings_env):
    at = _app(settings_env, quick_checkpoints(tmp_path / "quick"), tmp_path)
    assert at.sidebar.selectbox[0].value == "pneumonia-cnn5-v1"
    card = _card_text(at)
    assert "**not measured on another batch**" in card and "overstate what a new site will see" in card
    (table,) = [t.value for t in at.sidebar.table]
    assert list(table["Other batch"]) == [NOT_MEASURED] * 4
    assert table.loc["n", "Adults"] == "150"


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
    assert {y for t in held for y in t["y"]} == {VALIDATION, "Another batch", "Adults outside the training population"}


def test_compare_of_models_never_measured_on_another_batch_says_so(tmp_path, settings_env):
    at = _app(settings_env, quick_checkpoints(tmp_path / "quick"), tmp_path, "views/compare.py")
    table = at.dataframe[0].value
    assert (table.loc[["Another batch: films", "Another batch: AUC", "Another batch: sensitivity",
                       "Another batch: specificity"]] == NOT_MEASURED).all().all()
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
    batch, adults = (record.other_reports[key].summary_with_intervals() for key in (OUT_OF_BATCH, ADULTS))
    raw = stored["other_reports"][OUT_OF_BATCH]
    assert batch["specificity_ci"] == tuple(raw["at_operating_point"]["specificity_ci"])
    assert batch["auc_ci"] == tuple(raw["auc_ci"]) and batch["n"] == raw["n"]
    assert batch["threshold"] == stored["operating_point"]["threshold"]
    assert adults["auc"] is None and adults["sensitivity"] is None and adults["sensitivity_ci"] is None
    assert adults["class_counts"] == {"NORMAL": 150, "PNEUMONIA": 0}
    assert adults["split"].startswith("adults: outside the training population")
    assert json.loads(json.dumps(batch))["sensitivity_ci"] == raw["at_operating_point"]["sensitivity_ci"]  # JSON-able
