"""Resumable training (core/training/resume.py): a run saves its state every epoch and continues after an
interruption exactly where it stopped, from the loop, the command line, a job and the Retrain page.

Real films from ../shared/data, tiny models: ``mlp`` has dropout (torch's global RNG) and trains with
augmentation (the run's generator), so a resumed run only equals an uninterrupted one if both are restored.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from e2e_support import retrain_page, wait_for

from core.admin.audit import read_actions
from core.errors import JobError, TrainingCancelled
from core.jobs.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, list_jobs, read_job
from core.jobs.records import JobSettings, run_left_by, write_settings, write_status
from core.jobs.resume import resumable_run, resume_job
from core.models.device import FP32
from core.store.records import EpochRecord, TrainConfig, read_model_record
from core.training.distributed import Hardware
from core.training.events import EpochEvent, NoteEvent, StepEvent
from core.errors import ResumeRefused
from core.training.resume import IF_SAVED, open_run, run_identity
from core.training.saved_runs import kept_note, prune_saved_runs, runs_dir, saved_run_of_job, saved_runs
from core.training.train import split_films, train

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

# Dropout + augmentation, deterministic on the CPU in fp32: resumed and uninterrupted runs must be equal.
EXACT = TrainConfig(arch="mlp", epochs=3, image_size=64, max_films=200, seed=3, device="cpu", precision="fp32")
TINY = TrainConfig(arch="logistic", epochs=2, image_size=32, max_films=60, augment=False, device="cpu",
                   precision="fp32")
FAR_JOB = "20260101-000000-abcd"  # older than any job started today: the new job is listed first


@pytest.fixture
def site(tmp_path, settings_env) -> Path:
    """An empty site models folder of this test's own: the runs folder is ``tmp_path/runs`` beside it."""
    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_JOBS=str(tmp_path / "jobs"))
    assert runs_dir() == tmp_path / "runs"
    return tmp_path / "models"


def _interrupt(data_dir: Path, config: TrainConfig, directory: Path, job_id: str | None = None,
               events: list | None = None, watch=None) -> str:
    """Train until the first epoch has finished, then cancel (as the job's Cancel does); the message."""
    events = [] if events is None else events

    def on_progress(event) -> None:
        events.append(event)
        if watch:
            watch(event)

    with pytest.raises(TrainingCancelled) as cancelled:
        train(data_dir, config, directory=directory, on_progress=on_progress, job_id=job_id,
              should_stop=lambda: any(isinstance(e, EpochEvent) for e in events))
    return str(cancelled.value)


def _weights(directory: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(directory / f"{name}.pt", map_location="cpu", weights_only=True)["model"]


def _curves(history: list[EpochRecord]) -> list[tuple]:
    return [(h.epoch, h.train_loss, h.val_loss, h.val_auc) for h in history]


# --- the loop: resumed equals uninterrupted ------------------------------------------------------------


@pytest.mark.slow
def test_a_cancelled_run_resumes_from_its_last_epoch_to_the_same_weights(kermany_train, site, tmp_path):
    whole = train(kermany_train, EXACT, directory=tmp_path / "whole")
    assert not saved_runs()  # shipped: nothing left to resume

    _, train_set, val_set, _ = split_films(kermany_train, EXACT.resolved())
    state = runs_dir() / f"{run_identity(EXACT.resolved(), kermany_train, train_set, val_set).key}.pt"
    events: list = []
    saved_when_told = [state.is_file()]  # none before the run
    message = _interrupt(kermany_train, EXACT, tmp_path / "cut", events=events,
                         watch=lambda e: saved_when_told.append(state.is_file()) if isinstance(e, EpochEvent) else 0)
    assert saved_when_told == [False, True]  # whoever hears "epoch 1 finished" can resume from it
    assert message == ("Training was cancelled; no model was registered. Its state after epoch 1 of 3 is kept, so "
                       "it can be resumed (Resume on the Retrain page, or the same train command with --resume).")
    assert not (tmp_path / "cut").exists() or not list((tmp_path / "cut").glob("*.pt"))  # nothing registered
    (run,) = saved_runs()
    assert (run.epoch, run.finished, run.job_id, run.config) == (1, False, None, EXACT.resolved())
    (epoch_1,) = [e for e in events if isinstance(e, EpochEvent)]
    assert state == runs_dir() / f"{run.key}.pt"
    assert stat.S_IMODE(runs_dir().stat().st_mode) == 0o700  # derived from patient films: the owner only
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 == stat.S_IMODE(state.with_suffix(".json").stat().st_mode)

    resumed_events: list = []
    resumed = train(kermany_train, EXACT, directory=tmp_path / "cut", resume=True, on_progress=resumed_events.append)
    assert [h.epoch for h in resumed.training.history] == [1, 2, 3]
    assert _curves(resumed.training.history) == _curves(whole.training.history)  # every loss and AUC, exactly
    assert resumed.training.history[0].seconds == epoch_1.seconds  # the interrupted run's clock, carried on
    ends = [h.seconds for h in resumed.training.history]
    for h, took in zip(resumed.training.history, np.diff([0.0, *ends])):  # where each epoch's time went, kept too
        # recorded to 0.01 s: a tiny run's validation can round to 0.0
        assert 0 < h.steps_seconds and 0 <= h.validation_seconds
        assert h.steps_seconds + h.validation_seconds <= took + 0.1
    assert "resumed after epoch 1 of 3 from its saved state" in resumed.training.notes
    assert resumed.report.auc == whole.report.auc and resumed.operating_point == whole.operating_point
    mine, theirs = _weights(tmp_path / "cut", resumed.name), _weights(tmp_path / "whole", whole.name)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)  # bit for bit
    notes = [e.message for e in resumed_events if isinstance(e, NoteEvent)]
    assert "resuming after epoch 1 of 3 from the run's saved state" in notes
    assert [e.epoch for e in resumed_events if isinstance(e, EpochEvent)] == [1, 2, 3]  # epoch 1 replayed
    assert not state.exists() and not state.with_suffix(".json").exists() and saved_runs() == []  # shipped


