"""The dashboard for three tasks (#14): the task choice, triage, Compare, Retrain and the model card with
models of three and four classes.

Two tiny CNNs are trained once per session at 32 px: a COVID-19 model on the real films of
``covid-3class/train`` (read through the alias table: ``Covid`` -> COVID-19) and a four-class model on the
shipped ``four-class`` manifest (400 of its films drawn class by class, from three sources). That manifest
reads TUBERCULOSIS from a ``tb-films`` data root a site configures; here it links to
``shared-data/tb/train/Tuberculosis``, whose files in this environment are noise textures, not films. So the
four-class model is a stand-in for what the pages draw (its stored figures, its classes), never a measure of
anything, and every film uploaded or evaluated here is a real chest film. Expected figures are read from each
model's JSON file, not from the record the page formats.
"""
from __future__ import annotations

import atexit
import functools
import io
import json
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from conftest import environment
from e2e_support import ROOT, SHARED_DATA, quick_checkpoints, require, retrain_page, wait_for
from streamlit.testing.v1 import AppTest

from core.jobs.jobs import cancel_job, read_job
from core.serving.predict import Prediction
from core.store.records import read_model_record
from dashboard.components.class_figures import CLASS_COLUMNS, class_table, source_table
from dashboard.components.reports import ARGMAX_ACCURACY, MACRO_AUC, with_interval
from dashboard.components.triage_view import LEADING_ABNORMAL, worklist, worklist_csv
from dashboard.state import FilmResult

