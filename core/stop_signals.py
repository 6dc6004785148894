"""SIGTERM and SIGHUP stop a command as Ctrl+C does.

``timeout``, systemd and ``kill`` send SIGTERM, a closed terminal SIGHUP; by default either ended the process
at once with code 143 or 129 and no word. Raised as KeyboardInterrupt in the main thread, they take the path
Ctrl+C takes: ``finally`` blocks run (run locks released, torchrun's process group left), the command prints
its JSON error (a training's says how ``--resume`` continues) and exits 1. Decoding workers are programs of
their own (exec resets handlers), so they end as before: with their parent's pipe, or by the signal itself.
Under torchrun the agent forwards SIGTERM to every rank, and each answers the same way.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def interrupt_on_stop_signals() -> Callable[[], None]:
    """Make the stop signals raise KeyboardInterrupt; returns what puts the previous handlers back. Only from the
    main thread (Python runs handlers there alone), and only over the default action: a signal someone chose to
    ignore stays ignored (``nohup`` ignores SIGHUP), one with a handler of its own keeps it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    replaced = [signum for signum, handler in previous.items() if handler is signal.SIG_DFL]
    for signum in replaced:
        signal.signal(signum, _interrupt)

    def restore() -> None:
        for signum in replaced:
            signal.signal(signum, previous[signum])

    return restore


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def stops_held():
    """Ctrl+C and the stop signals are held while the block runs: for steps that must all happen (a version's
    files, its audit line, forgetting its run, its promotion). Interrupted between them, a version stayed
    registered with no audit line, or without the default asked for, and the resume the message suggested
    registered it a second time (reviews). Yields the list of signals held; the block is not stopped, and what
    follows it decides (a registration finished is reported, not undone). Only signals that would raise
    KeyboardInterrupt are held; outside the main thread, nothing is."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, *STOP_SIGNALS)}
    held = [signum for signum, handler in previous.items()
            if handler is _interrupt or handler is signal.default_int_handler]
    for signum in held:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        for signum in held:
            signal.signal(signum, previous[signum])


class StoppedAfter(KeyboardInterrupt):
    """A stop held while a change was made whole (its file, its audit line), delivered once it was: ``done`` is what
    was changed, so the command can report it before it says it was interrupted."""

    def __init__(self, done: object = None):
        super().__init__()
        self.done = done


def held_through(change: Callable[[], T]) -> tuple[T, bool]:
    """What ``change`` returned, and whether a stop was held while it was made whole (StoppedAfter, carrying it):
    the caller reports the change, then stops (raises KeyboardInterrupt)."""
    try:
        return change(), False
    except StoppedAfter as stop:
        return stop.done, True
