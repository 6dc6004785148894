"""The triage page through Streamlit's AppTest: real films in, worklist, cards and explanations out."""
from __future__ import annotations

import hashlib
import io
import json
import secrets

import pytest
from e2e_support import DICOM_DIR, ROOT, quick_checkpoints, real_films, require
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from streamlit.testing.v1 import AppTest

import dashboard.components.triage_view
import dashboard.state
from core.errors import ServerBusy, TriageError
from core.films.read import read_film
from core.serving.film_cache import FilmCache
from core.serving.in_flight import BUSY

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture
def checkpoints(tmp_path, settings_env):
    folder = quick_checkpoints(tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    return folder


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    return at


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def probability_bars(at: AppTest) -> list:
    """The cards' class-probability bars (Streamlit progress bars; nothing else on the page draws one)."""
    return list(at.get("progress"))


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
    assert all(words in card for words in ("Training data", "Validation", "AUC", "Sensitivity", "Operating point",
                                           "Intended use", "not a diagnosis", "abnormal films", "meets it by design"))
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
    ranks = [["Urgent", "Not triaged", "Unreadable", "Routine"].index(p) for p in table["Priority"]]
    assert ranks == sorted(ranks) and list(table["Priority"]).count("Unreadable") == 1  # before the routine calls
    readable = table[table["Priority"] != "Unreadable"]
    assert readable["Probability"].between(0.5, 1.0).all()
    assert "not an image we can read" in table[table["Priority"] == "Unreadable"]["Warnings"].iloc[0]
    assert any("notes.png is not an image we can read" in e.value for e in at.error)
    # on screen, the warnings before the figures behind the call (at 1400 px they sat past the bars, out of view)
    assert list(at.dataframe[0].proto.column_order)[1:6] == ["File", "Priority", "Label", "Abnormal score", "Warnings"]
    assert set(at.dataframe[0].proto.column_order) == set(table.columns) - {"Top class", "Probability"}  # a review
    # the score to as many decimals as tell each film's from the threshold, which the column's help gives at the same
    score = json.loads(at.dataframe[0].proto.columns)["Abnormal score"]
    digits = int(score["type_config"]["format"][2:-1])
    threshold = float(score["help"].rsplit(", ", 1)[1].rstrip("."))
    assert digits >= 3 and all(f"{s:.{digits}f}" != f"{threshold:.{digits}f}" or s >= threshold
                               for s in readable["Abnormal score"].dropna())

    # film + Grad-CAM overlay for each of the five readable films, and one probability chart each
    captions = [c for image in at.get("image") for c in image.captions]
    assert sum(c.startswith("Film,") for c in captions) == 5
    assert sum(c.startswith("Grad-CAM for") for c in captions) == 5
    bars = [b.proto.text for b in probability_bars(at)]  # NORMAL then PNEUMONIA, the label's name in bold
    assert len(bars) == 5 * 2
    pairs = list(zip(bars[::2], bars[1::2]))
    assert all(n.split(" · ")[0].strip("*") == "NORMAL" and p.split(" · ")[0].strip("*") == "PNEUMONIA"
               for n, p in pairs)
    shown = sorted(max(float(n.split(" · ")[1][:-1]), float(p.split(" · ")[1][:-1])) for n, p in pairs)
    assert shown == pytest.approx(sorted(100 * readable["Probability"]), abs=0.051)  # the worklist's figures
    assert sum("DICOM" in c for c in captions) == 2  # with and without the .dcm extension
    priorities = ("Urgent", "Not triaged", "Unreadable", "Routine")
    assert [m.value for m in at.get("metric")] == [str((table["Priority"] == p).sum()) for p in priorities]
    assert at.get("download_button")


def test_uploads_with_one_name_are_told_apart_and_a_copy_is_pointed_out(checkpoints):
    """Two folders' image.jpeg are two films: each row and card names one upload. The same file chosen twice is
    read twice and said so above the worklist, so the counts can be read right."""
    films = real_films()
    first, second = films[0].read_bytes(), films[-1].read_bytes()
    at = _app()
    _upload(at, [("image.jpeg", first), ("image.jpeg", second), ("image.jpeg", first), ("image.jpeg (2)", b"x")])
    table = at.dataframe[0].value
    assert sorted(table["File"]) == ["image.jpeg", "image.jpeg (2)", "image.jpeg (3)", "image.jpeg (4)"]
    assert sorted(t.value for t in at.text) == sorted(table["File"])  # one card per upload, under its own name
    (copy,) = [w.value for w in at.warning if "same file" in w.value]
    assert copy.startswith("image.jpeg (4) is the same file as image.jpeg.")
    assert sum(int(m.value) for m in at.get("metric")) == 4


def test_distinct_names_number_repeats_in_upload_order_and_never_reuse_a_name():
    from dashboard.state import Upload, distinct_names, repeated_uploads

    uploads = [Upload(name, data, digest) for name, data, digest in (
        ("a.png", b"1", "d1"), ("a.png (2)", b"2", "d2"), ("a.png", b"3", "d3"), ("a.png", b"1", "d1"),
        ("b.png", b"4", "d4"))]
    named = distinct_names(uploads)
    assert [u.name for u in named] == ["a.png", "a.png (2)", "a.png (3)", "a.png (4)", "b.png"]
    assert [(u.data, u.digest) for u in named] == [(u.data, u.digest) for u in uploads]
    assert repeated_uploads(named) == [("a.png (4)", "a.png")]


def test_explanation_method_opacity_and_class_can_be_changed(checkpoints, monkeypatch):
    opacities = []

    def overlay(pixels, heat, opacity):
        opacities.append(opacity)
        return real_overlay(pixels, heat, opacity)

    real_overlay = dashboard.components.triage_view.overlay
    monkeypatch.setattr(dashboard.components.triage_view, "overlay", overlay)
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
    assert any(c.startswith("Grad-CAM++ for NORMAL, which the model gives ") for c in captions), captions
    assert opacities[0] == 0.4 and opacities[-1] == 0.8  # the default, then the slider's
    next(s for s in at.selectbox if s.label == "Explanation method").set_value("eigencam")
    at.run()  # a map that is the same for every class: no class to pick, and the caption says so
    assert next(s for s in at.selectbox if s.label == "Explain class").disabled
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith("Eigen-CAM, the same for every class (colours relative to this film alone: yellow = "
                            "the strongest activation here; purple = weak; no colour = none)") for c in captions)
    alts = [img.alt for image in at.get("image") for img in image.proto.imgs]  # the scale drawn under the map
    assert any(alt.startswith("Colour scale of the map: no colour where there is no evidence") for alt in alts), alts


