"""A model's lock, handed over in the order it was asked for: every session gets its turn.

A plain ``threading.Lock`` is usually re-taken by the thread that just released it, so one session working
through a batch kept the model while other sessions waited for the whole batch. Here each request queues
and the lock goes to the oldest: a session asks again for its next film only after its last one, so
sessions that triage at the same time take turns film by film. Predictions go before explanations (Grad-CAM
for films already on a worklist), so every session's worklist comes first; explanations follow in their
own order of asking.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Iterator

PREDICTION, EXPLANATION = 0, 1  # turn kinds, most urgent first


class FairLock:
    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._queues: tuple[deque, ...] = (deque(), deque())
        self._held = False

    def acquire(self, kind: int = PREDICTION) -> None:
        ticket = object()
        with self._condition:
            self._queues[kind].append(ticket)
            try:
                while self._held or self._first() is not ticket:
                    self._condition.wait()
            except BaseException:  # a waiter interrupted in its wait must not keep its place for ever
                self._queues[kind].remove(ticket)
                self._condition.notify_all()
                raise
            self._queues[kind].popleft()
            self._held = True

    def release(self) -> None:
        with self._condition:
            if not self._held:
                raise RuntimeError("release of a FairLock that is not held")
            self._held = False
            self._condition.notify_all()  # the oldest waiter of the most urgent kind goes on

    def _first(self) -> object | None:
        return next((queue[0] for queue in self._queues if queue), None)

    @contextmanager
    def turn(self, kind: int = PREDICTION) -> Iterator[None]:
        """``with lock.turn(EXPLANATION): ...``: wait for this request's turn, hold the lock, hand it on."""
        self.acquire(kind)
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> "FairLock":
        self.acquire(PREDICTION)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def waiting(self) -> int:
        """Requests queued now (not counting the holder)."""
        with self._condition:
            return sum(len(queue) for queue in self._queues)
