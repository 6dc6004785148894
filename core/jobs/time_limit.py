"""A training job's time limit (``settings().job_time_limit_minutes``, ``CXR_JOB_TIME_LIMIT``).

Two timers run beside the job. At the limit the first one asks the training to stop: the runner's
``should_stop`` turns true, and ``train()`` stops between steps (or between decoded films), its finished
epochs kept, exactly as for Cancel. Should it not have stopped ``grace`` seconds later (a step stuck in native
code never asks), the second one ends the whole process group: the runner, in a session of its own, and
anything it started; an epoch's validation and saved state get Cancel's longer grace first (core.jobs.runner).
The job's lock goes with it (core.jobs.lock).
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable

GRACE_SECONDS = 120.0  # a slow step on the CPU may take a minute; longer than this is stuck


class TimeLimit:
    """``with TimeLimit(minutes, on_reached, on_overrun):`` runs ``on_reached`` at the limit and ``on_overrun``
    ``grace`` seconds later (default GRACE_SECONDS), each in a timer thread, unless the block has ended by then.
    ``on_overrun`` may answer a number of seconds: it is asked again that much later (work that must not be cut)."""

    def __init__(self, minutes: float, on_reached: Callable[[], None], on_overrun: Callable[[], float | None],
                 grace: float | None = None):
        self.seconds = minutes * 60.0
        self.grace = GRACE_SECONDS if grace is None else grace
        self.on_reached = on_reached
        self.on_overrun = on_overrun
        self._timers: list[threading.Timer] = []

    def __enter__(self) -> "TimeLimit":
        self._start(self.seconds, self.on_reached)
        self._start(self.seconds + self.grace, self._overrun)
        return self

    def _overrun(self) -> None:
        later = self.on_overrun()
        if later is not None:
            self._start(later, self._overrun)

    def __exit__(self, *exc) -> None:
        for timer in self._timers:
            timer.cancel()

    def _start(self, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True  # never keeps a finished job's process alive
        timer.start()
        self._timers.append(timer)


def describe(minutes: float) -> str:
    """``12 h``, ``1 h 30 min``, ``45 min``, ``3 s``: a limit as a person reads it."""
    seconds = round(minutes * 60)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(round(minutes), 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h" + (f" {rest} min" if rest else "")


def stop_process_group() -> None:
    """End this process and, when it leads its own process group (a runner started by core.jobs), the
    group. Never returns."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)