# --- what is refused --------------------------------------------------------------------------------------


def _small_folder(kermany_train: Path, destination: Path, per_class: int = 30) -> Path:
    for cls in ("NORMAL", "PNEUMONIA"):
        (destination / cls).mkdir(parents=True)
        for path in sorted((kermany_train / cls).iterdir())[:per_class]:
            shutil.copyfile(path, destination / cls / path.name)
    return destination


@pytest.mark.slow
def test_resuming_with_other_settings_or_other_films_is_refused_and_says_what_differs(kermany_train, site,
                                                                                     tmp_path):
    folder = _small_folder(kermany_train, tmp_path / "films")
    config = TINY.model_copy(update={"max_films": None})
    _interrupt(folder, config, site)
    with pytest.raises(ResumeRefused, match=r"no interrupted run of these settings on these films.*"
                                            r"\(after epoch 1 of 2\) had epochs 2 \(here 3\); seed 0 \(here 1\): "
                                            r"resume it with the same settings"):
        train(folder, config.model_copy(update={"epochs": 3, "seed": 1}), directory=site, resume=True)
    replaced = sorted((folder / "NORMAL").iterdir())[0]
    original = replaced.read_bytes()
    replaced.write_bytes(original[::-1])  # another film of the same name and size: names and sizes alike
    with pytest.raises(ResumeRefused, match=r"had other film contents \(a film was replaced since"):
        train(folder, config, directory=site, resume=True)
    replaced.write_bytes(original)
    moved = sorted((folder / "PNEUMONIA").iterdir())[-1]
    moved.unlink()  # the films changed since the run was interrupted
    with pytest.raises(ResumeRefused, match=r"had other films \(the folder's films have changed since\)"):
        train(folder, config, directory=site, resume=True)
    assert len(saved_runs()) == 1 and not site.exists()  # refused before training: the saved run stays


def test_resuming_with_no_saved_run_is_refused(kermany_train, site):
    with pytest.raises(ResumeRefused, match=r"^There is no interrupted run of these settings on these films to "
                                            r"resume; start a new run instead \(without --resume\)\.$"):
        train(kermany_train, TINY, directory=site, resume=True)
    assert not site.exists()