def test_a_model_without_convolutions_says_there_is_no_gradcam(checkpoints):
    film = real_films()[0]
    at = _app()
    at.sidebar.selectbox[0].set_value("pneumonia-mlp-v1")
    at.run()
    _upload(at, [(film.name, film.read_bytes())])
    assert any(i.value.startswith("No map of where the model looked: this model (Multi-layer perceptron on pixels) "
                                  "weighs the film's pixels directly") for i in at.info)  # (a browser review)
    assert len(probability_bars(at)) == 2  # probabilities still shown


def test_a_failed_explanation_leaves_the_reading_in_place(checkpoints, monkeypatch):
    """Overlays are drawn after every card's probabilities; one that fails says so where it would stand."""
    def failing(*args, **kwargs):
        raise TriageError("the heat map could not be computed")

    monkeypatch.setattr(dashboard.components.triage_view, "heat_map", failing)
    films = real_films()
    at = _app()
    _upload(at, [(p.name, p.read_bytes()) for p in (films[0], films[-1])])
    assert len(probability_bars(at)) == 2 * 2 and len(at.dataframe[0].value) == 2
    warnings = [w.value for w in at.warning if "No explanation for this film" in w.value]
    assert len(warnings) == 2 and all("could not be computed" in w for w in warnings)
    assert not any(c.startswith("Grad-CAM for") for image in at.get("image") for c in image.captions)
    assert not any("Computing the" in c.value for c in at.caption)  # no placeholder left behind


def test_an_explanation_put_off_for_a_busy_server_says_so_not_that_the_film_was_unread(checkpoints, monkeypatch):

    def busy(*args, **kwargs):
        raise ServerBusy(BUSY)

    monkeypatch.setattr(dashboard.components.triage_view, "heat_map", busy)
    film = real_films()[0]
    at = _app()
    _upload(at, [(film.name, film.read_bytes())])
    assert len(probability_bars(at)) == 2 and not at.warning  # the reading stands
    assert [i.value for i in at.info if "not drawn yet" in i.value] == [
        "The explanation is not drawn yet: the server is busy with other users' films. It will be drawn at the "
        "page's next run (press R, or change anything on the page)."]


