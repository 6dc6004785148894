"""The Triage page across visits to another page: the batch and the explanation settings come back."""
from __future__ import annotations

import pytest
from e2e_support import app_page, quick_checkpoints, real_films


@pytest.fixture
def checkpoints(tmp_path, settings_env):
    folder = quick_checkpoints(tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    return folder


def _upload(at, files: list[tuple[str, bytes]]) -> None:
    at.file_uploader(key="films").set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert not at.exception


def test_the_batch_comes_back_after_a_visit_to_another_page_until_it_is_replaced_or_cleared(checkpoints):
    """Found in a browser audit: after a look at Compare, the upload box was empty and the worklist gone."""
    films = real_films()[:3]
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in films])
    before = at.dataframe[0].value
    at.file_uploader(key="films").set_value([])  # taken out on the Triage page itself: gone
    at.run()
    assert not at.dataframe and any("Upload one or more films" in i.value for i in at.info)
    _upload(at, [(film.name, film.read_bytes()) for film in films])
    at.switch_page("views/compare.py")
    at.run()
    at.switch_page("views/triage.py")
    at.run()
    assert not at.exception and not at.file_uploader(key="films").value  # Streamlit empties the box
    assert any(i.value.startswith("The 3 file(s) uploaded before you left this page are shown again")
               for i in at.info)
    again = at.dataframe[0].value
    assert list(again["File"]) == list(before["File"]) and list(again["Priority"]) == list(before["Priority"])
    next(s for s in at.selectbox if s.label == "Explanation method").set_value("gradcam++")
    at.run()  # and on every run of the page while it is shown
    assert not at.exception and list(at.dataframe[0].value["File"]) == list(before["File"])
    assert any(i.value.startswith("The 3 file(s) uploaded before you left this page are shown again") for i in at.info)
    next(b for b in at.button if b.label == "Clear these films").click()
    at.run()
    assert not at.dataframe and any("Upload one or more films" in i.value for i in at.info)


def test_explanation_settings_outlive_a_visit_to_another_page(checkpoints):
    """Found in a browser audit: back from Compare, the method, the opacity and each film's class were reset."""
    films = real_films()[:2]
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in films])
    next(s for s in at.selectbox if s.label == "Explanation method").set_value("gradcam++")
    next(s for s in at.slider if s.label == "Heat map opacity").set_value(0.7)
    at.run()
    classes = [s for s in at.selectbox if s.label == "Explain class"]
    other = next(c for c in classes[0].options if c != classes[0].value)
    classes[0].set_value(other)
    at.run()
    chosen = [s.value for s in at.selectbox if s.label == "Explain class"]
    at.switch_page("views/compare.py")
    at.run()
    at.switch_page("views/triage.py")
    at.run()
    assert not at.exception
    assert next(s for s in at.selectbox if s.label == "Explanation method").value == "gradcam++"
    assert next(s for s in at.slider if s.label == "Heat map opacity").value == 0.7
    assert [s.value for s in at.selectbox if s.label == "Explain class"] == chosen and chosen[0] == other
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith(f"Grad-CAM++ for {other}") for c in captions)


def test_a_batch_the_server_took_back_while_its_user_was_away_is_said_to_be_gone(checkpoints, monkeypatch):
    """Found by a review: another session short of memory empties caches idle for 5 minutes, the kept batch's
    too; back from Compare, the page said only "Upload one or more films", as if there had been none."""
    from core.serving import film_cache
    from dashboard.state import SESSION_CACHES

    films = real_films()[:2]
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in films])
    at.switch_page("views/compare.py")
    at.run()
    monkeypatch.setattr(film_cache, "IDLE_S", 0.0)  # five minutes on Compare, and another session needs the room
    SESSION_CACHES.reclaim_idle(film_cache.BoundedCache(1, len), SESSION_CACHES.max_bytes)
    at.switch_page("views/triage.py")
    at.run()
    assert not at.exception and not at.dataframe
    assert [w.value for w in at.warning if "not kept" in w.value] == [
        "The 2 file(s) uploaded before you left this page were not kept while you were away: the server needed the "
        "memory for other users' films. Upload them again to see their readings."]
    at.run()  # said once: the page then waits for films as usual
    assert not [w for w in at.warning if "not kept" in w.value]


def test_a_film_stopped_at_its_time_limit_waits_until_read_it_again_is_pressed(checkpoints, monkeypatch):
    """The app keeps such a film as not read yet (no later click spends the limit again); its card's button is what
    reads it again (from a review: only the busy server's case, never kept, had been tried through the page)."""
    import dashboard.state
    from core.errors import DecodingTimedOut

    in_flight = dashboard.state.film_in_flight
    monkeypatch.setattr(dashboard.state, "film_in_flight", lambda *wait: (_ for _ in ()).throw(
        DecodingTimedOut("film.jpeg took longer than the time limit for its size to decode.")))
    film = real_films()[0]
    at = app_page()
    _upload(at, [(film.name, film.read_bytes())])
    assert {m.label: m.value for m in at.metric}["Not read yet"] == "1"
    monkeypatch.setattr(dashboard.state, "film_in_flight", in_flight)  # the server keeps up again
    at.run()
    assert {m.label: m.value for m in at.metric}["Not read yet"] == "1"  # kept: not decoded at every click
    next(b for b in at.button if b.label == "Read it again").click().run()
    assert "Not read yet" not in {m.label for m in at.metric} and not at.exception


