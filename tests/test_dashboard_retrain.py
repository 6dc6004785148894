"""The retrain page through AppTest: form validation, a real background job, and making it the default."""
from __future__ import annotations

import json

import pytest
from e2e_support import TRAIN_DIR, quick_checkpoints, require, retrain_page, wait_for
from streamlit.testing.v1 import AppTest

from core.clock import parse
from core.jobs.jobs import FAILED, read_job, start_job, write_status
from core.store.records import TrainConfig
from core.store.registry import list_models, read_registry


@pytest.fixture
def places(tmp_path, settings_env):
    checkpoints = quick_checkpoints(tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(checkpoints), CXR_JOBS=str(tmp_path / "jobs"),
                 CXR_DATA_DIR=str(require(TRAIN_DIR, "the Kermany train split")))
    return checkpoints, tmp_path / "jobs"


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


def _fill(at: AppTest, folder: str | None = None, arch: str = "mlp", epochs: int = 1, size: int | None = 64,
          max_films: int = 120, target: float | None = None) -> None:
    if folder is not None:  # a folder the picker lists inside the data root "shared-data"
        _select(at, "Dataset folder").set_value(folder)
        at.run()
    _select(at, "Architecture").set_value(arch)
    at.number_input[0].set_value(epochs)
    _select(at, "Image size").set_value(size)
    if target is not None:
        _number(at, "Sensitivity target on validation (%)").set_value(target)
    _number(at, "Use at most this many films (0 = all)").set_value(max_films)
    at.get("form_submit_button")[0].click()
    at.run()
    assert not at.exception


