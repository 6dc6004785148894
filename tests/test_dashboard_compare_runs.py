"""Evaluating on a folder across the Compare page's reruns (dashboard/views/compare.py), found by a review of the
page: a model that failed on the folder was read again at every rerun, and the audit lines of a run were written
only once every model had been read, so a run left midway read a server folder with nothing recorded."""
from __future__ import annotations

import pytest
from e2e_support import FILMS_DIR, require
from streamlit.testing.v1 import AppTest
import test_dashboard_compare as compare_page

from core.admin.audit import read_actions
from core.errors import DatasetError, TryAgainLater

MODELS, _evaluate = compare_page.MODELS, compare_page._evaluate
at = compare_page.at  # its page fixture: the Compare page of the quick models


@pytest.fixture
def page(at) -> AppTest:
    """The Compare page of the quick models, set to evaluate on a folder."""
    at.segmented_control[0].set_value("Evaluate on a folder").run()
    return at


def _reading(monkeypatch, fail: set[str], calls: list[str], busy: str = "", failure=DatasetError) -> None:
    import dashboard.components.compare_view as compare_view

    real = compare_view.folder_report

    def reading(name, *args):
        calls.append(name)
        if name == busy:
            raise TryAgainLater(f"{name} found the server busy.")
        if name in fail:
            raise failure(f"{name} cannot read this folder.")
        return real(name, *args)

    monkeypatch.setattr(compare_view, "folder_report", reading)


def test_a_model_that_failed_on_the_folder_is_said_again_not_read_again_until_evaluate(page, monkeypatch):
    require(FILMS_DIR, "films")
    calls = []
    _reading(monkeypatch, set(MODELS), calls, busy=MODELS[1])
    _evaluate(page)
    assert sorted(calls) == MODELS and len(page.error) == 2
    page.run()  # any rerun: the failures are said again from memory
    assert sorted(calls) == MODELS and len(page.error) == 2
    said = sorted(e.value for e in page.error)  # "try again" only where that may help (a review)
    assert said[0].endswith("cannot read this folder. Put the folder right, or choose another, and press Evaluate.")
    assert said[1].endswith("found the server busy. Press Evaluate to try again."), said
    _evaluate(page)  # pressed again: tried again
    assert sorted(calls) == sorted(MODELS * 2)


def test_a_failure_on_the_server_s_side_asks_nothing_of_the_folder(page, monkeypatch):
    """A re-read: a device or data-roots failure, which no folder change mends, was told to put the folder right."""
    from core.errors import DeviceUnavailable

    require(FILMS_DIR, "films")
    _reading(monkeypatch, set(MODELS), [], failure=DeviceUnavailable)
    _evaluate(page)
    assert len(page.error) == 2 and all(e.value.endswith("cannot read this folder.") for e in page.error)


def test_each_reading_is_recorded_as_soon_as_it_is_made(page, monkeypatch):
    require(FILMS_DIR, "films")
    import dashboard.components.compare_view as compare_view

    real, calls = compare_view.folder_report, []

    def reading(name, *args):  # the page left (or stopped) while the second model reads the folder
        calls.append(name)
        if name == MODELS[1]:
            raise RuntimeError("stopped midway")
        return real(name, *args)

    monkeypatch.setattr(compare_view, "folder_report", reading)
    _evaluate(page)
    assert calls == MODELS and page.exception  # the run ended at the second model ...
    assert [(a.action, a.model) for a in read_actions(limit=10)] == [("evaluate-folder", MODELS[0])]  # ... recorded


def test_whether_a_model_learned_from_the_folder_is_worked_out_once_not_at_every_rerun(page, monkeypatch):
    """Found by a resource review: each rerun walked the whole evaluated folder twice per model, to look for links
    into its training or calibration films (about 3 s a model for 100,000 films)."""
    require(FILMS_DIR, "films")
    import core.evaluation.overlap as overlap

    real, walks = overlap._linked_places, []
    monkeypatch.setattr(overlap, "_linked_places", lambda folder: walks.append(folder) or real(folder))
    _evaluate(page)
    first = len(walks)
    assert first == len(MODELS)  # each model's links worked out once (a test review: 0 walks passed as well)
    page.run()
    page.run()
    assert not page.exception and len(walks) == first



def test_a_version_saved_again_since_the_listing_is_not_read_under_the_listed_version(page, tmp_path):
    """Found by a concurrency review: the reading was cached and audited under the listing's hashes while the
    load read whatever was on disk, so a version saved again with another threshold was the listed one's figures."""
    require(FILMS_DIR, "films")
    from core.errors import TryAgainLater
    from dashboard.components.compare_view import folder_report

    listed = str(tmp_path / "checkpoints" / f"{MODELS[0]}.json")  # the page fixture's models
    with pytest.raises(TryAgainLater, match="saved again while the page read it"):
        folder_report(MODELS[0], "0" * 64, listed, str(FILMS_DIR), "a stamp")


def test_a_reading_is_made_again_once_the_chest_film_detector_s_files_change(page, monkeypatch):
    """A re-read: a reading made while the detector could not be loaded (its caution says so) was kept for twelve
    hours after its files were put right; a refitted detector's verdicts were not read either."""
    require(FILMS_DIR, "films")
    import core.evaluation.folder as folder
    import core.serving.detector_files as detector_files

    real, reads = folder.read_folder, []
    monkeypatch.setattr(folder, "read_folder", lambda loaded, *args, **kw: reads.append(loaded.name)
                        or real(loaded, *args, **kw))
    _evaluate(page)
    page.run()
    assert sorted(reads) == MODELS  # kept across reruns ...
    monkeypatch.setattr(detector_files, "detector_stamps", lambda: ((1, 2, 3), (4, 5, 6)))  # written again
    page.run()
    assert not page.exception and sorted(reads) == sorted(MODELS * 2)  # ... until the detector's files change
