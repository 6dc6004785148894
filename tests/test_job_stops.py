"""How a background job that stops before its end is shown (a review, 2026-12-06): a stop signal nobody's Cancel
asked for (the app's service stopped, the machine shutting down) is not a Cancel, and a resumed job cancelled before
it continued does not say "nothing was saved" beside "its state is kept"."""
from __future__ import annotations

import signal

import pytest
from test_job_crashes import _Exited, _runner

from core.jobs.jobs import CANCELLED, FAILED, read_job
from core.jobs.records import read_status
from core.training.saved_runs import cancelled_message


def _log(runner) -> str:
    return (runner.folder / "log.txt").read_text()


def test_a_stop_signal_without_cancel_is_said_to_come_from_the_system_not_from_cancel(tmp_path, monkeypatch,
                                                                                      settings_env):
    settings_env(CXR_MODELS=str(tmp_path / "models"))
    decoding = _runner(tmp_path / "a", monkeypatch)
    with pytest.raises(_Exited):
        decoding.on_signal(signal.SIGTERM, None)  # no cancel marker: nobody pressed Cancel
    status = read_status(decoding.folder)
    assert status.state == FAILED  # not "Cancelled": the audit log holds no job.cancel to find
    assert status.message == ("Training was stopped by the system (a stop signal, not Cancel) before it started; "
                              "nothing was saved.")
    assert "Stopped by the system (SIGTERM), not by Cancel." in _log(decoding) and "Cancel requested" not in _log(
        decoding)

    training = _runner(tmp_path / "b", monkeypatch)
    training.training_started = True
    training.on_signal(signal.SIGTERM, None)  # returns: the loop stops between steps, its state after epoch 2 kept
    assert training.should_stop()
    assert training._stopped(cancelled_message(2, 5)) == 0
    status = read_status(training.folder)
    assert status.state == FAILED and status.message.startswith(
        "Training was stopped by the system (a stop signal, not Cancel); no model was registered. Its state after "
        "epoch 2 of 5 is kept")


def test_cancel_is_still_a_cancel_and_a_resume_cancelled_early_does_not_contradict_itself(tmp_path, monkeypatch,
                                                                                           settings_env):
    settings_env(CXR_MODELS=str(tmp_path / "models"))
    cancelled = _runner(tmp_path / "a", monkeypatch)
    (cancelled.folder / "cancel").touch()  # as Cancel does before it signals
    with pytest.raises(_Exited):
        cancelled.on_signal(signal.SIGTERM, None)
    assert read_status(cancelled.folder).state == CANCELLED and "Cancel requested." in _log(cancelled)

    resumed = _runner(tmp_path / "b", monkeypatch, resume_of="20261129-000000-prev")
    (resumed.folder / "cancel").touch()
    with pytest.raises(_Exited):
        resumed.on_signal(signal.SIGTERM, None)  # while it decodes films, before it took the saved run over
    message = read_job(resumed.folder).status.message
    assert message.startswith("Training was cancelled before it continued the interrupted run.")
    assert "nothing was saved" not in message


def test_a_stop_signal_after_training_is_not_called_a_cancel_request(tmp_path, monkeypatch, settings_env):
    """A review of the fix above: a signal after the last step lets the run register, and its status still said
    "the cancel request came after training had finished"."""
    import core.training.train as training
    from core.jobs.jobs import SUCCEEDED

    settings_env(CXR_MODELS=str(tmp_path / "models"))
    late = _runner(tmp_path / "a", monkeypatch)
    record = type("Record", (), {"name": "pneumonia-mlp-v2"})()

    def trains(*args, **kwargs):
        late.training_started = late.training_done = True
        late.on_signal(signal.SIGTERM, None)  # returns: only registering is left
        return record

    monkeypatch.setattr(training, "train", trains)
    monkeypatch.setattr("core.jobs.runner.JobSummary.of", lambda stored: None)
    assert late._run() == 0
    status = read_status(late.folder)
    assert status.state == SUCCEEDED
    assert status.message == ("Registered pneumonia-mlp-v2 as a new version (a stop signal came after training had "
                              "finished).")