@pytest.mark.parametrize("damage, words, set_aside", [
    ("truncated", "cannot be read", "cannot be read: "),
    ("not a state", "cannot be read", "cannot be read: "),  # anything but tensors and plain data: weights_only
    ("another run", "written for another run", "written for another run or by another version"),
])
def test_a_damaged_or_foreign_state_is_refused(kermany_train, site, damage, words, set_aside):
    _, train_set, val_set, _ = split_films(kermany_train, TINY.resolved())
    identity = run_identity(TINY.resolved(), kermany_train, train_set, val_set)
    path = runs_dir() / f"{identity.key}.pt"
    path.parent.mkdir(parents=True)
    if damage == "truncated":
        torch.save({"format": 1, "key": identity.key, "model": {"w": torch.ones(100)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not a state":
        torch.save({"format": 1, "key": identity.key, "when": datetime(2026, 1, 1)}, path)
    else:
        torch.save({"format": 1, "key": "0" * 32, "epoch": 1}, path)
    with pytest.raises(ResumeRefused, match=words):
        open_run(identity, Hardware(torch.device("cpu"), FP32), resume=True)
    # Run again by a script (--resume-if-saved): a fresh run, its notes saying why in a few words, not the advice.
    (note,) = open_run(identity, Hardware(torch.device("cpu"), FP32), resume=IF_SAVED).notes
    assert note.startswith(f"started afresh, the saved state of these settings set aside ({set_aside}")
    assert note.endswith(")") and "--resume" not in note and "start a new run" not in note


def test_old_states_and_a_killed_writer_s_leftovers_are_pruned(tmp_path):
    now = time.time()
    files = {name: tmp_path / name for name in ("old.pt", "old.json", "new.pt", "new.json", ".new.pt.1.tmp",
                                                ".old.pt.2.tmp", "notes.txt", "taken.pt", "taken.json")}
    for path in files.values():
        path.write_bytes(b"x")
    for name in ("old.pt", "old.json", ".old.pt.2.tmp", "notes.txt", "taken.pt"):  # taken.json: taken over now
        os.utime(files[name], (now - 31 * 86400, now - 31 * 86400))
    os.utime(files[".new.pt.1.tmp"], (now - 3600, now - 3600))  # a writer may still be at it
    assert prune_saved_runs(tmp_path, max_age_days=30, now=now) == [".old.pt.2.tmp", "old.json", "old.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(files) - {"old.pt", "old.json", ".old.pt.2.tmp"})
    assert prune_saved_runs(tmp_path, max_age_days=0, now=now + 365 * 86400) == [".new.pt.1.tmp"]  # 0 keeps


def test_a_link_in_the_runs_folder_is_pruned_by_its_own_age_never_its_target_s(tmp_path):
    now = time.time()
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"not ours")
    os.utime(target, (now - 400 * 86400, now - 400 * 86400))  # an old file (e.g. /etc/passwd)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "fresh.pt").symlink_to(target)  # placed just now: resuming it refuses it as a link
    (runs / "stale.pt").symlink_to(target)
    os.utime(runs / "stale.pt", (now - 31 * 86400, now - 31 * 86400), follow_symlinks=False)
    assert prune_saved_runs(runs, max_age_days=30, now=now) == ["stale.pt"]
    assert [p.name for p in runs.iterdir()] == ["fresh.pt"] and target.read_bytes() == b"not ours"

# --- the command line -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_cli_resumes_an_interrupted_run_and_says_when_there_is_nothing_to_resume(run_cli, kermany_train, site,
                                                                                    tmp_path):
    args = ["train", kermany_train, "--arch", "logistic", "--epochs", "2", "--image-size", "32", "--max-films", "60",
            "--no-augment", "--device", "cpu", "--precision", "fp32", "--resume"]
    nothing = run_cli(*args, checkpoints=site)
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    (error,) = nothing.json_lines()
    assert error["error"].startswith("There is no interrupted run of these settings on these films to resume")
    assert not site.exists()

    _interrupt(kermany_train, TINY, site)  # the same settings as the arguments above
    done = run_cli(*args, checkpoints=site)
    assert done.returncode == 0, done.stdout + done.stderr
    (answer,) = done.stdout.splitlines()  # the JSON answer alone: progress goes to stderr
    line = json.loads(answer)
    assert "epoch 2: train loss" in done.stderr
    record = read_model_record(site / f"{line['name']}.json")
    assert [h.epoch for h in record.training.history] == [1, 2]
    assert "resumed after epoch 1 of 2 from its saved state" in record.training.notes
    assert saved_runs() == [] and not list(runs_dir().glob("*.pt"))
    trained = next(a for a in read_actions(limit=20) if a.action == "train")  # the new version is on record
    assert (trained.model, trained.details["resumed"], trained.details["epochs"]) == (line["name"], True, 2)
    assert trained.details["dataset"] == "shared-data/kermany-224/train"
    assert str(kermany_train) not in json.dumps(trained.details)


def test_a_resumed_run_records_the_training_time_of_every_process_that_trained_it(kermany_train, site):
    """It recorded its own process's time alone, less than its own last epoch's time since the run started."""
    _interrupt(kermany_train, TINY, site, watch=lambda event: time.sleep(4) if isinstance(event, StepEvent) else None)
    record = train(kermany_train, TINY, directory=site, resume=True)
    assert record.training.history[0].seconds >= 4 and record.training.seconds >= record.training.history[-1].seconds


def test_a_version_whose_audit_entry_cannot_be_written_is_not_kept_and_its_run_resumes(kermany_train, site,
                                                                                        monkeypatch):
    """The audit entry came after the run's state was forgotten: a log that failed then (a full disk) left a
    version registered with no entry, a run reported as failed, and nothing to resume (found by a review)."""
    import core.training.train as training
    from core.admin import audit
    from core.errors import AuditLogUnavailable

    def full(*args, **kwargs):
        raise AuditLogUnavailable("The audit log cannot be written (No space left on device); ask an administrator "
                                  "to check the audit log setting (CXR_AUDIT_LOG).")

    monkeypatch.setattr(training, "record_action", full)
    with pytest.raises(AuditLogUnavailable) as refused:
        train(kermany_train, TINY, directory=site)
    assert "nothing was registered" in str(refused.value) and "resuming the run registers it" in str(refused.value)
    assert list(site.glob("pneumonia-logistic-v*")) == [] and len(saved_runs()) == 1
    monkeypatch.setattr(training, "record_action", audit.record_action)
    stored = train(kermany_train, TINY, directory=site, resume=True)
    assert stored.name == "pneumonia-logistic-v1" and saved_runs() == []
    assert ("train", "pneumonia-logistic-v1") in [(a.action, a.model) for a in read_actions()]

# --- jobs and the Retrain page ------------------------------------------------------------------------------


def _interrupted_job(jobs: Path, data_dir: Path, config: TrainConfig, models: Path) -> Path:
    """A job that trained one epoch of ``config`` (for real, in this process) and whose runner then died."""
    folder = jobs / FAR_JOB
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=FAR_JOB, data_dir=data_dir.resolve(), config=config.resolved(),
                                       checkpoints=models.resolve(), started_by="admin:alice"))
    _interrupt(data_dir, config, models, job_id=FAR_JOB)
    write_status(folder, RUNNING, pid=1, message="Training.")  # no runner holds the lock: it died
    return folder


