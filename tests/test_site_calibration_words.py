"""How a version recalibrated on a site's films is described (a review of site calibration, 2026-12-07): the card
says how many site films chose its threshold and what sensitivity they leave room for, and the Retrain page's
outcome gives every figure its 95 % interval, since a site folder may hold as few films as the promotion floor."""
from __future__ import annotations

from core.store.promotion import SITE_REPORT
from core.store.records import Calibration, read_model_record
from core.wording import with_interval
from dashboard.components.calibrate_view import outcome_lines
from dashboard.components.model_card import operating_point_text

from conftest import REPO


def _on_site(n: int):
    """The shipped logistic model as if recalibrated on ``n`` site films (its validation report standing in)."""
    record = read_model_record(REPO / "checkpoints" / "pneumonia-logistic-v1.json")
    calibration = Calibration.model_validate({"from": record.name, "previous_threshold": 0.5, "source": "site folder",
                                              "target_sensitivity": 0.95, "folder": "ward-films/2026"})
    site = record.report.model_copy(update={"n": n})
    return record.model_copy(update={"calibration": calibration, "other_reports": {SITE_REPORT: site}}), site


def test_the_card_names_how_many_site_films_chose_the_threshold_and_their_interval():
    record, site = _on_site(16)
    there = with_interval(site.sensitivity, site.sensitivity_ci)
    assert "(" in there and f"on the site folder's 16 films (sensitivity there {there})" in operating_point_text(record)


def test_the_calibration_outcome_gives_each_figure_its_interval():
    record, site = _on_site(16)
    internal, on_site = outcome_lines(record)[1:]
    assert internal == (f"Internal validation at this threshold: sensitivity "
                        f"{with_interval(record.report.sensitivity, record.report.sensitivity_ci)}, specificity "
                        f"{with_interval(record.report.specificity, record.report.specificity_ci)} "
                        f"({record.report.n} films).")
    assert on_site.startswith(f"Site films: sensitivity {with_interval(site.sensitivity, site.sensitivity_ci)}, "
                              f"specificity {with_interval(site.specificity, site.specificity_ci)} (16 films; ")


def test_a_site_report_says_when_the_chest_film_check_could_not_screen_its_films(trained_model, tmp_path,
                                                                                  settings_env, films_dir, monkeypatch):
    """A re-read of the change: with the detector unreadable, image statistics alone screened the site films, and
    the report said nothing of it."""
    import corpus
    from test_calibrate_site import TARGET, _ward

    from core.errors import CheckpointError
    from core.serving.chest_check import ChestFilmCheck
    from core.training.calibrate import calibrate

    registry = corpus.copy_registry(trained_model.directory, tmp_path / "models")
    site, roots = _ward(tmp_path, films_dir, 3)
    settings_env(CXR_DATA_ROOTS=str(roots))

    def unreadable():
        raise CheckpointError("The chest-film detector cannot be loaded.")

    monkeypatch.setattr(ChestFilmCheck, "shared", unreadable)
    new = calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    assert "the chest-film check could not run, so image statistics alone screened them" in new.other_reports[
        SITE_REPORT].split


def _compare_sources_of_a_site_calibrated_version():
    from conftest import REPO
    from test_site_calibration_words import _on_site

    from core.store.registry import ModelEntry
    from dashboard.components.compare_view import sources

    record, _ = _on_site(16)
    sources([(ModelEntry(record, False, REPO / "checkpoints" / f"{record.name}.json"), record.report)])


def test_compare_says_where_a_site_calibrated_version_s_threshold_was_chosen():
    """A browser review: Compare described its figures as "validation: 1038 films …" only, though they are read at
    the threshold the site's films chose."""
    from streamlit.testing.v1 import AppTest

    from dashboard.components.model_card import threshold_note

    record, site = _on_site(16)
    there = with_interval(site.sensitivity, site.sensitivity_ci)
    assert threshold_note(record) == (f"; at a threshold chosen on the site folder's 16 films (sensitivity there "
                                      f"{there})")
    assert threshold_note(read_model_record(REPO / "checkpoints" / "pneumonia-logistic-v1.json")) == ""
    at = AppTest.from_function(_compare_sources_of_a_site_calibrated_version).run()
    assert not at.exception and "at a threshold chosen on the site folder's 16 films" in at.caption[0].value
