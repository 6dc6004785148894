"""How the worklist reads (reviews of the Triage page): a routine call on a film unlike what the model reads (the
population check, or the film's own DICOM header, grey levels or shape) keeps its priority but is not shown as a
confident green "Routine" among the others, and is read before them; a batch's readings reach the page as they
come, not only once all are read."""
from __future__ import annotations

import numpy as np
import pytest

from core.serving.predict import Prediction, Predictor
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


@pytest.mark.parametrize("header", [{"ViewPosition": "LL"}, {"BodyPartExamined": "ABDOMEN"}, {"Modality": "CT"}])
def test_a_routine_call_on_a_film_whose_header_says_it_is_no_frontal_chest_film_is_atypical(predictor, films_dir,
                                                                                             header):
    """A review: a DICOM whose header said lateral, abdomen or CT was warned about, yet its routine call stood as a
    confident green "Routine" among the others; the population warning alone made it atypical."""
    import dataclasses
    import math

    from core.films.read import read_film
    from core.serving.commands import _describe

    film = read_film(sorted(films_dir.glob("NORMAL/*.jpeg"))[0])
    score = predictor.predict(film).abnormal_score
    point = predictor.loaded.record.operating_point.model_copy(update={"threshold": math.nextafter(score, 2.0)})
    loaded = dataclasses.replace(predictor.loaded, record=predictor.loaded.record.model_copy(
        update={"operating_point": point}))
    routine = Predictor(loaded, chest_check=predictor.chest_check)
    as_dicom = dataclasses.replace(film, source_format="DICOM", metadata={"format": "DICOM", "Modality": "CR",
                                                                         "BodyPartExamined": "CHEST", **header})
    plain, doubted = routine.predict(film), routine.predict(as_dicom)
    assert plain.priority == doubted.priority == "routine"  # the call is kept
    assert not plain.atypical and doubted.atypical and doubted.to_dict()["atypical"] is True
    assert len(doubted.doubts) == 1 and doubted.doubts[0].startswith("The DICOM header gives the ")
    assert doubted.warnings.count(doubted.doubts[0]) == 1  # said once
    results = [FilmResult(name, name, np.zeros((4, 4), np.uint8), (4, 4), "PNG", {}, prediction)
               for name, prediction in (("plain.png", plain), ("lateral.dcm", doubted))]
    assert [status_of(r) for r in results] == ["routine", "routine, atypical"]
    assert [r.file for r in in_worklist_order(results)] == ["lateral.dcm", "plain.png"]
    assert "[routine]" in _describe("plain.png", plain) and "[routine, atypical film]" in _describe("x", doubted)


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


def test_every_triaged_card_says_the_score_its_priority_came_from():
    """A triage review: a routine film read "Routine ✓, Label: NORMAL" beside a larger abnormal bar (a COVID-19
    film at 50 % under its 0.543 threshold), and an urgent one "PNEUMONIA" beside a larger NORMAL bar under a low
    threshold; the rule that made the call showed only in the sidebar card and a column's help."""
    from dashboard.components.triage_view import score_line

    routine, urgent = _film("r.png", "routine", 0.5299, UNLIKE), _film("u.png", "urgent", 0.7001)
    assert score_line(routine.prediction) == (
        "Abnormal score 0.530 (1 − p(normal)), below the urgent threshold 0.700: routine means below it, not a "
        "finding of normal.")
    assert score_line(urgent.prediction) == ("Abnormal score 0.7001 (1 − p(normal)), at or above the urgent "
                                             "threshold 0.700.")
    # a routine score a float32 step under its threshold never reads as the threshold itself (a worklist review:
    # 0.47097996 read "0.470980" beside a threshold of 0.47098, at the 6 decimals the score was shown to at most)
    close = _film("close.png", "routine", 0.69999996).prediction
    assert score_line(close).startswith("Abnormal score 0.69999996 (1 − p(normal)), below the urgent threshold 0.700")
    lower = _film("lower.png", "urgent", 0.472).prediction  # under a threshold below one half (a browser review)
    lower.threshold = 0.47098
    assert score_line(lower) == ("Abnormal score 0.472 (1 − p(normal)), at or above the urgent threshold 0.47098. "
                                 "PNEUMONIA is the call at that threshold, though NORMAL is the more probable class.")
    untriaged = _film("blank.png", "routine", 0.5).prediction
    untriaged.priority = None  # not a usable chest film: no call to explain
    assert score_line(untriaged) is None
    every = _film("low.png", "urgent", 0.01).prediction
    every.threshold = -1e-9  # chosen so that every film is flagged
    assert score_line(every) == ("Abnormal score 0.010 (1 − p(normal)), at or above the urgent threshold 0 (every "
                                 "film urgent). PNEUMONIA is the call at that threshold, though NORMAL is the more "
                                 "probable class.")


def test_the_map_a_card_opens_on_shows_the_evidence_for_disease():
    """A triage review: a routine film's card opened on a map "for NORMAL", whose red spot reads as a lesion; the
    map a reader wants from a triage call is where the model found its strongest abnormal evidence."""
    from dashboard.components.triage_view import class_explained_first

    assert class_explained_first(_film("r.png", "routine", 0.2).prediction, "NORMAL") == "PNEUMONIA"
    assert class_explained_first(_film("u.png", "urgent", 0.9).prediction, "NORMAL") == "PNEUMONIA"
    covid = Prediction("m", {"COVID19": 0.30, "NORMAL": 0.50, "VIRAL": 0.20}, "NORMAL", "routine", 0.5, 0.543, [],
                       None, True)
    assert class_explained_first(covid, "NORMAL") == "COVID19"  # the leading abnormal class, not the label
    urgent = Prediction("m", {"COVID19": 0.30, "NORMAL": 0.25, "VIRAL": 0.45}, "VIRAL", "urgent", 0.75, 0.543, [],
                        None, True)
    assert class_explained_first(urgent, "NORMAL") == "VIRAL"  # an urgent film's own label
    assert class_explained_first(urgent, None) == "VIRAL"  # no normal class: its label


def test_a_saturated_probability_bar_never_reads_as_a_certainty():
    """A review: the bars' percent format rounds to two decimals, so 0.99998 read "100%" beside a card that says
    ">99.9999 %". On screen the bars stay within 0.01 %-99.99 %; the CSV keeps the figures as predicted."""
    from dashboard.components.worklist import BAR_RANGE, on_screen, worklist_csv

    films = [_film("sure.png", "urgent", 0.99998), _film("clear.png", "routine", 0.00002)]
    shown = on_screen(worklist(films, ("NORMAL", "PNEUMONIA")), ("NORMAL", "PNEUMONIA"))
    assert list(shown["Probability"]) == [BAR_RANGE[1], BAR_RANGE[1]]
    assert list(shown["p(PNEUMONIA)"]) == [BAR_RANGE[1], BAR_RANGE[0]]
    assert list(shown["Abnormal score"]) == [0.99998, 0.00002]  # a score, not a bar: as predicted
    assert "0.99998" in worklist_csv(films, "m", ("NORMAL", "PNEUMONIA")).decode()