def _number(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_the_form_offers_sensible_defaults(places):
    at = retrain_page()
    assert at.title[0].value == "Retrain"
    assert not at.text_input  # no free-text server path: a data root and a folder inside it
    assert _select(at, "Data root").value == "shared-data"
    assert _select(at, "Dataset folder").value == "kermany-224/train"
    assert str(TRAIN_DIR) not in "\n".join(o for s in at.selectbox for o in s.options)
    assert set(_select(at, "Architecture").options) >= {"cnn5: 5-layer CNN (3 conv blocks + 2 fully connected)",
                                            "resnet18: ResNet-18 (torchvision)"}
    assert at.number_input[0].label == "Epochs" and at.number_input[0].value == 5
    assert at.toggle[0].label == "Augmentation" and at.toggle[0].value is True
    assert _number(at, "Sensitivity target on validation (%)").value == pytest.approx(95.0)
    assert at.get("form_submit_button")[0].label == "Start training"
    assert not at.get("form_submit_button")[0].proto.disabled
    assert "No training job yet" in at.info[0].value
    from core.models.device import found_devices

    found = found_devices()  # bf16 said to be faster only where the hardware computes it (a review)
    assert "bf16 (faster where the hardware computes it natively)" in _select(at, "Training precision").options \
        if found.cpu_bf16 or found.gpus else "bf16 (emulated on this CPU: probably slower)" in \
        _select(at, "Training precision").options


def test_without_the_shared_data_folder_the_page_says_what_was_not_found_and_how_to_fix_it(places, settings_env,
                                                                                             tmp_path):
    """Found by a review of the fresh-machine path: the page only said no data roots were configured, never that
    the shared data folder was looked for, nor CXR_DATA; no server path is named."""
    settings_env(CXR_DATA=str(tmp_path / "no-shared-data"), CXR_DATA_ROOTS=str(tmp_path / "no-roots.toml"))
    at = retrain_page()
    assert not at.exception
    (warning,) = [w.value for w in at.warning if "No data folders" in w.value]
    assert "shared data folder beside the code was not found" in warning and "CXR_DATA" in warning
    assert str(tmp_path) not in warning


def test_a_folder_of_images_that_are_not_chest_films_is_pointed_out_before_training(places):
    """Found in a browser audit: shared-data/tb/train holds noise textures that Triage leaves untriaged, and the
    page trained on them without a word. The default folder's real films draw no such warning."""
    at = retrain_page()
    assert not [w for w in at.warning if "do not look like usable chest films" in w.value]
    _select(at, "Dataset folder").set_value("tb/train")
    at.run()
    assert not at.exception
    (said,) = [w.value for w in at.warning if "do not look like usable chest films" in w.value]
    assert said.startswith("12 of 12 films sampled from this source do not look like usable chest films")


def test_the_sample_check_flags_noise_and_passes_real_films_of_every_class():
    from core.films.folders import discover
    from core.training.source_check import check_sample

    noise = check_sample(discover(require(TRAIN_DIR.parent.parent / "tb" / "train", "the tb folder")))
    assert (noise.checked, noise.not_chest, noise.unreadable) == (12, 12, 0)
    films = discover(TRAIN_DIR)
    real = check_sample(films)
    assert (real.checked, real.not_chest, real.unreadable, real.unscreened) == (12, 0, 0, False)


@pytest.mark.parametrize("folder, max_films, words", [
    ("dicom", 120, "sub-folder"),
    (None, 5, "number of films must be at least 20"),
    ("no data roots", 120, "Choose a dataset folder inside a data root"),
])
def test_the_form_refuses_what_cannot_train(places, settings_env, tmp_path, folder, max_films, words):
    _, jobs = places
    chosen = folder != "no data roots"  # a folder to train on was chosen: the form's settings are read
    if folder == "no data roots":
        settings_env(CXR_DATA=str(tmp_path / "nowhere"), CXR_DATA_ROOTS=str(tmp_path / "none.toml"))
        folder = None
    at = retrain_page()
    _fill(at, folder=folder, max_films=max_films, target=90.0)
    assert len(at.error) == 1 and words in at.error[0].value
    # a target below the promotion floor is said before the job, not found after it (a review)
    assert any("90.0% is below the promotion floor (95.0%)" in w.value for w in at.warning) == chosen
    assert at.error[0].value.startswith("Training was not started.")
    assert not jobs.exists() or not any(p.is_dir() for p in jobs.iterdir())


def test_a_job_started_from_the_form_runs_in_the_background_and_can_become_the_default(places):
    checkpoints, jobs = places
    at = retrain_page()
    _fill(at, target=97.5)
    job_folder = next(p for p in jobs.iterdir() if p.is_dir())
    assert json.loads((job_folder / "config.json").read_text())["config"]["target_sensitivity"] == 0.975
    assert "Starting" in _markdown(at) or "Running" in _markdown(at)
    assert any(b.label == "Cancel training" for b in at.button)
    at = retrain_page()  # a second Start is not offered while the first runs (core refuses one anyway:
    assert at.get("form_submit_button")[0].proto.disabled  # test_dashboard_jobs)
    assert len([p for p in jobs.iterdir() if p.is_dir()]) == 1

    wait_for(lambda: not read_job(job_folder).is_active, timeout=180, what="the job to finish")
    status = read_job(job_folder).status  # every time a job writes down is UTC
    assert all(parse(t) is not None and t.endswith("Z") for t in (status.queued_at, status.started_at,
                                                                   status.finished_at, status.updated))
    at = retrain_page()  # a fresh session, as after closing the tab: the job is still there
    assert "Finished" in _markdown(at)
    assert any("threshold for 97.5% sensitivity" in c.value for c in at.caption)
    assert any("Registered pneumonia-mlp-v2 as a new version" in s.value for s in at.success)
    # the log file names the training folder by its server path; the page shows its data-root label instead
    (log,) = [c.value for c in at.code if "Job " in c.value]
    data_dir = str(read_job(job_folder).settings.data_dir)
    assert data_dir in (job_folder / "log.txt").read_text()
    assert data_dir not in log and "on shared-data/" in log
    point = json.loads((checkpoints / "pneumonia-mlp-v2.json").read_text())["operating_point"]
    assert point["target_sensitivity"] == 0.975 and point["validation_sensitivity"] >= 0.975
    make_default = next(b for b in at.button if b.label == "Make pneumonia-mlp-v2 the default")
    assert next(e for e in list_models(checkpoints)[0] if e.is_default).name == "pneumonia-cnn5-v1"
    make_default.click()
    at.run()
    assert not at.exception
    assert next(e for e in list_models(checkpoints)[0] if e.is_default).name == "pneumonia-mlp-v2"
    assert "pneumonia-mlp-v2 is the default model" in _markdown(at)
    registry = read_registry(checkpoints)  # the promotion is on record, in UTC
    assert registry.task_defaults == {"pneumonia": "pneumonia-mlp-v2"}
    last = registry.promotions[-1]
    assert (last.name, last.previous) == ("pneumonia-mlp-v2", "pneumonia-cnn5-v1") and last.at.endswith("Z")
    assert parse(last.at) is not None


def test_a_finished_job_below_the_floor_says_why_and_what_to_train_instead(places, settings_env):
    """The same words as the CLI's refusal: the reasons, then the advice (here: more films)."""
    checkpoints, jobs = places
    settings_env(CXR_PROMOTION_MIN_FILMS="1000")
    job = start_job(TRAIN_DIR, TrainConfig(arch="mlp", epochs=1, image_size=64, max_films=40), directory=checkpoints,
                    root=jobs)
    wait_for(lambda: not read_job(job.folder).is_active, timeout=180, what="the job to finish")
    at = retrain_page()
    (warning,) = [w.value for w in at.warning if "cannot become the default" in w.value]
    assert "a default needs at least 1000 of each class" in warning
    assert warning.endswith(". Train on more films, and try again.")
    assert not any(b.label.startswith("Make ") for b in at.button)

def test_the_cancel_button_stops_a_running_job_and_saves_nothing(places):
    checkpoints, jobs = places
    before = sorted(p.name for p in checkpoints.iterdir())
    long_job = TrainConfig(arch="mlp", epochs=200, image_size=64, max_films=200, patience=100)  # limit: 100
    job = start_job(TRAIN_DIR, long_job, directory=checkpoints, root=jobs)
    wait_for(lambda: any(e.phase == "train" for e in read_job(job.folder).events()), timeout=120,
             what="training steps")
    at = retrain_page()
    assert "Running" in _markdown(at) and at.get("progress")
    assert at.get("form_submit_button")[0].proto.disabled  # no Start while a job runs (a review)
    assert any("A training job is running: Start is offered again" in c.value for c in at.caption)
    assert "Training: epoch" in at.get("progress")[0].proto.text and "left" in at.get("progress")[0].proto.text
    next(b for b in at.button if b.label == "Cancel training").click()
    at.run()
    assert not at.exception
    wait_for(lambda: not read_job(job.folder).is_active, timeout=60, what="the job to stop")
    assert read_job(job.folder).state == "cancelled"
    assert sorted(p.name for p in checkpoints.iterdir()) == before
    at = retrain_page()
    assert "Cancelled" in _markdown(at) and at.info[0].value == read_job(job.folder).message
    assert at.info[0].value.startswith("Training was cancelled; ")  # nothing registered; finished epochs kept


def test_a_failed_job_shows_its_reason_and_the_history_lists_earlier_jobs(places):
    _, jobs = places
    for job_id, message in (("20260101-000000-aaaa", "Training failed: no films."),
                            ("20260102-000000-bbbb", "Training was cancelled; nothing was saved.")):
        folder = jobs / job_id
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({
            "job_id": job_id, "data_dir": "/data", "config": {"arch": "cnn5", "epochs": 3, "image_size": 64,
                                                              "augment": True, "max_films": None}}))
        write_status(folder, FAILED if "failed" in message else "cancelled", message=message)
    at = retrain_page()
    assert "Job 20260102-000000-bbbb" in _markdown(at)
    assert "cancelled" in at.info[0].value
    history = at.dataframe[0].value
    assert list(history["Job"]) == ["20260101-000000-aaaa"] and history["State"][0] == FAILED


