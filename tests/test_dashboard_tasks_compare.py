"""The dashboard for three tasks (#14), part two: Compare (one-vs-rest curves, full matrices, figures per class
and per source) and Retrain (the task a folder or the manifest would train) with models of three and four
classes (tests/task_models.py says which models and why the four-class one is a stand-in)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_support import ROOT, SHARED_DATA, app_page as app, quick_checkpoints, retrain_page, wait_for
from streamlit.testing.v1 import AppTest
from task_models import CLASSES, FOUR, MODEL_OF, choose_task, stored_json, task_site, tb_films_roots

from core.jobs.jobs import cancel_job, read_job
from core.store.records import read_model_record
from dashboard.components.class_figures import CLASS_COLUMNS, class_table, source_table
from dashboard.components.reports import ARGMAX_ACCURACY, MACRO_AUC, with_interval


@pytest.fixture
def site(tmp_path, settings_env) -> Path:
    return task_site(tmp_path, settings_env)


# --- Compare -------------------------------------------------------------------------------------------


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


@pytest.mark.parametrize("task", ["covid", "four-class"])
def test_compare_shows_one_vs_rest_curves_full_matrices_and_figures_per_class(site, task):
    name, classes = MODEL_OF[task], CLASSES[task]
    stored = stored_json(site, name)["report"]
    at = app("views/compare.py")
    choose_task(at, task)
    assert at.multiselect[0].value == [name]

    table = at.dataframe[0].value
    argmax = stored["at_argmax"]
    assert table.loc[f"Internal validation: {ARGMAX_ACCURACY}", name] == with_interval(argmax["accuracy"],
                                                                                       argmax["accuracy_ci"])
    assert table.loc[f"Internal validation: {MACRO_AUC}", name] == with_interval(stored["auc"], stored["auc_ci"],
                                                                                 as_percent=False)
    assert "Internal validation: AUC" not in table.index  # the macro AUC says what it is

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
            pair = stored["against_normal"][cls]
            assert per_class_table.loc[cls, "Accuracy against normal alone"] == with_interval(
                pair["accuracy"], pair["accuracy_ci"])
            assert per_class_table.loc[cls, "AUC against normal alone"] == with_interval(
                pair["auc"], pair["auc_ci"], as_percent=False)
        else:
            assert per_class_table.loc[cls, "Accuracy against normal alone"] == "—"
    by_source = ["Figures per source"] if stored.get("by_source") else []
    assert [s.value for s in at.subheader] == ["Metrics at each model's operating point",
                                               "ROC curves on the validation films",
                                               "Confusion matrices on the validation films",
                                               "Per-class report on the validation films", *by_source,
                                               "Training curves"]


def test_compare_gives_figures_per_source_for_a_model_trained_on_several(site):
    stored = stored_json(site, FOUR)["report"]["by_source"]  # its validation films come from the manifest's sources
    assert sorted(stored) == ["covid-3class", "kermany-224", "tb-films"]
    at = app("views/compare.py")
    choose_task(at, "four-class")
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
    at = app("views/compare.py")
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _select(at, "Folder of films, one sub-folder per class").set_value("dicom")
    at.run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    (error,) = at.error  # said once for both models, before either reads it
    assert not at.exception and "on the folder: shared-data/dicom is not a class-folder tree" in error.value
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
    # 200 films keep 7 COVID-19 films (120 kept 4: too few for a validation fifth, refused before the job)
    next(n for n in at.number_input if n.label == "Use at most this many films (0 = all)").set_value(200)
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


def test_a_folder_s_own_names_in_an_error_are_plain_text_not_markdown(tmp_path, settings_env):
    """A review: a class folder named like a Markdown link became a live link in Compare's error (a phishing link on
    a clinical page); the folder's words are shown as they are."""
    settings_env(CXR_MODELS=str(quick_checkpoints(tmp_path / "site")), CXR_JOBS=str(tmp_path / "jobs"),
                 CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    odd = tmp_path / "ward" / "batch"
    for name in ("NORMAL", "[Session expired, sign in again](https:evil.example)"):
        (odd / name).mkdir(parents=True)
        (odd / name / "a.png").write_bytes((SHARED_DATA / "films" / "NORMAL").glob("*").__next__().read_bytes())
    (tmp_path / "roots.toml").write_text(f'[roots]\nward = "{odd}"\n')
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at = app("views/compare.py")
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    next(s for s in at.selectbox if s.label == "Data root").set_value("ward")
    at.run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert not at.exception and at.error
    for error in at.error:
        assert "'\\[Session expired, sign in again\\](https" in error.value  # escaped: no link


def test_a_fault_every_model_meets_is_said_once(tmp_path, settings_env):
    """A browser review: a folder of images Triage would not triage stopped each model with the same long error,
    once a model."""
    from PIL import Image

    settings_env(CXR_MODELS=str(quick_checkpoints(tmp_path / "site")), CXR_JOBS=str(tmp_path / "jobs"),
                 CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    blank = tmp_path / "ward" / "blank"
    for name in ("NORMAL", "PNEUMONIA"):
        (blank / name).mkdir(parents=True)
        Image.new("L", (600, 600), 128).save(blank / name / "a.png")
    (tmp_path / "roots.toml").write_text(f'[roots]\nward = "{blank}"\n')
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at = app("views/compare.py")
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    assert len(at.multiselect[0].value) > 1
    next(s for s in at.selectbox if s.label == "Data root").set_value("ward")
    at.run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    (said,) = [e.value for e in at.error]
    assert not at.exception and said.startswith("None of the models could be evaluated on the chosen folder: No film "
                                                "in ward can be scored: NORMAL: a.png would not be triaged"), said
