"""The triage page through Streamlit's AppTest: real films in, worklist, cards and explanations out."""
from __future__ import annotations

import json

import pytest
from e2e_support import DICOM_DIR, ROOT, quick_checkpoints, real_films, require
from streamlit.testing.v1 import AppTest

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    folder = quick_checkpoints(tmp_path / "checkpoints")
    monkeypatch.setenv("CXR_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CXR_JOBS", str(tmp_path / "jobs"))
    return folder


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    return at


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def _upload(at: AppTest, files: list[tuple[str, bytes]]) -> None:
    at.file_uploader(key="films").set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert not at.exception


def test_landing_page_preselects_the_default_model_and_shows_its_card(checkpoints):
    at = _app()
    assert at.title[0].value == "Triage"
    model = at.sidebar.selectbox[0]
    assert model.value == "pneumonia-cnn5-v1"
    assert set(model.options) == {"pneumonia-cnn5-v1  (default)", "pneumonia-mlp-v1"}
    card = "\n".join(m.value for m in at.sidebar.markdown) + "\n".join(c.value for c in at.sidebar.caption)
    for words in ("Training data", "Validation", "AUC", "Sensitivity", "Operating point", "Intended use",
                  "not a diagnosis"):
        assert words in card
    assert at.file_uploader(key="films").accept_multiple_files
    assert not at.file_uploader(key="films").allowed_type  # any name: DICOM files often have no extension
    assert "Upload one or more films" in at.info[0].value


def test_a_batch_of_real_films_gets_a_worklist_and_a_card_each(checkpoints):
    films = real_films()
    dicom = require(DICOM_DIR / "RG1_J2KI.dcm", "the DICOM film")
    batch = [(p.name, p.read_bytes()) for p in (films[0], films[1], films[-1])]
    batch += [("RG1_J2KI.dcm", dicom.read_bytes()), ("RG1_UNCI", (DICOM_DIR / "RG1_UNCI.dcm").read_bytes()),
              ("notes.png", b"this is not an image")]
    at = _app()
    _upload(at, batch)

    table = at.dataframe[0].value
    assert len(table) == 6
    assert sorted(table["File"]) == sorted(name for name, _ in batch)
    ranks = [["Urgent", "Routine", "Not triaged", "Unreadable"].index(p) for p in table["Priority"]]
    assert ranks == sorted(ranks) and table["Priority"].iloc[-1] == "Unreadable"
    readable = table[table["Priority"] != "Unreadable"]
    assert readable["Probability"].between(0.5, 1.0).all()
    assert "not an image we can read" in table["Warnings"].iloc[-1]
    assert any("notes.png is not an image we can read" in e.value for e in at.error)

    # film + Grad-CAM overlay for each of the five readable films, and one probability chart each
    captions = [c for image in at.get("image") for c in image.captions]
    assert sum(c.startswith("Film,") for c in captions) == 5
    assert sum(c.startswith("Grad-CAM for") for c in captions) == 5
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 5 and all(chart["data"][0]["type"] == "bar" for chart in charts)
    assert sum("DICOM" in c for c in captions) == 2  # with and without the .dcm extension
    assert [m.value for m in at.get("metric")] == [str((table["Priority"] == p).sum())
                                                   for p in ("Urgent", "Routine", "Not triaged", "Unreadable")]
    assert at.get("download_button")


def test_explanation_method_opacity_and_class_can_be_changed(checkpoints):
    film = real_films()[-1]
    at = _app()
    _upload(at, [(film.name, film.read_bytes())])
    method = next(s for s in at.selectbox if s.label == "Explanation method")
    method.set_value("gradcam++")
    at.slider[0].set_value(0.8)
    at.run()
    assert not at.exception
    cls = next(s for s in at.selectbox if s.label == "Explain class")
    cls.set_value("NORMAL")
    at.run()
    assert not at.exception
    captions = [c for image in at.get("image") for c in image.captions]
    assert "Grad-CAM++ for NORMAL (red = most evidence)" in captions


def test_a_model_without_convolutions_says_there_is_no_gradcam(checkpoints):
    film = real_films()[0]
    at = _app()
    at.sidebar.selectbox[0].set_value("pneumonia-mlp-v1")
    at.run()
    _upload(at, [(film.name, film.read_bytes())])
    assert any("no convolutional layer" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 1  # probabilities still shown


def test_broken_models_are_reported_and_the_others_still_work(checkpoints):
    (checkpoints / "half-written.json").write_text("{ not json")
    meta = json.loads((checkpoints / "pneumonia-mlp-v1.json").read_text())
    meta["name"] = "pneumonia-mlp-v9"
    (checkpoints / "pneumonia-mlp-v9.json").write_text(json.dumps(meta))
    (checkpoints / "pneumonia-mlp-v9.pt").write_bytes(b"truncated")
    at = _app()
    assert any("half-written.json" in w.value for w in at.sidebar.warning)
    at.sidebar.selectbox[0].set_value("pneumonia-mlp-v9")
    at.run()
    assert not at.exception
    assert any("pneumonia-mlp-v9 cannot be used" in e.value and "Choose another model" in e.value for e in at.error)
    at.sidebar.selectbox[0].set_value("pneumonia-cnn5-v1")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_without_any_model_the_page_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINTS", str(tmp_path / "empty"))
    at = _app()
    assert "No model is registered yet" in at.warning[0].value


@pytest.mark.parametrize("page, title", [("views/compare.py", "Compare models"), ("views/retrain.py", "Retrain")])
def test_a_deep_link_on_a_fresh_server_runs_through_the_router(checkpoints, page, title):
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page)
    at.run()
    assert not at.exception
    assert at.title[0].value == title