def test_a_film_the_busy_server_put_off_is_counted_and_shown_as_not_read_yet_not_unreadable(checkpoints, monkeypatch):

    in_flight = dashboard.state.film_in_flight
    monkeypatch.setattr(dashboard.state, "film_in_flight", lambda *wait: (_ for _ in ()).throw(ServerBusy(BUSY)))
    film = real_films()[0]
    at = _app()
    _upload(at, [(film.name, film.read_bytes())])
    assert {m.label: m.value for m in at.metric}["Not read yet"] == "1" and not at.error
    assert [i.value for i in at.info if "busy" in i.value] == [BUSY]
    monkeypatch.setattr(dashboard.state, "film_in_flight", in_flight)  # the server keeps up: the card's button reads it
    next(b for b in at.button if b.label == "Read it again").click().run(timeout=120)
    assert "Not read yet" not in {m.label for m in at.metric} and len(probability_bars(at)) == 2


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


def test_without_any_model_the_page_says_what_to_do(tmp_path, settings_env):
    settings_env(CXR_CHECKPOINTS=str(tmp_path / "empty"), CXR_MODELS=str(tmp_path / "no-site-models"),
                 CXR_JOBS=str(tmp_path / "jobs"))
    at = _app()
    assert "No model is registered yet" in at.warning[0].value
    assert not at.get("file_uploader")  # drawn first, taken away: there is nothing to triage with


@pytest.mark.parametrize("page, title", [("views/compare.py", "Compare models"), ("views/retrain.py", "Retrain")])
def test_a_deep_link_on_a_fresh_server_runs_through_the_router(checkpoints, page, title):
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page)
    at.run()
    assert not at.exception
    assert at.title[0].value == title


# --- one decode per upload and session ------------------------------------------------------------------


def _unique_png(path) -> bytes:
    """A real film as PNG with a random text chunk: same pixels, bytes (and digest) no earlier run has cached."""
    info = PngInfo()
    info.add_text("run", secrets.token_hex(8))
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("L").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_an_upload_is_decoded_once_for_prediction_and_gradcam(checkpoints, monkeypatch):
    name, data = "once.png", _unique_png(real_films()[-1])
    reads = []

    def counting(source, name=None):
        reads.append(name)
        return read_film(source, name=name)

    monkeypatch.setattr(dashboard.state, "read_film", counting)
    at = _app()
    _upload(at, [(name, data)])
    captions = [c for image in at.get("image") for c in image.captions]
    assert "Grad-CAM for" in " ".join(captions) and len(probability_bars(at)) == 2  # predicted and explained
    assert reads.count(name) == 1
    films = at.session_state["decoded-films"]  # this session's FilmCache holds the decoded film
    digest = hashlib.sha256(data).hexdigest()[:16]
    assert isinstance(films, FilmCache) and digest in films and films.nbytes > 0

    next(s for s in at.selectbox if s.label == "Explanation method").set_value("gradcam++")  # a new heat map
    at.run()
    assert not at.exception
    assert any(c.startswith("Grad-CAM++ for") for image in at.get("image") for c in image.captions)
    assert reads.count(name) == 1  # the explanation reused the film prediction decoded


def test_the_film_cache_evicts_the_least_recently_used_to_stay_under_its_cap():
    paths = real_films()[:4]
    films = {p.name: read_film(p) for p in paths}
    sizes = sorted(f.nbytes for f in films.values())
    cache = FilmCache(max_bytes=sizes[-1] + sizes[-2] + 2 * 224 * 224 * 4)  # any two (with reference forms)
    names = list(films)
    assert sum(films[k].nbytes for k in names[:3]) > cache.max_bytes  # three never fit: eviction must happen
    decodes = []

    def decode(key):
        return lambda: decodes.append(key) or films[key]

    for key in names[:2]:
        assert cache.get_or_decode(key, decode(key)) is films[key]
        films[key].model_pixels  # prediction adds the reference form to what the cache holds
        assert cache.nbytes <= cache.max_bytes
    assert cache.get_or_decode(names[0], decode(names[0])) is films[names[0]]  # a hit: used most recently now
    assert decodes == names[:2]

    cache.get_or_decode(names[2], decode(names[2]))  # does not fit beside both: the least recently used goes
    assert names[1] not in cache and names[0] in cache and names[2] in cache
    assert cache.nbytes <= cache.max_bytes and len(cache) == 2
    cache.put(names[3], films[names[3]])
    assert names[0] not in cache and {names[2], names[3]} == {k for k in names if k in cache}
    assert cache.nbytes == films[names[2]].nbytes + films[names[3]].nbytes <= cache.max_bytes

    small = FilmCache(max_bytes=sizes[0] - 1)  # a film larger than the whole cap is used but never kept
    assert small.get_or_decode(names[0], decode(names[0])) is films[names[0]]
    assert len(small) == 0 and small.nbytes == 0


