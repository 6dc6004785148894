"""The comparison page through AppTest: stored reports side by side, and evaluation on a named folder."""
from __future__ import annotations

import json

import pytest
from e2e_support import FILMS_DIR, ROOT, quick_checkpoints, require
from streamlit.testing.v1 import AppTest

import dashboard.state
from core.admin.audit import read_actions

APP = str(ROOT / "dashboard" / "app.py")
MODELS = ["pneumonia-cnn5-v1", "pneumonia-mlp-v1"]
FOLDER_BOX = "Folder of films, one sub-folder per class"


@pytest.fixture
def at(tmp_path, settings_env):
    settings_env(CXR_MODELS=str(quick_checkpoints(tmp_path / "checkpoints")), CXR_JOBS=str(tmp_path / "jobs"),
                 CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    app = AppTest.from_file(APP, default_timeout=180)
    app.switch_page("views/compare.py")
    app.run()
    assert not app.exception
    return app


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_stored_reports_side_by_side(at):
    assert at.multiselect[0].value == MODELS
    assert at.segmented_control[0].value == "Stored validation reports"
    assert [s.value for s in at.subheader] == ["Metrics at each model's operating point", *(
        f"{title} on the validation films" for title in ("ROC curves", "Confusion matrices", "Per-class report")),
        "Training curves"]
    assert all(f"**{name}**: validation:" in at.caption[1].value for name in MODELS)
    table = at.dataframe[0].value
    assert list(table.columns) == MODELS
    for metric in ("Accuracy", "Sensitivity", "Specificity", "Precision", "F1", "AUC"):  # named as the other rows
        shown = table.loc[f"Internal validation: {metric}"]
        assert all("(" in shown[name] and "–" in shown[name] for name in MODELS)
    assert {"Parameters", "Inference per film", "Training time"} <= set(table.index)
    which = next(c.value for c in at.caption if c.value.startswith("Which films"))  # the card's caveats too
    assert all(f"**{name}**, internal validation: The threshold was chosen on these films" in which for name in MODELS)
    computed_on = next(c.value for c in at.caption if c.value.startswith("Figures computed on"))
    assert all(line.count(" films") == 1 for line in computed_on.splitlines()[1:])  # the count said once

    roc = next(c for c in _charts(at) if c["data"][0].get("name") == "chance")
    names = [trace["name"] for trace in roc["data"]]
    for model in MODELS:
        assert any(n.startswith(f"{model} (AUC") for n in names)
        assert f"{model} operating point" in names
    heatmaps = [c for c in _charts(at) if c["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 2
    curves = next(c for c in _charts(at) if any("training loss" in t.get("name", "") for t in c["data"]))
    assert {t["name"] for t in curves["data"]} >= {f"{m} training loss" for m in MODELS}
    assert len(at.dataframe) == 2  # metrics and operating points
    assert len(at.table) == 2  # one per-class report per model
    assert list(at.table[0].value.index) == ["NORMAL", "PNEUMONIA"]


def test_fewer_models_and_none(at):
    at.multiselect[0].set_value(["pneumonia-mlp-v1"]).run()
    assert not at.exception and list(at.dataframe[0].value.columns) == ["pneumonia-mlp-v1"]
    at.multiselect[0].set_value([]).run()
    assert not at.exception and "Choose at least one model" in at.info[0].value


def test_evaluating_on_a_folder_shows_its_figures_and_is_cached(at, monkeypatch):
    films = require(FILMS_DIR, "films")
    calls = []
    import core.evaluation.folder  # dashboard.state imports it when a folder is evaluated (torch stays out of start-up)

    real = core.evaluation.folder.read_folder
    monkeypatch.setattr(core.evaluation.folder, "read_folder",
                        lambda loaded, folder, **kw: calls.append(loaded.name) or real(loaded, folder, **kw))
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    assert "Choose a folder and press Evaluate" in at.info[0].value and not calls
    assert not at.text_input  # no free-text server path: a data root and a folder inside it
    assert _select(at, "Data root").value == "shared-data"
    assert _select(at, FOLDER_BOX).value == "films"  # the shared full-resolution films are suggested
    _evaluate(at)
    assert not at.exception and not at.error
    assert sorted(calls) == MODELS
    assert "folder shared-data/films (16 films)" in at.caption[1].value and str(films) not in at.caption[1].value
    table = at.dataframe[0].value
    assert (table.loc["Films evaluated"] == "16").all()
    paired = at.dataframe[1].value  # the two models film by film, under the side-by-side figures
    assert list(paired["Models (first − second)"]) == [" − ".join(MODELS)] and list(paired["Films"]) == [16]
    assert paired["AUC difference"][0].count(" to ") == 1 and {  # a folder's own curves: no "validation" in titles
        "Paired differences on the same films", "ROC curves", "Confusion matrices"} <= {s.value for s in at.subheader}
    audit = read_actions(limit=10)  # one line per model, by who asked, with the figures
    assert [(a.action, a.who, a.details["folder"], a.details["n"]) for a in audit] == \
        [("evaluate-folder", "local", "shared-data/films", 16)] * 2
    assert sorted(a.model for a in audit) == MODELS
    at.run()  # any rerun (a widget elsewhere, a page switch back) reuses the results
    assert not at.exception and sorted(calls) == MODELS
    assert len(read_actions(limit=10)) == 2  # and records nothing more


def test_an_evaluation_the_audit_log_could_not_record_is_recorded_on_a_later_run(at, monkeypatch):
    """Found by a review: the figures were marked recorded even when the audit line failed, so no later run
    tried again and the reading of a server folder stayed out of the log."""
    require(FILMS_DIR, "films")
    import dashboard.components.compare_view as compare_view
    from core.errors import AuditLogUnavailable

    record = compare_view.record_action
    monkeypatch.setattr(compare_view, "record_action", lambda *a, **k: (_ for _ in ()).throw(
        AuditLogUnavailable("The audit log could not be written in full (is its disk full?).")))
    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _evaluate(at)
    assert [w.value for w in at.warning if "audit log" in w.value] and read_actions(limit=10) == []
    import core.admin.audit

    writable = core.admin.audit.ensure_writable
    monkeypatch.setattr(core.admin.audit, "ensure_writable", lambda: (_ for _ in ()).throw(
        AuditLogUnavailable("The audit log cannot be written (No space left on device).")))
    at.run()  # the log still full: the figures stay, as evaluated (not "not evaluated"), and it is tried again
    assert not at.error and at.dataframe and [w.value for w in at.warning if "audit log" in w.value]
    monkeypatch.setattr(core.admin.audit, "ensure_writable", writable)
    monkeypatch.setattr(compare_view, "record_action", record)  # the disk has room again
    at.run()
    assert not at.exception and [(a.action, a.model) for a in read_actions(limit=10)] == [
        ("evaluate-folder", "pneumonia-mlp-v1")]
    at.run()
    assert len(read_actions(limit=10)) == 1  # once recorded, not again


def test_a_version_saved_again_with_another_threshold_is_read_again_and_recorded_again(at, tmp_path):
    """Its new reading had a cache key of its own, but the session's record of what was evaluated and audited did
    not: the server folder was read again with no audit line for the figures now shown (a review)."""
    require(FILMS_DIR, "films")
    from core.store.descriptions import update_record

    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _evaluate(at)
    (first,) = read_actions(limit=10)
    update_record(tmp_path / "checkpoints" / "pneumonia-mlp-v1.json", lambda record: {
        "operating_point": record.operating_point.model_copy(update={"threshold": 0.5})})
    at.run()
    assert not at.exception
    again, _ = read_actions(limit=10)
    assert (again.action, again.model, again.details["threshold"]) == ("evaluate-folder", "pneumonia-mlp-v1", 0.5)
    assert first.details["threshold"] != 0.5


def test_a_model_added_after_evaluate_is_evaluated_and_recorded_too(at):
    """The folder stays chosen after Evaluate: a model picked afterwards is evaluated on it on the next rerun,
    and that reading is in the audit log like the others; reruns that reuse results add nothing."""
    require(FILMS_DIR, "films")
    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _evaluate(at)
    assert [a.model for a in read_actions(limit=10)] == ["pneumonia-mlp-v1"]
    at.multiselect[0].set_value(MODELS)
    at.run()
    assert not at.exception and list(at.dataframe[0].value.columns) == MODELS
    assert [a.model for a in read_actions(limit=10)] == ["pneumonia-cnn5-v1", "pneumonia-mlp-v1"]
    at.run()
    assert len(read_actions(limit=10)) == 2
    _evaluate(at)  # a new press is a new reading of the folder
    assert len(read_actions(limit=10)) == 4


def test_films_left_out_of_a_folder_evaluation_are_named_by_the_data_roots_label(at, settings_env, tmp_path):
    """A damaged film in the evaluated folder is listed with why it was left out, named inside its data root."""
    films = sorted(p for p in require(FILMS_DIR, "films").rglob("*") if p.is_file())
    ward = tmp_path / "ward-films"
    _linked(films, ward)
    (ward / "NORMAL" / "broken.png").write_bytes(b"not a film")
    (tmp_path / "roots.toml").write_text(f'[roots]\nward = "{ward}"\n')
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _select(at, "Data root").set_value("ward")
    at.run()
    _evaluate(at)
    assert not at.exception and not at.error
    (left_out,) = [t for t in at.table if "reason" in t.value.columns]
    assert list(left_out.value["file"]) == ["ward/NORMAL/broken.png"]
    assert "not an image we can read" in left_out.value["reason"].iloc[0]
    assert str(tmp_path) not in left_out.value.to_string()


def test_a_model_evaluated_on_the_films_it_learned_from_is_flagged(at, settings_env, tmp_path):
    """Evaluating on a folder a model was trained on reads its own training and validation films: said in a
    warning naming that model only; a folder it never saw gets none."""
    films = sorted(p for p in require(FILMS_DIR, "films").rglob("*") if p.is_file())
    ward = tmp_path / "ward-films"
    _linked(films, ward)
    (tmp_path / "roots.toml").write_text(f'[roots]\nward = "{ward}"\n')
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    described = tmp_path / "checkpoints" / "pneumonia-mlp-v1.json"  # a site model: trained on the ward's films
    record = json.loads(described.read_text())
    record["training"]["data_dir"] = str(ward)
    described.write_text(json.dumps(record))
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _evaluate(at)  # shared-data/films: neither model learned from them
    assert not at.exception and not at.error and not [w for w in at.warning if "learned from" in w.value]
    _select(at, "Data root").set_value("ward")
    at.run()
    _evaluate(at)
    assert not at.exception and not at.error
    (warning,) = [w.value for w in at.warning if "learned from" in w.value]
    assert warning.startswith("`pneumonia-mlp-v1` learned from films in this folder") and "cnn5" not in warning
    assert str(tmp_path) not in warning

def test_a_folder_that_is_not_a_dataset_is_explained(at):
    at.segmented_control[0].set_value("Evaluate on a folder")
    at.run()
    _select(at, FOLDER_BOX).set_value("dicom")
    at.run()
    _evaluate(at)
    (said,) = [e.value for e in at.error]  # once for all models (a browser review: the same error once a model)
    assert said.startswith("The models were not evaluated on the folder: shared-data/dicom is not a class-folder tree: "
                           "it needs one sub-folder per class") and said.endswith(". Choose another folder and press "
                                                                                  "Evaluate.") and not at.exception


def _linked(films, folder) -> None:
    """``folder/CLASS/name``: a link to each film, in its class folder (a site's folder of films, made here)."""
    for film in films:
        (folder / film.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / film.parent.name / film.name).symlink_to(film)


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


def _evaluate(at: AppTest) -> None:
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()


def test_a_broken_list_of_data_roots_leaves_the_stored_reports_drawn(at, settings_env, tmp_path):
    roots = tmp_path / "roots.toml"
    roots.write_text("[roots\nthis is = not toml")
    settings_env(CXR_DATA_ROOTS=str(roots))
    at.run()
    assert not at.exception
    assert list(at.dataframe[0].value.columns) == MODELS  # the comparison is still there
    at.segmented_control[0].set_value("Evaluate on a folder").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The configured list of data roots cannot be read; ask an administrator "
                                           "to correct it (the server log says where)."]


def test_a_compared_model_removed_meanwhile_is_left_out_and_nothing_else_is_added(at, tmp_path):
    at.multiselect[0].set_value(["pneumonia-mlp-v1"]).run()
    for path in (tmp_path / "checkpoints").glob("pneumonia-mlp-v1.*"):
        path.unlink()
    at.run()
    assert not at.exception
    assert at.multiselect[0].value == []  # not the first four models: nobody chose them
    assert [w.value for w in at.warning if "left out" in w.value] == [
        "No longer registered, so left out: pneumonia-mlp-v1."]
    assert "Choose at least one model." in [i.value for i in at.info]


def test_an_evaluated_folder_removed_meanwhile_is_said_once_and_not_read_again(at, settings_env, tmp_path):
    films = sorted(p for p in require(FILMS_DIR, "films").rglob("*") if p.is_file())
    ward = tmp_path / "site" / "ward-films"
    _linked(films, ward)
    (tmp_path / "roots.toml").write_text(f'[roots]\nsite = "{tmp_path / "site"}"\n')
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder").run()
    _select(at, "Data root").set_value("site").run()
    _select(at, FOLDER_BOX).set_value("ward-films").run()
    _evaluate(at)
    assert not at.exception and not at.error and (at.dataframe[0].value.loc["Films evaluated"] == "16").all()
    # What the session holds once the evaluated folder is moved away: its old place, now empty. (AppTest cannot
    # rerun a picker that still shows a folder gone from its list, as a browser does, so the picker keeps its own.)
    at.session_state["evaluated_folder"] = str(tmp_path / "site" / "moved-away")
    at.run()
    assert not at.exception and not at.error
    assert [w.value for w in at.warning] == [GONE]
    assert "Choose a folder and press Evaluate." in [i.value for i in at.info]
    at.run()  # said once: the folder is forgotten, not looked for at every rerun
    assert not at.warning and not at.exception
    # Evaluated again, then its data root taken off the list by an administrator: no longer read, nor shown.
    at.session_state["evaluated_folder"] = str(ward.resolve())
    at.run()
    assert not at.warning and (at.dataframe[0].value.loc["Films evaluated"] == "16").all()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "roots.toml").write_text(f'[roots]\nother = "{tmp_path / "elsewhere"}"\n')
    at.run()
    assert not at.exception and [w.value for w in at.warning] == [GONE] and not at.dataframe


GONE = ("The folder evaluated before can no longer be read (moved, renamed or deleted, or its data root is no longer "
        "configured).")


def test_the_captions_say_what_the_inference_time_is_and_where_a_threshold_was_chosen(at, tmp_path):
    """Found by a review of the figures shown: the time is the fastest of 10 passes (not a median), and a version
    recalibrated on a site folder did not have its threshold chosen on its validation films."""
    path = tmp_path / "checkpoints" / f"{MODELS[1]}.json"
    record = json.loads(path.read_text())
    record["calibration"] = {"from": "pneumonia-mlp-v0", "target_sensitivity": 0.95, "source": "site folder",
                             "folder": "shared-data/films"}
    path.write_text(json.dumps(record))
    at.run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert any("Inference time is the fastest of 10 one-film passes" in c for c in captions)
    (roc,) = [c for c in captions if c.startswith("Each model calls a film abnormal")]
    assert f"chosen on its validation films ({MODELS[1]}: on a site folder's films, see its card)." in roc


def _one_kind_page():
    """Compare's figures for a folder of pneumonia films only, from a shipped model's scores."""
    from pathlib import Path

    import numpy as np

    from core.evaluation.metrics import evaluate_probabilities
    from core.store.registry import list_models
    from dashboard.components.compare_view import comparison

    shipped = Path.cwd() / "checkpoints" if (Path.cwd() / "checkpoints").is_dir() else None
    entry = next(e for e in list_models(shipped)[0] if e.name == "pneumonia-logistic-v1")
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    report = evaluate_probabilities(np.array([1, 1, 1]), probabilities, entry.record.classes,
                                    entry.record.operating_point)
    comparison([(entry, report)])


def test_a_folder_of_one_kind_of_film_is_said_to_be_why_there_is_no_roc_curve(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.config import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_function(_one_kind_page, default_timeout=60).run()
    assert not at.exception
    shown = [i.value for i in at.info]
    assert any("all of one kind" in s for s in shown) and not any("has a normal class" in s for s in shown)


def test_figures_say_which_folder_they_are_for_and_a_changed_folder_is_recorded_again(at, settings_env, tmp_path):
    """Found by a review: another folder picked without Evaluate left the figures, and models added then, on the
    folder pressed for, unsaid; films added to that folder were read again without an audit line."""
    films = sorted(p for p in require(FILMS_DIR, "films").rglob("*.jpeg"))
    ward = tmp_path / "ward-films"
    _linked(films[::2], ward / "a")
    _linked(films[1::2], ward / "b")
    (tmp_path / "roots.toml").write_text(f'[roots]\nward = "{ward}"\n')
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at.multiselect[0].set_value(["pneumonia-mlp-v1"])
    at.segmented_control[0].set_value("Evaluate on a folder").run()
    _select(at, "Data root").set_value("ward").run()
    _select(at, FOLDER_BOX).set_value("a").run()
    _evaluate(at)
    assert len(read_actions(limit=10)) == 1
    _select(at, FOLDER_BOX).set_value("b").run()
    assert "The figures below are for `ward/a`; press Evaluate for `ward/b`." in [i.value for i in at.info]
    extra = films[1]
    (ward / "a" / extra.parent.name / extra.name).symlink_to(extra)  # a film added to the folder evaluated
    at.run()
    assert not at.exception and len(read_actions(limit=10)) == 2  # its new reading is recorded


def _curveless_page():
    """Compare's stored figures for two shipped models, one of whose reports has lost its curve (an old JSON)."""
    from pathlib import Path

    from core.store.registry import list_models
    from dashboard.components.compare_view import comparison

    entries = {e.name: e for e in list_models(Path.cwd() / "checkpoints")[0]}
    old, new = entries["pneumonia-logistic-v1"], entries["pneumonia-mlp-v1"]
    comparison([(old, old.record.report.model_copy(update={"roc": None})), (new, new.record.report)])


def test_a_stored_report_without_a_curve_is_named_not_blamed_on_the_films(monkeypatch):
    """Found by a review: a report of 1,038 films of both kinds without a stored curve was said to be 'all of one
    kind'; beside a model with a curve it silently dropped out."""
    from streamlit.testing.v1 import AppTest

    from core.config import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_function(_curveless_page, default_timeout=60).run()
    assert not at.exception and not any("all of one kind" in i.value for i in at.info)
    assert any(c.value.startswith("No ROC curve is stored for pneumonia-logistic-v1") for c in at.caption)
