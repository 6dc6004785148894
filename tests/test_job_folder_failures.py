"""A job's folder that fails under it: removed by hand or on a full disk while the job runs. The training goes
on (its model is registered in the models folder), and a Cancel that cannot be recorded says so in words."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from test_job_crashes import HOLDER, QUICK, _Exited, _queued_job, _runner

from core.errors import JobError
from core.jobs.jobs import LOCK_FILE, QUEUED, RUNNING, cancel_job, read_job, write_status
from core.training.events import EpochEvent, NoteEvent, StepEvent


def test_a_job_folder_removed_mid_run_loses_the_progress_not_the_training(tmp_path):
    from core.jobs.records import JobSettings, write_settings
    from core.jobs.runner import JobRunner

    folder = tmp_path / "jobs" / "20261130-000000-gone"
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=folder.name, data_dir=tmp_path, config=QUICK))
    runner = JobRunner(folder)
    runner.emit(StepEvent(epoch=1, epochs=2, step=1, steps=4, loss=0.7, progress=0.125, eta_seconds=9.0))
    assert len((folder / "events.jsonl").read_text().splitlines()) == 1
    shutil.rmtree(folder)  # by hand, while the runner trains
    runner.emit(StepEvent(epoch=1, epochs=2, step=2, steps=4, loss=0.6, progress=0.25, eta_seconds=8.0))
    runner.emit(EpochEvent(epoch=2, epochs=2, train_loss=0.5, val_loss=0.5, val_auc=0.9, seconds=1.0))
    runner.emit(NoteEvent(message="a note"))
    runner.log("still training")
    assert runner.training_started and runner.training_done  # its state follows the run as before
    assert not folder.exists()  # nothing was recreated in place of what the administrator removed


def test_a_cancel_that_cannot_be_recorded_says_so_and_signals_nothing(tmp_path):
    """The cancel marker cannot be written (here a folder stands where it goes): a JobError in words, without
    the server path; the job goes on, and its runner (a stand-in holding the job lock) gets no signal."""
    jobs = tmp_path / "jobs"
    folder = _queued_job(jobs)
    (folder / "cancel").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(jobs / LOCK_FILE), folder.name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        write_status(folder, QUEUED, pid=holder.pid)  # were it signalled, SIGTERM would end the stand-in
        with pytest.raises(JobError, match="could not be asked to stop [(]Is a directory[)]; it goes on") as refused:
            cancel_job(folder.name, jobs)
        assert str(tmp_path) not in str(refused.value)
        assert holder.poll() is None and read_job(folder).state == QUEUED
    finally:
        holder.kill()
        holder.wait()
    assert os.path.isdir(folder / "cancel")


@pytest.mark.parametrize("damage", ["events folder", "log folder", "events fifo", "zero steps"])
def test_a_damaged_progress_file_shows_nothing_rather_than_taking_the_retrain_page_down(tmp_path, damage):
    """Found by a review: events.jsonl or log.txt as a folder was a traceback on the Retrain page for everyone,
    as a FIFO it hung the page, and a line saying steps 0 divided by zero in its progress."""
    from core.jobs.progress import job_progress

    folder = _queued_job(tmp_path / "jobs")
    good = StepEvent(epoch=1, epochs=2, step=1, steps=4, loss=0.7, progress=0.125, eta_seconds=9.0)
    if damage == "events folder":
        (folder / "events.jsonl").mkdir()
    elif damage == "log folder":
        (folder / "log.txt").mkdir()
    elif damage == "events fifo":
        os.mkfifo(folder / "events.jsonl")
    else:
        (folder / "events.jsonl").write_text(good.model_dump_json() + "\n"
                                             + good.model_dump_json().replace('"steps":4', '"steps":0') + "\n")
    job = read_job(folder)
    events, log = job.events(), job.log_tail()
    assert events == ([good] if damage == "zero steps" else []) and log == []
    assert job_progress(events).phase in {"starting", "training"}


def test_a_run_that_does_not_stop_after_cancel_is_ended_by_the_watcher(tmp_path, monkeypatch, settings_env):
    """Found by two reviews: a step stuck in native code never reached the check between steps, and a signal
    handler only runs once the native call returns, so neither Cancel nor a second one was heard until the time
    limit (12 h by default) while the run held the one job slot. A thread watches for Cancel instead."""
    import core.jobs.runner as runner_module
    from core.jobs.records import read_status
    from core.training.events import StepEvent

    settings_env(CXR_MODELS=str(tmp_path / "models"))
    runner, now = _runner(tmp_path, monkeypatch), [1000.0]
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(runner_module, "stop_process_group", lambda: (_ for _ in ()).throw(_Exited(1)))

    class Ticks:  # each wait of the watcher: ten seconds pass; it stops after ``left`` of them
        def __init__(self, left):
            self.left = left

        def wait(self, seconds):
            now[0] += 10.0
            self.left -= 1
            return self.left < 0

    runner.emit(StepEvent(epoch=1, epochs=2, step=1, steps=9, loss=0.7, progress=0.05, eta_seconds=60))
    runner.watch_cancel(Ticks(5))  # no Cancel asked: nothing happens
    (runner.folder / "cancel").write_text("now")  # Cancel, as cancel_job asks it; the signal is never handled
    runner.watch_cancel(Ticks(3))  # seen, then 20 s: the step may be about to end
    assert runner.cancel_since == 1070.0 and read_status(runner.folder).state == RUNNING
    with pytest.raises(_Exited):
        runner.watch_cancel(Ticks(5))
    status = read_status(runner.folder)
    assert status.state == "cancelled" and status.message.startswith("Training did not stop between steps within 30 s")
    done = _runner(tmp_path / "b", monkeypatch)  # only registration left: bounded, never ended midway
    done.emit(StepEvent(epoch=2, epochs=2, step=9, steps=9, loss=0.5, progress=1.0, eta_seconds=0))
    (done.folder / "cancel").write_text("now")
    done.watch_cancel(Ticks(20))
    assert read_status(done.folder).state == RUNNING


def test_the_watcher_ends_a_run_stuck_before_its_first_step_and_lets_an_epoch_end_be_saved(tmp_path, monkeypatch,
                                                                                           settings_env):
    """Found by a review: the watcher waited for a first step, so a first step stuck in native code held the job
    slot until the time limit; and it ended an epoch's validation and state save 30 s after Cancel, losing the
    epoch about to be kept."""
    import core.jobs.runner as runner_module
    from core.jobs.records import read_status
    from core.training.events import EpochEvent, StepEvent

    settings_env(CXR_MODELS=str(tmp_path / "models"))
    now = [1000.0]
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(runner_module, "stop_process_group", lambda: (_ for _ in ()).throw(_Exited(1)))

    def seconds_after_cancel(runner, seconds: float) -> bool:
        """Cancel seen now; ``seconds`` later, whether the watcher ends the run."""
        runner.cancel_since = now[0]
        return runner.force_cancel_due(now[0] + seconds)

    starting = _runner(tmp_path / "a", monkeypatch)
    assert not seconds_after_cancel(starting, 20) and seconds_after_cancel(starting, 31)
    (starting.folder / "cancel").write_text("now")

    class Passing:  # each wait of the watcher: ``step`` seconds pass, and it goes on
        def __init__(self, step: float):
            self.step = step

        def wait(self, seconds):
            now[0] += self.step
            return False

    with pytest.raises(_Exited):
        starting.watch_cancel(Passing(31.0))
    assert read_status(starting.folder).message.startswith("Training was cancelled before it started")
    validating = _runner(tmp_path / "b", monkeypatch)
    validating.emit(StepEvent(epoch=1, epochs=3, step=9, steps=9, loss=0.7, progress=1 / 3, eta_seconds=60))
    assert not seconds_after_cancel(validating, 120) and seconds_after_cancel(validating, 301)
    validating.emit(EpochEvent(epoch=1, epochs=3, train_loss=0.7, val_loss=0.6, val_auc=0.9, seconds=60.0))
    assert seconds_after_cancel(validating, 31)  # saved: back to the usual wait
    stuck = _runner(tmp_path / "c", monkeypatch)  # ended after the longer wait: its message says which
    stuck.emit(StepEvent(epoch=1, epochs=3, step=9, steps=9, loss=0.7, progress=1 / 3, eta_seconds=60))
    stuck.cancel_since = now[0]
    with pytest.raises(_Exited):
        stuck.watch_cancel(Passing(301.0))
    assert read_status(stuck.folder).message.startswith("Training did not stop between steps within 300 s")


def test_a_long_run_s_progress_is_read_from_its_latest_events(tmp_path, monkeypatch):
    """Found by a review of the day's diff: past the read cap the page read the first events only, so a long
    run's progress froze; it reads the latest ones, from a whole line."""
    import core.jobs.event_log as event_log

    folder = _queued_job(tmp_path / "jobs")
    lines = [StepEvent(epoch=1, epochs=1, step=k, steps=400, loss=0.5, progress=k / 400, eta_seconds=1.0)
             .model_dump_json() for k in range(1, 401)]
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(event_log, "MAX_PROGRESS_BYTES", len(lines[0]) * 50 + 7)  # cuts into a line
    events = read_job(folder).events()
    assert events[-1].step == 400 and 48 <= len(events) <= 50 and all(e.step > 340 for e in events)
