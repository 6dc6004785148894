"""A routine call on a film the population check finds unlike the model's training films (a review): its priority
is kept, but it is not shown as a confident green "Routine" among the others; it is read before them."""
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