def test_a_jobs_folder_whose_mode_cannot_be_changed_still_takes_jobs(tmp_path, monkeypatch, caplog):
    """A review: on a mount that keeps no modes, chmod fails; the slot must still be claimed (a warning is logged)."""
    import os

    from core.jobs import lock

    root = tmp_path / "jobs"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)

    def refuses(path, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(lock.os, "chmod", refuses)
    fd = lock.claim(root)
    assert fd is not None
    os.close(fd)
    assert "the jobs folder cannot be made private: Operation not permitted" in caplog.text


def test_an_older_install_s_open_jobs_folder_is_narrowed_when_jobs_are_listed(tmp_path):
    """Narrowed at a job's start only, an upgraded install kept its 0755 folder of job logs until the next job."""
    import os

    from core.jobs.jobs import list_jobs

    root = tmp_path / "jobs"
    (root / "20261101-000000-old1").mkdir(parents=True)
    os.chmod(root, 0o755)
    assert list_jobs(root) == [] and oct(root.stat().st_mode & 0o777) == "0o700"  # its one folder holds no job


def test_the_time_limit_lets_an_epochs_validation_and_save_finish_as_cancel_does(tmp_path, monkeypatch, settings_env):
    """A review: the time limit's second timer ended the process 120 s after the limit even while an epoch was
    validating and saving its state, whose loss Cancel avoids by waiting EPOCH_END_GRACE_S; the epoch was lost."""
    from core.jobs import runner as runner_module
    from core.jobs.jobs import RUNNING
    from core.jobs.time_limit import GRACE_SECONDS, TimeLimit
    from core.training.events import StepEvent

    settings_env(CXR_MODELS=str(tmp_path / "models"))
    monkeypatch.setattr(runner_module, "stop_process_group", lambda: (_ for _ in ()).throw(_Exited(1)))
    ending = _runner(tmp_path / "a", monkeypatch)
    ending.emit(StepEvent(epoch=1, epochs=3, step=4, steps=4, loss=0.5, progress=1 / 3, eta_seconds=60.0))
    ending.on_time_limit()
    assert ending.should_stop()
    assert ending.on_overrun() == runner_module.EPOCH_END_GRACE_S - GRACE_SECONDS  # asked again that much later
    assert read_status(ending.folder).state == RUNNING
    with pytest.raises(_Exited):
        ending.on_overrun()  # still not stopped after the whole grace: ended, as Cancel would
    assert read_status(ending.folder).state == FAILED

    shipping = _runner(tmp_path / "c", monkeypatch)  # the last step taken: the limit no longer stops it, Cancel does
    shipping.emit(StepEvent(epoch=3, epochs=3, step=4, steps=4, loss=0.5, progress=1.0, eta_seconds=0.0))
    shipping.on_time_limit()
    assert not shipping.should_stop() and shipping.on_overrun() is None  # a review of the day's diff
    (shipping.folder / "cancel").touch()
    assert shipping.should_stop()
    stepping = _runner(tmp_path / "b", monkeypatch)  # mid-epoch: no extra wait
    stepping.emit(StepEvent(epoch=1, epochs=3, step=2, steps=4, loss=0.5, progress=1 / 6, eta_seconds=60.0))
    with pytest.raises(_Exited):
        stepping.on_overrun()

    asked = []
    with TimeLimit(0.0, lambda: None, lambda: asked.append(len(asked)) or (0.01 if len(asked) < 3 else None),
                   grace=0.0):
        _wait_for(lambda: len(asked) == 3)
    assert asked == [0, 1, 2]


def _wait_for(condition, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_steps_faster_than_a_quarter_second_share_a_line_of_the_job_s_events(tmp_path, monkeypatch, settings_env):
    """A review: every optimiser step appended a line, so a long run at a small batch grew events.jsonl by gigabytes.
    Each epoch's first and last steps are always written (the page's epoch boundaries and its 'validating' phase)."""
    from core.jobs.jobs import read_job
    from core.training.events import StepEvent

    settings_env(CXR_MODELS=str(tmp_path / "models"))
    runner = _runner(tmp_path / "a", monkeypatch)
    for epoch in (1, 2):
        for step in range(1, 10_001):
            runner.emit(StepEvent(epoch=epoch, epochs=2, step=step, steps=10_000, loss=1.0,
                                  progress=((epoch - 1) * 10_000 + step) / 20_000, eta_seconds=1.0))
    steps = [(e.epoch, e.step) for e in read_job(runner.folder).events() if isinstance(e, StepEvent)]
    assert len(steps) < 100  # 20,000 steps in well under a few seconds
    assert {(1, 1), (1, 10_000), (2, 1), (2, 10_000)} <= set(steps)