@pytest.mark.slow
def test_a_job_that_died_says_its_run_is_kept_and_only_an_unfinished_one_can_resume(kermany_train, site, tmp_path,
                                                                                     settings_env):
    jobs = tmp_path / "jobs"
    with pytest.raises(JobError, match="There is no job"):
        resume_job("../elsewhere", jobs)
    folder = _interrupted_job(jobs, kermany_train, TINY, site)
    died = read_job(folder)  # the first reader settles a job whose runner is gone
    assert died.state == FAILED and "stopped unexpectedly" in died.message and "Nothing was registered" in died.message
    assert died.message.endswith("Its state after epoch 1 of 2 is kept: an administrator can resume it (Resume).")
    assert resumable_run(died).epoch == 1
    # a resume that ended before it took the run over (cancelled while decoding): the run is still offered,
    # through it, and its message says the state is kept
    early = jobs / "20260101-000001-beef"
    early.mkdir()
    write_settings(early, died.settings.model_copy(update={"job_id": early.name, "resume_of": FAR_JOB}))
    write_status(early, CANCELLED, message="Training was cancelled before it started; nothing was saved.")
    assert resumable_run(read_job(early)).epoch == 1
    assert kept_note(run_left_by(early)).endswith("Its state after epoch 1 of 2 is kept: an administrator can "
                                                    "resume it (Resume).")
    assert saved_run_of_job(early.name) is None  # without following the resume, nothing of its own
    (tmp_path / "other-root").mkdir()  # found by a review: resumed on a folder whose data root was removed
    settings_env(CXR_DATA=str(tmp_path / "other-root"))
    with pytest.raises(JobError, match=f"^Job {FAR_JOB} trained on a folder that is gone or no longer inside a data root"):
        resume_job(FAR_JOB, jobs)
    assert [job.job_id for job in list_jobs(jobs)] == [early.name, FAR_JOB]  # nothing started
    write_status(folder, SUCCEEDED, message="Registered.")  # a finished job has nothing to resume
    with pytest.raises(JobError, match=f"Job {FAR_JOB} has nothing to resume \\(succeeded\\)"):
        resume_job(FAR_JOB, jobs)