def test_a_batch_replaced_by_one_too_large_does_not_come_back_after_a_visit(checkpoints, settings_env):
    """Found by a review: the refused batch stopped the page before the batch it replaced was let go, so a visit
    to Compare brought back films the user had taken out of the box."""
    settings_env(CXR_BATCH_MAX_FILMS="3")
    films = real_films()[:5]
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in films[:2]])
    assert len(at.dataframe[0].value) == 2
    _upload(at, [(film.name, film.read_bytes()) for film in films[1:5]])
    assert any("4 films (at most 3)" in e.value for e in at.error) and not at.dataframe
    at.switch_page("views/compare.py")
    at.run()
    at.switch_page("views/triage.py")
    at.run()
    assert not at.exception and not at.dataframe
    assert not any("shown again" in i.value for i in at.info)
    assert any("Upload one or more films" in i.value for i in at.info)


def test_once_the_server_is_found_busy_the_other_overlays_do_not_wait_their_own_turn(checkpoints, monkeypatch):
    """A review: each overlay of a page of cards waited its own 120 s for a slot; the first waits, the rest try once."""
    import dashboard.components.triage_view
    from core.errors import ServerBusy
    from core.serving.in_flight import BUSY

    waits = []

    def busy(class_name, method, upload, predictor, patience):  # a server found busy, as film_in_flight finds it
        waits.append(patience.wait_s)
        patience.spent = True
        raise ServerBusy(BUSY)

    monkeypatch.setattr(dashboard.components.triage_view, "heat_map", busy)
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in real_films()[:3]])
    assert waits == [None, 0.0, 0.0] and sum("not drawn yet" in i.value for i in at.info) == 3 and not at.exception


def test_the_batch_in_the_upload_box_takes_none_of_the_caches_budget_until_its_page_is_left(checkpoints):
    """Found by a review: the kept batch charged its bytes (up to 250 MB a session) to the budget every session's
    caches share while Streamlit's upload store still held those very bytes, so with a few full batches open the
    next session's results found no room. It is charged once the page is left and the store lets go."""
    films = real_films()[:3]
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in films])
    kept = at.session_state["kept-batch"]
    assert kept.nbytes == 0
    at.switch_page("views/compare.py")
    at.run()
    assert kept.nbytes == sum(film.stat().st_size for film in films)


def test_the_display_copy_is_the_film_at_display_size_in_eight_bits():
    """Shrunk before it is scaled to 8 bits (a review: scaling first made two full-size float copies): the same
    picture as scaling first, within a grey level but at a few sharp edges (0.02 % of pixels on these films),
    which 8-bit PIL also pre-shrinks by box averaging."""
    import numpy as np
    from PIL import Image

    from core import limits
    from core.films.read import read_film
    from dashboard.state import _display_copy

    path = next(f for f in real_films() if max(Image.open(f).size) > limits.DISPLAY_SIDE)
    film = read_film(path.read_bytes(), path.name)
    shown = _display_copy(film)
    first = Image.fromarray((film.pixels * 255.0).round().astype(np.uint8))
    first.thumbnail((limits.DISPLAY_SIDE, limits.DISPLAY_SIDE), Image.Resampling.LANCZOS)
    assert shown.dtype == np.uint8 and max(shown.shape) == limits.DISPLAY_SIDE and shown.shape == first.size[::-1]
    difference = np.abs(shown.astype(int) - np.asarray(first, dtype=int))
    assert np.percentile(difference, 99.9) <= 1 and (difference > 3).mean() < 0.001 and difference.mean() < 0.3


def test_each_upload_is_hashed_once_not_at_every_run_of_the_page(checkpoints, monkeypatch):
    """Found by a review: the page hashed every upload again at each run (a slider move, a class picked): 0.26 s
    for a full 250 MB batch. A new upload of the same bytes is a new file and is hashed again."""
    import dashboard.state

    films, hashed = real_films()[:2], []
    sizes, real = sorted(film.stat().st_size for film in films), dashboard.state.hashlib.sha256
    monkeypatch.setattr(dashboard.state.hashlib, "sha256",  # the films' bytes, not the other digests the page makes
                        lambda data=b"": (len(data) in sizes and hashed.append(len(data))) or real(data))
    at = app_page()
    _upload(at, [(film.name, film.read_bytes()) for film in films])
    assert sorted(hashed) == sizes
    next(s for s in at.slider if s.label == "Heat map opacity").set_value(0.7)
    at.run()
    assert not at.exception and sorted(hashed) == sizes and at.dataframe