def _live_job_page(folder: str) -> None:
    from pathlib import Path

    from dashboard.components.job_view import _live_job

    _live_job(Path(folder).name, folder)


def test_a_watched_job_whose_record_breaks_says_so_without_server_paths(places):
    """The job panel redraws a running job every few seconds; when its status cannot be read (damaged, or the
    folder removed) the panel says which job and what to do, and shows no server folder or parser message."""
    _, jobs = places
    folder = jobs / "20260103-000000-cafe"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": folder.name, "data_dir": "/data",
                                                    "config": {"arch": "mlp", "epochs": 1}}))
    (folder / "status.json").write_text("{not json")
    at = AppTest.from_function(_live_job_page, kwargs={"folder": str(folder)}, default_timeout=60).run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(f"Job {folder.name} cannot be shown: The status.json record of job {folder.name} "
                                  "is missing or damaged")
    assert "start a new job" in error.value
    assert str(jobs) not in error.value and "Expecting" not in error.value


def test_a_failed_job_names_no_server_folder_even_to_an_administrator(places):
    """A failure message that quotes the training folder reaches an administrator with the data root's name in
    place of its server path: on the last job's panel and in the history of earlier jobs."""
    _, jobs = places
    for job_id in ("20260104-000000-beef", "20260105-000000-f00d"):
        folder = jobs / job_id
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"job_id": job_id, "data_dir": str(TRAIN_DIR),
                                                        "config": {"arch": "mlp", "epochs": 1}}))
        write_status(folder, FAILED, message=f"Training failed: no films in {TRAIN_DIR}/NORMAL.")
    at = retrain_page()
    history = next(d.value for d in at.dataframe if "Message" in d.value.columns)
    shown = [e.value for e in at.error] + list(history["Message"])
    assert shown == ["Training failed: no films in shared-data/kermany-224/train/NORMAL."] * 2


