"""How the worklist reads (two reviews of the Triage page): a routine call on a film the population check finds
unlike the model's training films keeps its priority but is not shown as a confident green "Routine" among the
others, and is read before them; a batch's readings reach the page as they come, not only once all are read."""
from __future__ import annotations

import numpy as np

from core.serving.predict import Prediction
from dashboard.components.worklist import BADGES, in_worklist_order, status_of, worklist
from dashboard.state import FilmResult

UNLIKE = "This film is unlike the films the model was trained on; read the result with caution."


def _film(name: str, priority: str, score: float, population_warning: str | None = None) -> FilmResult:
    prediction = Prediction("m", {"NORMAL": 1 - score, "PNEUMONIA": score},
                            "PNEUMONIA" if priority == "urgent" else "NORMAL", priority, score, 0.7, [],
                            population_warning, True)
    return FilmResult(name, name, np.zeros((4, 4), np.uint8), (4, 4), "PNG", {}, prediction)


def test_a_routine_call_on_an_atypical_film_is_read_before_the_confident_routine_ones():
    films = [_film("routine.png", "routine", 0.40), _film("atypical-routine.png", "routine", 0.10, UNLIKE),
             _film("atypical-urgent.png", "urgent", 0.90, UNLIKE), _film("urgent.png", "urgent", 0.95)]
    assert [r.file for r in in_worklist_order(films)] == ["urgent.png", "atypical-urgent.png",
                                                          "atypical-routine.png", "routine.png"]
    table = worklist(films)
    assert list(table["Priority"]) == ["Urgent", "Urgent", "Routine, atypical film", "Routine"]
    assert table.loc[2, "Label"] == "NORMAL" and UNLIKE in table.loc[2, "Warnings"]  # the call itself is kept
    assert BADGES[status_of(films[1])][1] == "orange" and BADGES[status_of(films[0])][1] == "green"
    assert status_of(films[2]) == "urgent"  # an urgent call stays urgent, warning or not


def test_the_page_is_given_each_reading_as_it_comes_not_only_the_whole_batch(predictor, films_dir, monkeypatch):
    """A review: a batch showed nothing but "Reading film k of N" until its last film was read."""
    import corpus
    from dashboard import state
    from dashboard.state import Upload, triage_uploads

    monkeypatch.setattr(state, "session_cache", lambda kind, kept={}: kept.setdefault(kind, state.BoundedCache(
        *state._CAPS[kind])))  # one session's cache, fresh for this test
    films = sorted((films_dir / "PNEUMONIA").iterdir())[:3]
    uploads = [Upload.of(corpus.Upload(film.name, film.read_bytes())) for film in films]
    seen = []
    results = triage_uploads(predictor, uploads, on_result=lambda so_far: seen.append([r.file for r in so_far]))
    assert seen == [[films[0].name], [films[0].name, films[1].name], [f.name for f in films]]
    assert all(r.prediction is not None for r in results)