def _resume_buttons(at: AppTest) -> list:
    return [b for b in at.button if b.label == "Resume training"]


@pytest.mark.slow
def test_the_retrain_page_resumes_an_interrupted_job_for_an_admin_only(kermany_train, site, tmp_path, settings_env,
                                                                      monkeypatch):
    from core.access.policy import RequestFacts
    from dashboard.components import access

    jobs = tmp_path / "jobs"
    settings_env(CXR_DATA_DIR=str(kermany_train))
    folder = _interrupted_job(jobs, kermany_train, TINY, site)
    # streamlit loads lazily here, so conftest's local_browser_session did not set the session: set it
    monkeypatch.setattr(access, "request_facts",
                        lambda: RequestFacts.of("192.0.2.2", {"Host": "triage.hospital.example"}))
    assert _resume_buttons(retrain_page()) == []  # a clinician sees the outcome, not the control
    monkeypatch.setattr(access, "request_facts", lambda: RequestFacts.of("127.0.0.1", {"Host": "localhost"}))

    at = retrain_page()
    (button,) = _resume_buttons(at)
    assert "Failed" in "\n".join(m.value for m in at.markdown)
    button.click()
    at.run()
    assert not at.exception and not at.error
    new = list_jobs(jobs)[0]
    assert new.job_id != FAR_JOB and new.settings.resume_of == FAR_JOB and new.config == TINY.resolved()
    done = wait_for(lambda: (lambda job: None if job.is_active else job)(read_job(new.folder)), timeout=240,
                    what="the resumed job to end")
    assert done.state == SUCCEEDED, done.message
    record = read_model_record(site / f"{done.model}.json")
    assert [h.epoch for h in record.training.history] == [1, 2] and record.training.job_id == new.job_id
    assert any("Resuming the interrupted run of job " + FAR_JOB in line for line in done.log_tail())
    resumed = next(a for a in read_actions(limit=20) if a.action == "job.resume")
    assert (resumed.who, resumed.details["job"], resumed.details["resumes"]) == ("local", new.job_id, FAR_JOB)
    assert saved_runs() == [] and resumable_run(read_job(folder)) is None
    assert _resume_buttons(retrain_page()) == []  # shipped: nothing left to resume


def test_an_interrupted_run_keeps_its_resume_after_a_later_job_has_ended(kermany_train, site, tmp_path, settings_env,
                                                                         monkeypatch):
    """The panel shows the newest job; an earlier job's unfinished run is listed below it with its own Resume
    (once per run), so starting other jobs does not strand it: not ten of them either (the panel read ten jobs)."""
    from core.access.policy import RequestFacts
    from dashboard.components import access

    monkeypatch.setattr(access, "request_facts", lambda: RequestFacts.of("127.0.0.1", {"Host": "localhost"}))
    jobs = tmp_path / "jobs"
    settings_env(CXR_DATA_DIR=str(kermany_train))
    folder = _interrupted_job(jobs, kermany_train, TINY, site)
    read_job(folder)  # settled: failed, its run kept
    for day in range(2, 13):
        later = jobs / f"202601{day:02d}-000000-cafe"
        later.mkdir()
        write_settings(later, JobSettings(job_id=later.name, data_dir=kermany_train.resolve(),
                                          config=TINY.model_copy(update={"epochs": 1}).resolved(),
                                          checkpoints=site.resolve(), started_by="admin:alice"))
        write_status(later, SUCCEEDED, message="Registered pneumonia-logistic-v1 as a new version.")
    at = retrain_page()
    assert not at.exception and not at.error
    (button,) = _resume_buttons(at)
    assert button.key == f"resume-{FAR_JOB}"
    (line,) = [m.value for m in at.markdown if m.value.startswith("**Interrupted run**")]
    assert f"job {FAR_JOB}: logistic, 2 epoch(s), 32 px, on `shared-data/kermany-224/train`; stopped after epoch 1 " \
           "of 2." in line