def test_a_broken_list_of_data_roots_leaves_the_jobs_listed(places, settings_env, tmp_path):
    from core.jobs.jobs import SUCCEEDED
    from core.jobs.records import JobSettings, write_settings

    checkpoints, jobs = places
    folder = jobs / "20260101-000000-aaaa"
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=folder.name, data_dir=TRAIN_DIR, checkpoints=checkpoints,
                                       config=TrainConfig(arch="mlp", epochs=1, image_size=64)))
    write_status(folder, SUCCEEDED, message="Registered pneumonia-mlp-v2 as a new version.", model="pneumonia-mlp-v2")
    (tmp_path / "roots.toml").write_text("[roots]\n'../x' = 3\n")
    settings_env(CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at = retrain_page()
    assert not at.exception
    assert "a folder (the list of data roots cannot be read)" in _markdown(at) + "\n".join(c.value for c in at.caption)
    assert str(TRAIN_DIR) not in _markdown(at)
    assert any("list of data roots is not a table" in e.value for e in at.error)


def test_calibrate_pressed_after_the_chosen_model_was_removed_changes_nothing(places):
    checkpoints, _ = places
    at = retrain_page()
    _select(at, "Model").set_value("pneumonia-mlp-v1").run()
    before = sorted(p.name for p in checkpoints.iterdir())
    for path in checkpoints.glob("pneumonia-mlp-v1.*"):
        path.unlink()
    next(b for b in at.button if b.label == "Calibrate").click().run()
    assert not at.exception and not at.success
    assert [e.value for e in at.error] == ["The model was not recalibrated: pneumonia-mlp-v1 is no longer registered. "
                                           "Choose a model above and press Calibrate again."]
    assert sorted(p.name for p in checkpoints.iterdir()) == [n for n in before if not n.startswith("pneumonia-mlp-v1.")]
    # A new, empty box (a browser kept showing the removed model in the old one): pressing again still changes
    # nothing until a model is chosen.
    assert _select(at, "Model").value is None
    next(b for b in at.button if b.label == "Calibrate").click().run()
    assert not at.exception and not at.success and not at.warning
    assert [e.value for e in at.error] == ["The model was not recalibrated. Choose the model to recalibrate above."]
    assert sorted(p.name for p in checkpoints.iterdir()) == [n for n in before if not n.startswith("pneumonia-mlp-v1.")]
    _select(at, "Model").set_value("pneumonia-cnn5-v1").run()
    assert not at.exception and not at.error and _select(at, "Model").value == "pneumonia-cnn5-v1"


def test_calibrate_pressed_again_for_the_same_model_and_target_registers_one_version(places):
    """A second press while a calibration ran reran the page with the button pressed: two versions, two audit
    lines, and the first one's confirmation lost."""
    checkpoints, _ = places
    at = retrain_page()
    _select(at, "Model").set_value("pneumonia-mlp-v1").run()
    for _ in range(2):
        next(b for b in at.button if b.label == "Calibrate").click().run()
        assert not at.exception and not at.error
        assert at.success and at.success[0].value.startswith("pneumonia-mlp-v2 is registered")
    assert sorted(p.name for p in checkpoints.glob("pneumonia-mlp-v*.json")) == ["pneumonia-mlp-v1.json",
                                                                                 "pneumonia-mlp-v2.json"]
    assert [i.value for i in at.info if "already recalibrated" in i.value] == [
        "pneumonia-mlp-v1 was already recalibrated for this target and these films in this session: "
        "pneumonia-mlp-v2, below."]

@pytest.mark.parametrize("damage", ["registry", "removed", "no model named"])
def test_a_finished_job_s_model_that_cannot_be_read_is_told_apart_from_one_removed(places, damage):
    """The last job's panel finds its new version in the registry. A damaged registry.json is said as such
    (what to do with it), not as the version having been removed; a version really removed is said so; a job
    record that names no model (edited by hand) is said so too, not drawn as an exception."""
    from core.jobs.jobs import SUCCEEDED, JobSummary

    checkpoints, jobs = places
    folder = jobs / "20260106-000000-d00d"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": folder.name, "data_dir": "/data",
                                                    "config": {"arch": "mlp", "epochs": 1}}))
    name = {"registry": "pneumonia-mlp-v1", "removed": "pneumonia-mlp-v9", "no model named": None}[damage]
    write_status(folder, SUCCEEDED, message="Registered a new version.", model=name,
                 summary=JobSummary(auc=0.9, n=40, seconds=12.0))
    if damage != "removed":
        (checkpoints / "registry.json").write_text("{damaged")
    at = retrain_page()
    assert not at.exception
    said = [w.value for w in at.warning if w.value.startswith((name or "This job", ))]
    if damage == "registry":
        assert said[0].startswith(f"{name} cannot be shown: This models folder's registry.json cannot be read")
        assert "Restore it from a backup" in said[0]
        assert str(checkpoints) not in said[0]
    elif damage == "removed":
        assert said == [f"{name} is no longer in the registry."]
    else:
        assert said == ["This job's record names no model; the models it may have registered are listed on Compare."]