# --- per-session results and batch limits ---------------------------------------------------------------


def _cache_sizes(at: AppTest) -> tuple[int, int, int]:
    return tuple(len(at.session_state[key]) for key in ("decoded-films", "triage-results", "heat-maps"))


def test_results_and_heat_maps_stay_in_the_session_that_uploaded_them(checkpoints, monkeypatch):
    """Two browser sessions upload the same film: nothing one computed is handed to the other, cache keys
    carry the name only hashed, and a film taken out of the upload box leaves the session's caches."""
    name, data = "Doe^Jane 1950.png", _unique_png(real_films()[-1])
    reads = []
    monkeypatch.setattr(dashboard.state, "read_film", lambda source, name=None: reads.append(name) or
                        read_film(source, name=name))
    first, second = _app(), _app()
    for at in (first, second):
        _upload(at, [(name, data)])
        assert len(at.dataframe[0].value) == 1
        assert _cache_sizes(at) == (1, 1, 1)  # the film, its result and its heat map
        (key,) = at.session_state["triage-results"].keys()
        assert key[:2] == (hashlib.sha256(data).hexdigest()[:16], dashboard.state.name_key(name))
        assert "Doe" not in repr(at.session_state["triage-results"].keys() + at.session_state["heat-maps"].keys())
    assert reads.count(name) == 2  # each session decoded (and predicted) its own upload
    first.slider[0].set_value(0.7)  # a rerun of the same batch computes nothing again
    first.run()
    assert reads.count(name) == 2 and _cache_sizes(first) == (1, 1, 1)

    first.file_uploader(key="films").set_value([])
    first.run()
    assert not first.exception and _cache_sizes(first) == (0, 0, 0)
    assert _cache_sizes(second) == (1, 1, 1)  # the other session is not touched


@pytest.mark.parametrize("limits, batch, refusal", [({"CXR_BATCH_MAX_FILMS": "2"}, 3, "3 films (at most 2)"),
                                                    ({"CXR_BATCH_MAX_MB": "5"}, 1, "7 MB (at most 5 MB)")])
def test_a_batch_past_the_limits_is_refused_whole_and_a_smaller_one_runs(checkpoints, settings_env, limits, batch,
                                                                         refusal):  # the uncompressed DICOM: 6.9 MB
    settings_env(**limits)
    films = [require(DICOM_DIR / "RG1_UNCI.dcm", "the DICOM film")] if "CXR_BATCH_MAX_MB" in limits \
        else real_films()[:batch]
    at = _app()
    _upload(at, [(p.name, p.read_bytes()) for p in films])
    assert not at.dataframe and len(at.error) == 1
    assert refusal in at.error[0].value and "None of its films was triaged" in at.error[0].value
    assert _cache_sizes(at) == (0, 0, 0)  # no film was read
    small = real_films()[:2]
    _upload(at, [(p.name, p.read_bytes()) for p in small])
    assert not at.error and len(at.dataframe[0].value) == 2


def _remove(folder, name: str) -> None:
    """A version's files gone from the models folder, as another administrator's tab or a shell would leave it."""
    for path in folder.glob(f"{name}.*"):
        path.unlink()


def test_a_chosen_model_removed_meanwhile_is_named_with_the_model_now_in_use(checkpoints):
    at = _app()
    at.sidebar.selectbox[0].set_value("pneumonia-mlp-v1").run()
    _remove(checkpoints, "pneumonia-mlp-v1")
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "pneumonia-cnn5-v1"
    assert [w.value for w in at.sidebar.warning] == [
        "pneumonia-mlp-v1, the model chosen before, is no longer available (removed, or it cannot be read), so films "
        "are triaged with pneumonia-cnn5-v1. Choose another model above if you prefer."]
    at.run()  # said until someone chooses again, not for one run only
    assert len(at.sidebar.warning) == 1
