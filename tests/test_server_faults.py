"""A fault of the server's own while a film is read (dashboard.state), found by a messages review: only TriageError
was caught per film, so anything else (a CUDA error, a bug) replaced the whole worklist with Streamlit's bare
error box, at every rerun."""
from __future__ import annotations

import corpus

from dashboard import state
from dashboard.state import Upload, read_again, triage_uploads


def test_a_server_fault_on_one_film_is_said_on_its_card_and_the_others_are_read(predictor, films_dir, monkeypatch,
                                                                                 caplog):
    films = sorted((films_dir / "PNEUMONIA").iterdir())[:2]
    uploads = [Upload.of(corpus.Upload(f"film-{n}.jpeg", path.read_bytes())) for n, path in enumerate(films)]
    predict, calls = predictor.predict, []

    def faulty(film):
        calls.append(film)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return predict(film)

    monkeypatch.setattr(predictor, "predict", faulty)
    monkeypatch.setattr(state, "session_cache", lambda kind, kept={}: kept.setdefault(kind, state.BoundedCache(
        *state._CAPS[kind])))  # one session's cache, fresh for this test
    first, second = triage_uploads(predictor, uploads)
    assert first.retry and first.prediction is None and "fault on the server" in first.error
    assert "CUDA" not in first.error and "CUDA error" in caplog.text  # the detail for the log, not the page
    assert second.prediction is not None
    triage_uploads(predictor, uploads)
    assert len(calls) == 2  # kept until asked for again, as a film past its time limit is
    read_again(uploads[0].digest)
    assert triage_uploads(predictor, uploads)[0].prediction is not None and len(calls) == 3