APP = str(ROOT / "dashboard" / "app.py")
COVID_DIR = SHARED_DATA / "covid-3class" / "train"
KERMANY_DIR = SHARED_DATA / "kermany-224" / "train"
COVID, FOUR = "covid-cnn5-v1", "four-class-cnn5-v1"
CLASSES = {"covid": ["COVID-19", "NORMAL", "VIRAL PNEUMONIA"],
           "four-class": ["COVID-19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]}
MODEL_OF = {"covid": COVID, "four-class": FOUR}
TITLES = ["Pneumonia", "COVID-19", "Four classes (with tuberculosis)"]
# Real chest films, as a user would upload them.
FILMS = {"covid": [COVID_DIR / "Covid" / "01.jpeg", COVID_DIR / "Normal" / "01.jpeg",
                   COVID_DIR / "Viral Pneumonia" / "01.jpeg"],
         "four-class": [COVID_DIR / "Covid" / "01.jpeg", KERMANY_DIR / "NORMAL" / "IM-0115-0001.jpeg",
                        KERMANY_DIR / "PNEUMONIA" / "person1000_bacteria_2931.jpeg",
                        COVID_DIR / "Viral Pneumonia" / "01.jpeg"]}


def tb_films_roots(base: Path) -> Path:
    """A data-roots file naming a ``tb-films`` root whose ``Tuberculosis/`` links to the shared tb films (noise
    textures here: see the module docstring); the four-class manifest reads that class from it."""
    folder = base / "tb-films" / "Tuberculosis"
    folder.mkdir(parents=True)
    for film in sorted(require(SHARED_DATA / "tb" / "train" / "Tuberculosis", "the tb folder").iterdir()):
        (folder / film.name).symlink_to(film)
    roots = base / "roots.json"
    roots.write_text(json.dumps({"roots": {"tb-films": str(base / "tb-films")}}))
    return roots


@functools.cache
def _multi_template() -> Path:
    """The COVID-19 and four-class models, trained once per session into a template folder. Without their
    population checks (tests/test_population_check.py has those): ImageNet features of every training film
    would cost minutes here and no test of this file reads them."""
    from core.store.records import TrainConfig
    from core.training.train import train

    require(COVID_DIR, "the COVID-19 image set")
    folder, links = Path(tempfile.mkdtemp(prefix="cxr-test-tasks-")), Path(tempfile.mkdtemp(prefix="cxr-tb-"))
    for made in (folder, links):
        atexit.register(shutil.rmtree, made, ignore_errors=True)
    tiny = dict(arch="cnn5", epochs=1, image_size=32, seed=0)
    with mock.patch("core.training.train.try_fit_population_check", return_value=(None, None)):
        train(COVID_DIR, TrainConfig(**tiny, max_films=120), directory=folder)
        with environment(CXR_DATA_ROOTS=str(tb_films_roots(links))):
            train("four-class", TrainConfig(**tiny, max_films=400), directory=folder)
    return folder


@pytest.fixture
def site(tmp_path, settings_env) -> Path:
    """The quick pneumonia models (cnn5 the default, mlp) beside the COVID-19 and four-class models."""
    folder = quick_checkpoints(tmp_path / "site")
    for path in _multi_template().iterdir():
        if path.is_file() and not path.name.startswith(".") and path.name != "registry.json":
            shutil.copy(path, folder)
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    for task, name in MODEL_OF.items():  # each the first, so the default, of its task
        assert read_model_record(folder / f"{name}.json").task == task
    return folder


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception
    return at


def _stored(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def _choose_task(at: AppTest, task: str) -> None:
    at.sidebar.radio(key="task-choice").set_value(task)
    at.run()
    assert not at.exception


def _sidebar_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption])


# --- choosing the task ----------------------------------------------------------------------------------


def test_the_task_choice_offers_tasks_with_models_and_is_remembered_across_pages(site):
    at = _app()
    task = at.sidebar.radio(key="task-choice")
    assert task.options == TITLES and task.value == "pneumonia"  # a fresh session starts on pneumonia
    model = at.sidebar.selectbox[0]
    assert set(model.options) == {"pneumonia-cnn5-v1  (default)", "pneumonia-mlp-v1"}
    assert not any("No model yet" in c.value for c in at.sidebar.caption)  # every known task has one

    _choose_task(at, "covid")
    assert at.sidebar.selectbox[0].options == [f"{COVID}  (default)"] and at.sidebar.selectbox[0].value == COVID
    card = _sidebar_text(at)
    assert "Task COVID-19" in card and "classes COVID-19, NORMAL, VIRAL PNEUMONIA" in card

    at.switch_page("views/compare.py")
    at.run()
    assert not at.exception
    assert at.sidebar.radio(key="task-choice").value == "covid"
    assert at.multiselect[0].options == [COVID] and at.multiselect[0].value == [COVID]

    at.switch_page("views/triage.py")
    at.run()
    assert at.sidebar.radio(key="task-choice").value == "covid" and at.sidebar.selectbox[0].value == COVID
    _choose_task(at, "pneumonia")  # each task keeps its own model choice
    at.sidebar.selectbox[0].set_value("pneumonia-mlp-v1")
    at.run()
    _choose_task(at, "four-class")
    assert at.sidebar.selectbox[0].value == FOUR
    _choose_task(at, "pneumonia")
    assert at.sidebar.selectbox[0].value == "pneumonia-mlp-v1"


def test_tasks_without_a_model_are_named_with_how_to_get_one(tmp_path, settings_env):
    settings_env(CXR_MODELS=str(quick_checkpoints(tmp_path / "site")), CXR_JOBS=str(tmp_path / "jobs"))
    at = _app()
    task = at.sidebar.radio(key="task-choice")
    assert task.options == ["Pneumonia"] and task.value == "pneumonia"
    note = next(c.value for c in at.sidebar.caption if "No model yet" in c.value)
    assert "COVID-19 or Four classes (with tuberculosis)" in note and "Retrain page" in note


# --- triage with three and four classes -----------------------------------------------------------------


@pytest.mark.parametrize("task", ["covid", "four-class"])
def test_the_worklist_names_the_leading_abnormal_class_and_every_probability(site, task):
    classes, films = CLASSES[task], [require(p, "a real film") for p in FILMS[task]]
    at = _app()
    _choose_task(at, task)
    at.file_uploader(key="films").set_value([(p.name, p.read_bytes(), "application/octet-stream") for p in films])
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    table = at.dataframe[0].value
    assert sorted(table["File"]) == sorted(p.name for p in films)
    probabilities = table[[f"p({c})" for c in classes]].to_numpy(dtype=float)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    abnormal = [c for c in classes if c != "NORMAL"]
    for row, p in zip(table.to_dict("records"), probabilities):
        leading = abnormal[int(np.argmax([row[f"p({c})"] for c in abnormal]))]
        assert row[LEADING_ABNORMAL] == leading
        assert row["Top class"] == classes[int(np.argmax(p))]
        assert row["Probability"] == pytest.approx(p.max())
        assert row["Abnormal score"] == pytest.approx(1 - row["p(NORMAL)"], abs=1e-4)
        if row["Priority"] == "Urgent":  # an urgent film is labelled with its leading abnormal class
            assert row["Label"] == leading
        elif row["Priority"] == "Routine":
            assert row["Label"] == "NORMAL"
    bars = [json.loads(c.proto.spec)["data"][0] for c in at.get("plotly_chart")]
    assert len(bars) == len(films) and all(sorted(b["y"]) == sorted(classes) for b in bars)

    explain = [s for s in at.selectbox if s.label == "Explain class"]
    assert len(explain) == len(films) and all(s.options == classes for s in explain)
    explain[0].set_value(abnormal[-1])
    at.run()
    assert not at.exception
    captions = [c for image in at.get("image") for c in image.captions]
    assert f"Grad-CAM for {abnormal[-1]} (red = most evidence)" in captions


def _prediction(probabilities: dict[str, float], priority: str | None, threshold: float = 0.6) -> Prediction:
    score = 1 - probabilities["NORMAL"]
    abnormal = max((c for c in probabilities if c != "NORMAL"), key=probabilities.get)
    label = abnormal if score >= threshold else "NORMAL"
    return Prediction("four", probabilities, label, priority, score, threshold, [])


def test_worklist_and_csv_of_a_four_class_model_carry_every_class():
    classes = CLASSES["four-class"]
    results = [
        FilmResult("tb.png", "a", np.zeros((4, 4), np.uint8), (4, 4), "PNG", {}, _prediction(
            {"COVID-19": 0.05, "NORMAL": 0.10, "PNEUMONIA": 0.25, "TUBERCULOSIS": 0.60}, "urgent")),
        FilmResult("calm.png", "b", np.zeros((4, 4), np.uint8), (4, 4), "PNG", {}, _prediction(
            {"COVID-19": 0.20, "NORMAL": 0.70, "PNEUMONIA": 0.04, "TUBERCULOSIS": 0.06}, "routine")),
        FilmResult("broken.png", "c", error="broken.png is not an image we can read."),
    ]
    table = worklist(results, classes)
    assert list(table.columns) == ["File", "Priority", "Label", LEADING_ABNORMAL, "Top class", "Probability",
                                   "Abnormal score", *[f"p({c})" for c in classes], "Warnings"]
    assert list(table["Label"][:2]) == ["TUBERCULOSIS", "NORMAL"]
    assert list(table[LEADING_ABNORMAL][:2]) == ["TUBERCULOSIS", "COVID-19"]  # nearest abnormality of a routine film
    assert list(table["Top class"][:2]) == ["TUBERCULOSIS", "NORMAL"]
    assert table.loc[1, "p(COVID-19)"] == pytest.approx(0.20) and pd.isna(table.loc[2, "p(NORMAL)"])

    csv = pd.read_csv(io.BytesIO(worklist_csv(results, "four-class-cnn5-v1", classes)))
    assert list(csv["File"]) == ["tb.png", "calm.png", "broken.png"]
    assert list(csv[LEADING_ABNORMAL][:2]) == ["TUBERCULOSIS", "COVID-19"]
    assert csv.loc[0, "p(TUBERCULOSIS)"] == pytest.approx(0.60) and csv.loc[0, "Threshold"] == pytest.approx(0.6)
    assert (csv["Model"] == "four-class-cnn5-v1").all()


# --- the model card --------------------------------------------------------------------------------------


def test_the_card_of_a_multiclass_model_gives_its_task_classes_and_recall_per_class(site):
    stored = _stored(site, FOUR)["report"]["at_operating_point"]
    at = _app()
    _choose_task(at, "four-class")
    card = _sidebar_text(at)
    assert "Task Four classes (with tuberculosis)" in card
    assert "classes COVID-19, NORMAL, PNEUMONIA, TUBERCULOSIS" in card
    assert "Per class on validation" in card and "for each abnormal class on its own" in card
    for name in CLASSES["four-class"]:
        figures = stored["per_class"][name]
        called = f"called {name} {with_interval(figures['recall'], figures['recall_ci'])}"
        if name == "NORMAL":
            assert f"- {name} ({figures['support']} films): {called}" in card
        else:
            flagged = with_interval(stored["flag_recall"][name], stored["flag_recall_ci"][name])
            assert f"- {name} ({figures['support']} films): flagged urgent {flagged}; {called}" in card


# --- Compare -------------------------------------------------------------------------------------------


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


@pytest.mark.parametrize("task", ["covid", "four-class"])
def test_compare_shows_one_vs_rest_curves_full_matrices_and_figures_per_class(site, task):
    name, classes = MODEL_OF[task], CLASSES[task]
    stored = _stored(site, name)["report"]
    at = _app("views/compare.py")
    _choose_task(at, task)
    assert at.multiselect[0].value == [name]

    table = at.dataframe[0].value
    argmax = stored["at_argmax"]
    assert table.loc[ARGMAX_ACCURACY, name] == with_interval(argmax["accuracy"], argmax["accuracy_ci"])
    assert table.loc[MACRO_AUC, name] == with_interval(stored["auc"], stored["auc_ci"], as_percent=False)
    assert "AUC" not in table.index  # the macro AUC says what it is

    charts = _charts(at)
    per_class = next(c for c in charts
                     if any("vs the rest" in a.get("text", "") for a in c["layout"].get("annotations", [])))
    assert [a["text"] for a in per_class["layout"]["annotations"]] == \
        [f"{c} vs the rest" for c in classes if c in stored["class_roc"]]
    curves = [t for t in per_class["data"] if t.get("name") == name]
    assert len(curves) == len(stored["class_roc"])
    assert curves[0]["x"] == stored["class_roc"][classes[0]]["fpr"]

    heatmaps = [c["data"][0] for c in charts if c["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 2  # at the operating point and by the most probable class
    assert [h["z"] for h in heatmaps] == [stored["at_operating_point"]["confusion_matrix"], argmax["confusion_matrix"]]
    assert all(h["x"] == classes and h["y"] == classes and len(h["z"]) == len(classes) for h in heatmaps)

    (per_class_table,) = [t.value for t in at.table if list(t.value.columns) == list(CLASS_COLUMNS)]
    assert list(per_class_table.index) == classes
    for cls in classes:
        figures = stored["at_operating_point"]["per_class"][cls]
        assert per_class_table.loc[cls, "Films"] == str(figures["support"])
        assert per_class_table.loc[cls, "Recall (operating point)"] == with_interval(figures["recall"],
                                                                                    figures["recall_ci"])
        if cls != "NORMAL":
            assert per_class_table.loc[cls, "Flagged urgent"] == with_interval(
                stored["at_operating_point"]["flag_recall"][cls], stored["at_operating_point"]["flag_recall_ci"][cls])
    by_source = ["Figures per source"] if stored.get("by_source") else []
    assert [s.value for s in at.subheader] == ["Metrics at each model's operating point", "ROC curves",
                                               "Confusion matrices", "Per-class report", *by_source,
                                               "Training curves"]


def test_compare_gives_figures_per_source_for_a_model_trained_on_several(site):
    stored = _stored(site, FOUR)["report"]["by_source"]  # its validation films come from the manifest's sources
    assert sorted(stored) == ["covid-3class", "kermany-224", "tb-films"]
    at = _app("views/compare.py")
    _choose_task(at, "four-class")
    assert "Figures per source" in [s.value for s in at.subheader]
    assert any("instead of what it shows" in c.value for c in at.caption)
    (table,) = [t.value for t in at.table if t.value.index.name == "Source"]
    assert list(table.index) == sorted(stored)
    for source, figures in stored.items():
        assert table.loc[source, "Films"] == str(figures["n"])
        assert table.loc[source, "Classes"] == ", ".join(f"{c} {n}" for c, n in figures["class_counts"].items())
        assert table.loc[source, "Called abnormal"] == f"{figures['flagged'] * 100:.1f} %"
        assert table.loc[source, "Recall per class"] == ", ".join(
            f"{c} {r * 100:.1f} %" for c, r in figures["recall"].items())


def test_a_folder_that_cannot_be_evaluated_is_named_by_its_label(tmp_path, settings_env):
    settings_env(CXR_MODELS=str(quick_checkpoints(tmp_path / "site")), CXR_JOBS=str(tmp_path / "jobs"),
                 CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    at = _app("views/compare.py")
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _select(at, "Folder of films, one sub-folder per class").set_value("dicom")
    at.run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert not at.exception and len(at.error) == 2
    for error in at.error:
        assert "could not be evaluated on the chosen folder: shared-data/dicom is not a class-folder tree" in error.value
        assert str(SHARED_DATA) not in error.value


def test_class_and_source_tables_of_a_binary_report():
    record = read_model_record(ROOT / "checkpoints" / "pneumonia-logistic-v1.json")  # stored before #14
    assert source_table(record.report) is None
    table = class_table(record.report)
    assert list(table.index) == ["NORMAL", "PNEUMONIA"]
    assert table.loc["NORMAL", "Flagged urgent"] == "— (normal class)"


# --- Retrain ---------------------------------------------------------------------------------------------


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_retrain_shows_the_task_a_folder_or_the_manifest_would_train(tmp_path, settings_env):
    settings_env(CXR_MODELS=str(tmp_path / "site"), CXR_JOBS=str(tmp_path / "jobs"))  # no model needed
    at = retrain_page()
    source = at.radio(key="retrain-source")
    assert source.value == "folder" and "four-class (manifest)" in source.options
    _select(at, "Dataset folder").set_value("covid-3class/train")
    at.run()
    assert not at.exception
    assert "**Task: COVID-19** (3 classes; films per class: COVID-19 111, NORMAL 70, VIRAL PNEUMONIA 70)." \
        in _markdown(at)

    _select(at, "Dataset folder").set_value("dicom")  # not a class-folder tree: said before anything starts
    at.run()
    (warning,) = [w.value for w in at.warning if "cannot train a model" in w.value]
    assert "shared-data/dicom is not a class-folder tree" in warning and str(SHARED_DATA) not in warning

    at.radio(key="retrain-source").set_value("four-class")  # no tb-films root on this server yet
    at.run()
    assert not at.exception and all(s.label != "Dataset folder" for s in at.selectbox)
    (warning,) = [w.value for w in at.warning if "cannot train a model" in w.value]
    assert "Manifest four-class: tb-films/Tuberculosis is not a folder inside a configured data root" in warning

    settings_env(CXR_DATA_ROOTS=str(tb_films_roots(tmp_path)))
    at = retrain_page()
    at.radio(key="retrain-source").set_value("four-class")
    at.run()
    assert not at.exception and not [w for w in at.warning if "cannot train a model" in w.value]
    assert "**Task: Four classes (with tuberculosis)** (4 classes; films per class: COVID-19 111, NORMAL 1411, " \
           "PNEUMONIA 1570, TUBERCULOSIS 150)." in _markdown(at)
    (table,) = [t.value for t in at.table if t.value.index.name == "Source"]
    assert list(table.index) == ["covid-3class", "kermany-224", "tb-films"]
    assert table.loc["covid-3class"].to_dict() == {"COVID-19": 111, "NORMAL": 70, "PNEUMONIA": 70, "TUBERCULOSIS": 0}
    assert table.loc["kermany-224", "PNEUMONIA"] == 1500  # the manifest's cap
    assert table.loc["tb-films", "TUBERCULOSIS"] == 150
    shown = "\n".join([_markdown(at)] + [c.value for c in at.caption] + [w.value for w in at.warning]
                      + [str(t.value) for t in at.table])
    assert str(SHARED_DATA) not in shown and str(ROOT) not in shown and str(tmp_path) not in shown

    _select(at, "Architecture").set_value("logistic")  # the manifest starts a job like a folder does
    next(n for n in at.number_input if n.label == "Epochs").set_value(1)
    _select(at, "Image size").set_value(64)
    next(n for n in at.number_input if n.label == "Use at most this many films (0 = all)").set_value(120)
    at.get("form_submit_button")[0].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = next(p for p in (tmp_path / "jobs").iterdir() if p.is_dir())
    try:
        assert json.loads((job / "config.json").read_text())["data_dir"].endswith("four-class.toml")
        assert any("of four-class (manifest)" in c.value for c in at.caption)
    finally:
        cancel_job(job.name, tmp_path / "jobs")
        wait_for(lambda: not read_job(job).is_active, timeout=120, what="the job to stop")