def test_any_registered_version_can_be_made_the_default_from_the_retrain_page(places):
    """Only the newest job's version had a button: a recalibrated one could not be promoted in the app."""
    from core.store.registry import find_model

    at = retrain_page()
    _select(at, "Model").set_value("pneumonia-mlp-v1").run()
    next(b for b in at.button if b.label == "Calibrate").click().run()  # a version no job made
    assert at.success and find_model(None, task="pneumonia").name == "pneumonia-cnn5-v1"
    at.run()  # the box above the calibration lists it from the next run
    _select(at, "Model to make the default").set_value("pneumonia-mlp-v2").run()
    next(b for b in at.button if b.label == "Make pneumonia-mlp-v2 the default").click().run()
    assert not at.exception and not at.error
    assert find_model(None, task="pneumonia").name == "pneumonia-mlp-v2"


def test_a_jobs_lock_that_cannot_be_opened_is_said_in_words_not_a_traceback(places):
    """Found by a review of the day's diff: the form's new check for a running job was not guarded."""
    _, jobs = places
    (jobs / "active.lock").mkdir(parents=True)
    at = retrain_page()
    assert not at.exception
    assert any("The job folder cannot be read" in e.value for e in at.error)


def test_a_finished_job_s_figures_say_their_intervals_and_what_the_validation_films_chose(places):
    """A figures review: the outcome tiles beside "Make ... the default" showed validation figures with their
    intervals on hover only, and nothing said those films chose the threshold (sensitivity met by design)."""
    from core.jobs.jobs import SUCCEEDED, JobSummary

    checkpoints, jobs = places
    folder = jobs / "20260107-000000-f00d"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": folder.name, "data_dir": "/data",
                                                    "config": {"arch": "mlp", "epochs": 1}}))
    write_status(folder, SUCCEEDED, message="Registered a new version.", model="pneumonia-mlp-v1",
                 summary=JobSummary(auc=0.9123, auc_ci=[0.85, 0.95], sensitivity=0.96, sensitivity_ci=[0.9, 0.99],
                                    specificity=0.8, specificity_ci=[0.7, 0.88], n=40, seconds=12.0))
    at = retrain_page()
    assert not at.exception
    (said,) = [c.value for c in at.caption if c.value.startswith("On this run's validation films")]
    assert "AUC 0.912 (0.850–0.950)" in said and "sensitivity 96.0 % (90.0–99.0)" in said
    assert "meets it by design" in said and "a new site" in said
