"""Retrain's Start when an interrupted run of the same settings on the same folder is kept: the new run would
replace it after its first epoch, so the page asks first, and only while that is still so."""
from __future__ import annotations

import test_dashboard_retrain
from e2e_support import TRAIN_DIR, retrain_page
from test_dashboard_retrain import _fill, _select

from core.store.records import TrainConfig

places = test_dashboard_retrain.places  # its fixture: quick models, a jobs folder, the Kermany train split


def test_a_start_that_would_replace_an_interrupted_run_of_the_same_settings_asks_first(places, monkeypatch):
    """Found by a review: a new run of the same settings on the same folder replaces the kept run after its first
    epoch, and the page started it with no word while it offered to resume that run."""
    import core.jobs.jobs
    from core.store.records import Fingerprint
    from core.training.saved_runs import SavedRun, runs_dir

    started = []
    monkeypatch.setattr(core.jobs.jobs, "start_job", lambda data_dir, config, **kw: started.append(config))
    config = TrainConfig(arch="mlp", epochs=2, image_size=64, max_films=120).resolved()  # as the form fills it
    films = Fingerprint(n=96, class_counts={"NORMAL": 48, "PNEUMONIA": 48}, sha256="0" * 64)
    runs_dir().mkdir(parents=True)
    (runs_dir() / "0a1b.json").write_text(SavedRun(key="0a1b", data_dir=str(TRAIN_DIR.resolve()), config=config,
                                                   train=films, validation=films, epoch=1).model_dump_json())
    (runs_dir() / "0a1b.pt").write_bytes(b"state")
    at = retrain_page()
    _fill(at, epochs=2)
    question = "interrupted run of these settings (mlp, 2 epochs) on shared-data/kermany-224/train is kept (after"
    assert started == [] and any(question in w.value for w in at.warning)
    _select(at, "Dataset folder").set_value("films")  # another folder chosen: the question was not about it
    at.run()
    assert not any("interrupted run" in w.value for w in at.warning) and "retrain-replacing" not in at.session_state
    _fill(at, folder="kermany-224/train", epochs=2)  # asked again for the folder it is about
    assert started == [] and any(question in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Start anyway, replacing it").click()
    at.run()
    assert not at.exception and [c.resolved() for c in started] == [config]
    assert not any("interrupted run" in w.value for w in at.warning)  # answered: not left above the new job
    _fill(at, epochs=1)  # other settings: nothing to replace, started at once
    assert len(started) == 2 and not any("interrupted run" in w.value for w in at.warning)
    _fill(at, epochs=2)  # asked again; then the run goes (resumed and shipped): so does the question
    assert any("interrupted run" in w.value for w in at.warning)
    (runs_dir() / "0a1b.pt").unlink()
    at.run()
    assert not any("interrupted run" in w.value for w in at.warning) and "retrain-replacing" not in at.session_state
