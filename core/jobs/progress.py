"""A training job's progress for a page to draw, derived from the typed ``train()`` events in ``events.jsonl``."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from core import clock
from core.training.events import DoneEvent, EpochEvent, LoadingEvent, ProgressEvent, StepEvent


@dataclass(frozen=True)
class StepLoss:
    epoch: float  # fractional: 1.5 is halfway through the second epoch
    loss: float


@dataclass(frozen=True)
class JobProgress:
    """What a page needs to draw a job's progress, derived from its events."""

    phase: str  # starting | loading | training | finishing | done
    fraction: float  # 0..1 over the whole job; decoding films counts for the first tenth
    text: str
    eta_seconds: float | None
    step_losses: list[StepLoss]
    epochs: list[EpochEvent]  # one per finished epoch: epoch, train_loss, val_loss, val_auc, seconds


LOADING_SHARE = 0.1
# The loss curve a page draws every few seconds: a long run's every step (30,000 for 200 epochs of 150 steps) sent
# half a megabyte per redraw to each viewer (a review); consecutive steps are averaged down to this many points.
CURVE_POINTS = 600


def thinned(losses: list[StepLoss], points: int = CURVE_POINTS) -> list[StepLoss]:
    """``losses`` as at most ``points`` points: each the mean epoch and loss of a run of consecutive steps."""
    if len(losses) <= points:
        return losses
    edges = [round(k * len(losses) / points) for k in range(points + 1)]
    return [StepLoss(sum(s.epoch for s in part) / len(part), sum(s.loss for s in part) / len(part))
            for part in (losses[a:b] for a, b in zip(edges, edges[1:]))]


class _Read:
    """What a page's progress takes from a job's events, everything but the clock; grown with the events."""

    def __init__(self, first: ProgressEvent):
        self.first, self.count, self.last = first, 0, first  # the events read so far: their first, count and last
        self.x: list[float] = []  # each step's fractional epoch
        self.y: list[float] = []  # and its loss
        self.epochs: list[EpochEvent] = []
        self.last_train: StepEvent | None = None
        self.last_loading: LoadingEvent | None = None
        self.done = False

    def extends(self, events: list[ProgressEvent]) -> bool:
        return len(events) >= self.count and events[0] is self.first and events[self.count - 1] is self.last

    def add(self, events: list[ProgressEvent]) -> "_Read":
        for e in events[self.count:]:
            if isinstance(e, StepEvent):
                self.x.append(e.epoch - 1 + e.step / e.steps)
                self.y.append(e.loss)
                self.last_train = e
            elif isinstance(e, EpochEvent):
                self.epochs.append(e)
            elif isinstance(e, LoadingEvent) and e.total is not None:
                self.last_loading = e
            self.done = self.done or isinstance(e, DoneEvent)
        self.count, self.last = len(events), events[-1]
        return self


_reads: dict[int, _Read] = {}  # by the id of the events' first object: one per job a page shows, a few kept
_reads_lock = threading.Lock()
_KEPT_READS = 8


def _read(events: list[ProgressEvent]) -> _Read | None:
    """The events summed up as they grow, not all again at every viewer's redraw: a 12-hour run's 170,000 steps
    took 0.4 s of CPU every 2 s per open Retrain page, beside the training it waited on (a review). The same file's
    events keep their objects as it grows (core.jobs.event_log), so a list that extends one read before is
    recognised by its first object and the last one read; only what was added is read."""
    if not events:
        return None
    with _reads_lock:  # one reader at a time: two viewers' redraws would add the same events twice
        known = _reads.get(id(events[0]))
        if known is None or not known.extends(events):
            known = _Read(events[0])
            _reads[id(events[0])] = known
            while len(_reads) > _KEPT_READS:
                del _reads[next(iter(_reads))]
        return known.add(events)


def _curve(read: _Read) -> list[StepLoss]:
    """:func:`thinned` of the steps' losses, by array sums (a long run's every step is a Python object no more)."""
    n = len(read.x)
    if n <= CURVE_POINTS:
        return [StepLoss(x, y) for x, y in zip(read.x, read.y)]
    edges = np.array([round(k * n / CURVE_POINTS) for k in range(CURVE_POINTS + 1)])
    sizes = np.diff(edges)
    x, y = (np.add.reduceat(np.asarray(v, dtype=np.float64), edges[:-1]) / sizes for v in (read.x, read.y))
    return [StepLoss(float(a), float(b)) for a, b in zip(x, y)]


def job_progress(events: list[ProgressEvent], now: float | None = None) -> JobProgress:
    now = clock.seconds() if now is None else now
    read = _read(events)
    if read is None:
        return JobProgress("starting", 0.0, "Starting the training process.", None, [], [])
    step_losses, epochs, last_train, last_loading = _curve(read), list(read.epochs), read.last_train, read.last_loading
    if read.done:
        return JobProgress("done", 1.0, "Finished.", 0.0, step_losses, epochs)
    if (last_train is not None and last_train.progress >= 1.0) or any(e.last for e in epochs):
        # the last epoch is done, or early stopping ended the run (its steps stop short of its epochs; found by a
        # review: the page showed "epoch 3 of 10" and an hour's countdown while the version was being registered)
        # the training share is complete either way: an early stop's bar stayed where its steps ended (a review:
        # 37 % through minutes of finishing)
        return JobProgress("finishing", 1.0, "Choosing the operating point, evaluating on validation "
                           "and registering the new version.", None, step_losses, epochs)
    if last_train is not None:
        since = now - last_train.time if last_train.time is not None else 0.0
        eta = max(0.0, last_train.eta_seconds - since)
        fraction = LOADING_SHARE + (1 - LOADING_SHARE) * last_train.progress
        text = (f"Training: epoch {last_train.epoch} of {last_train.epochs}, "
                f"step {last_train.step} of {last_train.steps}")
        return JobProgress("training", fraction, text, eta, step_losses, epochs)
    if last_loading is not None:
        done = last_loading.done or 0
        share = done / max(1, last_loading.total)
        return JobProgress("loading", LOADING_SHARE * share,
                           f"Decoding films: {done} of {last_loading.total}", None, [], [])
    if events:
        return JobProgress("loading", 0.0, "Decoding films.", None, [], [])
    return JobProgress("starting", 0.0, "Starting the training process.", None, [], [])
