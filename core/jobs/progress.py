"""A training job's progress for a page to draw, derived from the typed ``train()`` events in ``events.jsonl``."""
from __future__ import annotations

from dataclasses import dataclass

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


def job_progress(events: list[ProgressEvent], now: float | None = None) -> JobProgress:
    now = clock.seconds() if now is None else now
    steps = [e for e in events if isinstance(e, StepEvent)]
    step_losses = thinned([StepLoss(e.epoch - 1 + e.step / e.steps, e.loss) for e in steps])
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    last_train = steps[-1] if steps else None
    last_loading = next((e for e in reversed(events) if isinstance(e, LoadingEvent) and e.total is not None), None)
    if any(isinstance(e, DoneEvent) for e in events):
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
