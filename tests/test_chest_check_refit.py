"""The chest-film detector refitted while the app runs (core.serving.chest_check), found by a review of a
server left running for weeks: it was loaded once per process, a refit into the shipped folder was refused at
the next start (its checksum manifest not re-signed, so no film was checked), a reader between the refit's two
writes could pair a new score with the old threshold, and a model loaded while the detector was unreadable stayed
unchecked for good."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import core.serving.predict as predict_module
from core.config import settings
from core.errors import CheckpointError
from core.serving.chest_check import DETECTOR_NAME, ChestFilmCheck, ChestFilmDetector
from core.store.atomic import atomic_write_bytes
from core.store.manifest import write_manifest


@pytest.fixture
def shipped_detector() -> ChestFilmDetector:
    return ChestFilmDetector.load(settings().detector)  # the repo's, read outside a shipped folder in tests


def _refit(detector: ChestFilmDetector, factor: float) -> ChestFilmDetector:
    return ChestFilmDetector(detector.score, detector.threshold * factor, dict(detector.calibration))


def test_a_detector_refitted_while_the_app_runs_is_read_at_the_next_film(shipped_detector, tmp_path):
    folder = tmp_path / "detector"
    shipped_detector.save(folder)
    check = ChestFilmCheck(folder)
    assert check.detector.threshold == shipped_detector.threshold
    _refit(shipped_detector, 0.5).save(folder)
    assert check.detector.threshold == shipped_detector.threshold * 0.5
    (folder / f"{DETECTOR_NAME}.json").write_text("{broken")  # a refit that cannot be read ...
    assert check.detector.threshold == shipped_detector.threshold * 0.5  # ... leaves the one in use


def test_a_reader_between_a_refit_s_two_writes_refuses_the_pair(shipped_detector, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    shipped_detector.save(old)
    _refit(shipped_detector, 0.5).save(new)
    shutil.copy(new / f"{DETECTOR_NAME}.pt", old / f"{DETECTOR_NAME}.pt")  # the same tensors: still a pair
    assert ChestFilmDetector.load(old).threshold == shipped_detector.threshold
    meta = json.loads((old / f"{DETECTOR_NAME}.json").read_text())
    (old / f"{DETECTOR_NAME}.pt").write_bytes((old / f"{DETECTOR_NAME}.pt").read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="not the ones its description was written with"):
        ChestFilmDetector.load(old)
    assert meta["tensors_sha256"]


def test_a_detector_refitted_into_the_shipped_folder_is_signed_and_loads_after_a_restart(shipped_detector,
                                                                                         tmp_path, settings_env):
    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    settings_env(CXR_CHECKPOINTS=str(shipped), CXR_DETECTOR_DIR=str(shipped / "detector"))
    _refit(shipped_detector, 0.5).save(shipped / "detector")
    assert "detector/chest-film-detector.pt" in (shipped / "MANIFEST.sha256").read_text()
    assert ChestFilmDetector.load().threshold == shipped_detector.threshold * 0.5  # verified against it
    # a film read between a refit's file and its signature: the load fails, and the signature, landing a moment
    # later, is read as a change too (a review of the day's change: the old detector stayed until a restart)
    check = ChestFilmCheck()
    _refit(shipped_detector, 0.25).save(tmp_path / "elsewhere")
    for suffix in (".pt", ".json"):
        atomic_write_bytes(shipped / "detector" / f"{DETECTOR_NAME}{suffix}",
                           (tmp_path / "elsewhere" / f"{DETECTOR_NAME}{suffix}").read_bytes())
    assert check.detector.threshold == shipped_detector.threshold * 0.5  # not signed yet: refused, the old one kept
    write_manifest(shipped, [shipped / "detector" / f"{DETECTOR_NAME}{suffix}" for suffix in (".pt", ".json")])
    assert check.detector.threshold == shipped_detector.threshold * 0.25


def test_a_model_loaded_while_the_detector_was_unreadable_takes_it_up_once_it_is_back(predictor, tmp_path,
                                                                                     settings_env, monkeypatch,
                                                                                     shipped_detector):
    from core.films.read import read_film

    folder = tmp_path / "detector"
    settings_env(CXR_DETECTOR_DIR=str(folder))
    monkeypatch.setattr(ChestFilmCheck.__dict__["shared"], "_instances", {})  # none loaded in this process yet
    monkeypatch.setattr(predict_module, "CHECK_RETRY_S", 0.0)
    unchecked = predict_module.Predictor(predictor.loaded)
    film = read_film(next(Path(settings().data, "films", "NORMAL").iterdir()))
    first = unchecked.predict(film)
    assert "The chest-film check is unavailable" in " ".join(first.warnings)
    assert first.atypical  # a worklist review: a routine call the check never saw stayed a plain green routine
    shipped_detector.save(folder)  # put right
    second = unchecked.predict(film)
    assert "The chest-film check is unavailable" not in " ".join(second.warnings) and not second.atypical
    assert isinstance(unchecked.chest_check, ChestFilmCheck)


def test_results_are_kept_under_the_check_they_were_read_with(predictor, tmp_path, settings_env, monkeypatch,
                                                               shipped_detector):
    """Found by a concurrency review: the app kept a film's result under its model's key alone, so a result read
    before a refit, or while the detector could not be read (an "unavailable" doubt), was shown as it was for as
    long as the film stayed in the box."""
    from dashboard.model_loads import model_key

    folder = tmp_path / "detector"
    settings_env(CXR_DETECTOR_DIR=str(folder))
    monkeypatch.setattr(ChestFilmCheck.__dict__["shared"], "_instances", {})
    monkeypatch.setattr(predict_module, "CHECK_RETRY_S", 0.0)
    served = predict_module.Predictor(predictor.loaded)
    unchecked = model_key(served)
    shipped_detector.save(folder)  # put right: the next key names the check
    checked = model_key(served)
    _refit(shipped_detector, 0.5).save(folder)  # refitted: a key of its own again
    assert len({unchecked, checked, model_key(served)}) == 3 and model_key(served) == model_key(served)
