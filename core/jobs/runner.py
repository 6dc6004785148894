"""The process behind one background training job: ``python -m core.jobs.runner JOB_DIR --lock-fd N``.

The starter hands it descriptor N, the open job lock (core.jobs.lock); the runner keeps it until its final
status is written, and if it dies first the kernel releases it. It reads ``config.json``, marks the job
running (with its pid, for Cancel), calls :func:`core.training.train.train` with every progress event
appended to ``events.jsonl``, and always leaves a final state in ``status.json``. SIGTERM (Cancel) sets a
flag that ``should_stop`` reads between training steps, so ``train()`` raises ``TrainingCancelled`` and
registers nothing (the run's state after its last finished epoch stays, for Resume: core.jobs.resume); while
films are still being decoded nothing has been written either, so the process simply records the
cancellation and exits at once. The job's time limit (core.jobs.time_limit) stops it the same
way, and marks it failed "after its time limit". Every time written is UTC (core.clock).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from core import clock
from core.config import settings as current_settings
from core.errors import DeviceOutOfMemory, TriageError
from core.jobs import lock
from core.jobs.records import (CANCELLED, FAILED, RUNNING, SUCCEEDED, JobSummary, read_settings, run_left_by,
                               write_status)
from core.jobs.time_limit import GRACE_SECONDS, TimeLimit, describe, stop_process_group
from core.training.events import DoneEvent, EpochEvent, LoadingEvent, NoteEvent, ProgressEvent, StepEvent
from core.training.saved_runs import kept_note

CANCELLED_EARLY = "Training was cancelled before it started; nothing was saved."
CANCELLED_BEFORE_RESUMING = "Training was cancelled before it continued the interrupted run."
# A stop signal with no Cancel behind it (the app's service stopped, the machine shutting down): the job did not end
# because anyone cancelled it, so it is not shown as Cancelled and no one is sought in the audit log (a review).
BY_THE_SYSTEM = "was stopped by the system (a stop signal, not Cancel)"
# A run still training this long after Cancel is ended by a watcher thread: a step stuck in native code heard
# nothing until the time limit, 12 hours by default, holding the one job slot, and the signal handler itself only
# runs once the native call returns, so it cannot be what ends it (two reviews).
FORCE_CANCEL_AFTER_S = 30.0
STEP_LINE_SECONDS = 0.25  # steps faster than this share one line of events.jsonl (the page polls every 2 s)
EPOCH_END_GRACE_S = 300.0  # after an epoch's last step: its validation and saved state, whose loss Cancel would cost
CANCEL_POLL_S = 1.0


class JobRunner:
    def __init__(self, folder: Path, lock_fd: int | None = None):
        self.folder = folder
        self.lock_fd = lock_fd
        self.settings = read_settings(folder)
        self.cancel_requested = False
        self.stopped_by_system = False  # a stop signal that no Cancel asked for
        self.cancel_since: float | None = None  # time.monotonic() when the watcher first saw Cancel
        self.out_of_time = False
        self.training_started = False
        self.epoch_ending = False  # an epoch's last step is taken, its EpochEvent not yet: validating, saving
        self.overrun_extended = False  # the time limit's overrun waited once for an epoch's end
        self._next_step_line = 0.0  # time.monotonic() from which the next step's line is written
        self.training_done = False  # the last step is taken: validating and registering, which are bounded
        self.finishing = False
        self._final = threading.Lock()  # the time-limit thread and the main thread never both finish
        self._finished = False
        self.time_limit = self.settings.time_limit_minutes or current_settings().job_time_limit_minutes

    def _kept(self) -> str:
        """That the run's state is kept for Resume ("" when none), a resumed run's too before it is taken over."""
        return kept_note(run_left_by(self.folder))

    def should_stop(self) -> bool:
        """Cancel, a stop signal, or the time limit; once the last step is taken the time limit no longer stops a
        run (only shipping is left), while Cancel still does until the last epoch is saved (core.training.loop)."""
        return (self.cancel_requested or (self.out_of_time and not self.training_done)
                or (self.folder / "cancel").exists())

    def time_limit_message(self) -> str:
        kept = self._kept()  # the epochs it finished are kept: Resume continues the run
        return (f"Training was stopped after its time limit of {describe(self.time_limit)}; "
                f"{'no model was registered' if kept else 'nothing was saved'}.{kept} "
                "An administrator can change the limit (CXR_JOB_TIME_LIMIT).")

    def on_time_limit(self) -> None:
        """The first timer (a thread): ask the training to stop, as Cancel does."""
        self.out_of_time = True
        if not (self.finishing or self.training_done):
            self.log(f"The time limit of {describe(self.time_limit)} is reached: stopping.")

    def on_overrun(self) -> float | None:
        """The second timer: the training did not stop by itself; end the process group. An epoch's validation and
        saved state get Cancel's grace first (the seconds to wait more): ended midway, the epoch about to be kept was
        lost, sooner than Cancel would have (a review)."""
        if self.finishing or self.training_done:
            return None
        if self.epoch_ending and not self.overrun_extended:
            self.overrun_extended = True
            return max(0.0, EPOCH_END_GRACE_S - GRACE_SECONDS)
        self.finish(FAILED, self.time_limit_message())
        stop_process_group()

    def on_signal(self, signum: int, frame) -> None:
        self.cancel_requested = True
        if not (self.folder / "cancel").exists():  # Cancel writes its marker before it signals (core.jobs.jobs)
            self.stopped_by_system = True
        if self.finishing:
            return
        self.log(f"Stopped by the system ({signal.Signals(signum).name}), not by Cancel." if self.stopped_by_system
                 else "Cancel requested.")
        if not self.training_started:
            # Still starting or decoding films: nothing is written yet, so stopping here is clean.
            self.finish(*self._as_stopped(self._early()))  # a resumed run's state stays
            os._exit(0)

    def _early(self) -> str:
        """Cancelled before training began, with what is kept: a resumed run's saved state stays for Resume."""
        return (CANCELLED_BEFORE_RESUMING if self.settings.resume_of else CANCELLED_EARLY) + self._kept()

    def _as_stopped(self, message: str) -> tuple[str, str]:
        """(state, message) of a run that stopped before its end: Cancelled, or Failed in the system's words when a
        stop signal came without Cancel (Resume is offered for either when a state is kept)."""
        if self.stopped_by_system:
            return FAILED, message.replace("was cancelled", BY_THE_SYSTEM, 1)
        return CANCELLED, message

    def watch_cancel(self, stop: threading.Event) -> None:
        """A thread: once Cancel is asked (the marker, or the signal's flag) and training has not stopped
        FORCE_CANCEL_AFTER_S later, end the process group. Not once only registration is left (it is bounded),
        and between steps nothing is half written: a run's state is saved whole (core.training.resume)."""
        while not stop.wait(CANCEL_POLL_S):
            if self.cancel_since is None and (self.cancel_requested or (self.folder / "cancel").exists()):
                self.cancel_since = time.monotonic()
            if self.cancel_since is not None and self.force_cancel_due(time.monotonic()):
                waited = EPOCH_END_GRACE_S if self.epoch_ending else FORCE_CANCEL_AFTER_S
                self.finish(*self._as_stopped(
                    f"Training did not stop between steps within {waited:.0f} s of "
                    f"{'the stop signal' if self.stopped_by_system else 'Cancel'}, so it was ended; nothing was "
                    f"registered.{self._kept()}" if self.training_started else self._early()))
                stop_process_group()

    def force_cancel_due(self, now: float) -> bool:
        """Before the first step too: a first step stuck in native code never let the signal handler run, and the
        watcher waited for it, holding the one job slot until the time limit (a review). An epoch's validation and
        state save get longer: ended midway, the epoch about to be kept is lost."""
        waited = now - self.cancel_since
        return not (self.training_done or self.finishing) and waited >= (
            EPOCH_END_GRACE_S if self.epoch_ending else FORCE_CANCEL_AFTER_S)

    def log(self, message: str) -> None:
        self._append("log.txt", f"{clock.time_of_day()}  {message}\n")

    def _append(self, name: str, text: str) -> None:
        """Progress is best-effort: a job folder removed by hand or a full disk loses the page's view of the run,
        never the run (its model is registered in the models folder, not here)."""
        try:
            with open(self.folder / name, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:  # nowhere to say so: runner.stderr is in the same folder, on the same disk
            pass

    def emit(self, event: ProgressEvent) -> None:
        if isinstance(event, StepEvent):
            self.training_started = True
            self.training_done = event.progress >= 1.0
            self.epoch_ending = event.step >= event.steps
        elif isinstance(event, EpochEvent):  # a resumed run replays its saved epochs before (or instead of) a step
            self.training_started, self.epoch_ending = True, False
            # after its last epoch (early stopping's too) only shipping is left: no timer may end it midway
            self.training_done = self.training_done or event.epoch >= event.epochs or event.last
        if isinstance(event, StepEvent) and 1 < event.step < event.steps and time.monotonic() < self._next_step_line:
            return  # a review: a line per step grew events.jsonl without bound (3.6 GB for a long run at batch 2)
        if isinstance(event, StepEvent):  # at most a few lines a second, and every epoch's first and last step
            self._next_step_line = time.monotonic() + STEP_LINE_SECONDS
        self._append("events.jsonl", event.model_copy(update={"time": clock.seconds()}).model_dump_json() + "\n")
        self._log_event(event)

    def _log_event(self, event: ProgressEvent) -> None:
        if isinstance(event, (NoteEvent, LoadingEvent)) and event.message:
            self.log(event.message[:1].upper() + event.message[1:] + ".")
        elif isinstance(event, EpochEvent):
            self.log(f"Epoch {event.epoch}/{event.epochs}: training loss {event.train_loss:.4f}, "
                     f"validation loss {event.val_loss:.4f}, validation AUC {event.val_auc:.4f}.")
        elif isinstance(event, DoneEvent):
            self.log(f"Validation AUC of the new model: {event.auc if event.auc is not None else float('nan'):.3f}.")

    def finish(self, state: str, message: str, **fields) -> None:
        """The final status, then the lock: a reader that finds the lock free finds this status too."""
        self.finishing = True
        with self._final:
            if self._finished:
                return
            self._finished = True
            write_status(self.folder, state, message=message, **fields)
            self.log(message)
            if self.lock_fd is not None:
                lock.unlock(self.lock_fd)

    def run(self) -> int:
        stop = threading.Event()
        threading.Thread(target=self.watch_cancel, args=(stop,), daemon=True, name="cancel-watch").start()
        try:
            with TimeLimit(self.time_limit, self.on_time_limit, self.on_overrun):
                return self._run()
        finally:
            stop.set()

    def _run(self) -> int:
        settings, config = self.settings, self.settings.config
        write_status(self.folder, RUNNING, pid=os.getpid(), message="Training.")
        self.log(f"Job {settings.job_id}: {config.arch}, {config.epochs} epoch(s), "
                 f"{config.image_size} px, on {settings.data_dir}.")
        if settings.resume_of:
            self.log(f"Resuming the interrupted run of job {settings.resume_of}.")
        if self.should_stop():
            return self._stopped(self._early())
        from core.training.train import TrainingCancelled, train  # torch loads after the status is written

        try:
            record = train(settings.data_dir, config, name=settings.name, directory=settings.checkpoints,
                           on_progress=self.emit, should_stop=self.should_stop, job_id=settings.job_id,
                           who=settings.started_by or "job", resume=settings.resume_of is not None)
        except TrainingCancelled as exc:
            return self._stopped(str(exc))
        except TriageError as exc:  # shown on the Retrain page: its own words for the command line's --resume
            kept = self._kept() if isinstance(exc, DeviceOutOfMemory) else ""  # its saved epochs, as on Cancel
            self.finish(FAILED, "Training failed: " + str(exc).replace("(without --resume)", "(Start training)")
                        + kept, resume_refused=getattr(exc, "lasting", False))  # not offered again (a review)
            return 1
        except Exception as exc:  # the process boundary: any failure must reach the page as a status
            traceback.print_exc(file=sys.stderr)
            # its type only: an OSError's words name server files, and this status is shown on the page
            self.finish(FAILED, f"Training stopped with an unexpected error ({type(exc).__name__}). "
                                f"Nothing was registered. Details for an operator: runner.stderr in the folder of job "
                                f"{self.settings.job_id}.")
            return 1
        late = "" if not self.cancel_requested else (" (a stop signal came after training had finished)"
                                                    if self.stopped_by_system else
                                                    " (the cancel request came after training had finished)")
        self.finish(SUCCEEDED, f"Registered {record.name} as a new version{late}.", model=record.name,
                    summary=JobSummary.of(record))
        return 0


    def _stopped(self, cancelled: str) -> int:
        """Training stopped as asked: by the time limit (failed), or by Cancel."""
        if self.out_of_time:
            self.finish(FAILED, self.time_limit_message())
            return 1
        kept = "" if "is kept" in cancelled else self._kept()  # cancelled before training
        self.finish(*self._as_stopped(cancelled + kept))
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.jobs.runner",
                                     description="Run one background training job (started by core.jobs).")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--lock-fd", type=int, default=None, help="the open job lock handed on by the starter")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    folder = args.job_dir.resolve()
    if args.lock_fd is not None:
        os.set_inheritable(args.lock_fd, False)  # programs this process starts must not keep the job's lock
    runner = JobRunner(folder, args.lock_fd)
    signal.signal(signal.SIGTERM, runner.on_signal)
    signal.signal(signal.SIGINT, runner.on_signal)
    try:
        os.nice(5)  # the dashboard stays responsive while the job trains
    except OSError:
        pass
    try:
        return runner.run()
    except BaseException:
        if not runner.finishing:  # the status could not be written, say: still try to leave a final state
            try:
                runner.finish(FAILED, "The training process could not run the job; see runner.stderr.")
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise


if __name__ == "__main__":
    sys.exit(main())
