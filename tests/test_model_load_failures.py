"""A served model version whose load must fail in words rather than mislead (found by reviews): outputs that are
not numbers, and a version saved again between the page's listing and its load."""
from __future__ import annotations

import pytest
import test_dashboard_cold_start

import dashboard.model_loads
from core.errors import CheckpointError
from dashboard.model_loads import predictor_for, warm_up
from dashboard.state import registered_models

checkpoints = test_dashboard_cold_start.checkpoints  # its fixture: the quick registry, load threads joined after


def test_a_model_whose_outputs_are_not_numbers_fails_its_load_rather_than_every_film(checkpoints, monkeypatch):
    """Found by a review: weights that read every film as NaN loaded fine, and each film's card then said
    "unreadable", as if the films were at fault; the page now says the model cannot be used."""
    import torch

    import core.store.checkpoints

    real = core.store.checkpoints.load_checkpoint

    def damaged(path):
        loaded = real(path)
        with torch.no_grad():
            next(p for p in loaded.model.parameters() if p.is_floating_point()).fill_(float("nan"))
        return loaded

    monkeypatch.setattr(core.store.checkpoints, "load_checkpoint", damaged)
    entry = next(e for e in registered_models()[0] if e.name == "pneumonia-mlp-v1")
    load = dashboard.model_loads.ModelLoad(entry)  # its own load, not the shared cache's
    assert load.wait(240) and load.failed
    with pytest.raises(CheckpointError, match=r"^The model's outputs are not numbers"):
        load.result()


def test_a_version_saved_again_between_the_listing_and_its_load_is_not_kept_under_the_listing_s_key(checkpoints):
    """Found by a review: the cache key comes from the page's listing, the load reads the files afresh; a version
    saved again in between was kept under the listed threshold's key while it triaged at the stored one, and
    after a roll-back sessions showing the listed threshold were served the other."""
    from core.errors import TryAgainLater
    from core.store.descriptions import update_record

    (listed,) = [e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1"]
    moved = round(listed.record.operating_point.threshold / 2, 6)
    update_record(listed.json_path, lambda record: {
        "operating_point": record.operating_point.model_copy(update={"threshold": moved})})
    load = warm_up(listed)  # the listing read before the save
    assert load.wait(240) and load.failed
    with pytest.raises(TryAgainLater, match="saved again while it loaded"):
        load.result()
    assert warm_up(listed) is not load  # a passing refusal: the next run reads it again
    (now,) = [e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1"]
    assert predictor_for(now).loaded.operating_point.threshold == moved


def test_a_failed_load_keeps_no_page_run_s_films_alive(checkpoints):
    """A review: the failure was stored with its traceback and raised again, the same object, on every page run;
    each raise added that run's frames to it, so a broken version picked once kept every later run's uploads (the
    page's locals) in memory for as long as the failure stayed cached, outside every budget."""
    import gc
    import weakref

    (checkpoints / "pneumonia-mlp-v1.pt").write_bytes(b"truncated")
    entry = next(e for e in registered_models()[0] if e.name == "pneumonia-mlp-v1")
    load = dashboard.model_loads.ModelLoad(entry)
    assert load.wait(240) and load.failed

    class Uploads(bytearray):  # what a page run holds while it asks for its model
        pass

    def page_run() -> weakref.ref:
        uploads = Uploads(b"films" * 1000)
        with pytest.raises(CheckpointError, match="pneumonia-mlp-v1"):  # as the page catches it
            load.result()
        return weakref.ref(uploads)

    runs = [page_run() for _ in range(3)]
    gc.collect()
    assert [run() for run in runs] == [None, None, None]
    with pytest.raises(CheckpointError) as again:
        load.result()
    assert len(list(_frames(again.value.__traceback__))) <= 2  # this raise's frames only, none piled up


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def test_a_failure_that_cannot_be_copied_still_ends_the_load(checkpoints, monkeypatch):
    """A review of the day's change: copying a FolderNotAllowed (built without arguments) raised TypeError inside
    the failure's handling, so the load was never over and the page showed "Loading the model…" for good."""
    from core.errors import FolderNotAllowed

    def refused(path):
        raise FolderNotAllowed()

    import core.store.checkpoints

    monkeypatch.setattr(core.store.checkpoints, "load_checkpoint", refused)
    entry = next(e for e in registered_models()[0] if e.name == "pneumonia-mlp-v1")
    load = dashboard.model_loads.ModelLoad(entry)
    assert load.wait(60) and load.failed
    with pytest.raises(CheckpointError):
        load.result()
