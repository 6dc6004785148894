"""A training job's progress for a page to draw, derived from the ``train()`` events in ``events.jsonl``."""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class JobProgress:
    """What a page needs to draw a job's progress, derived from its events."""

    phase: str  # starting | loading | training | finishing | done
    fraction: float  # 0..1 over the whole job; decoding films counts for the first tenth
    text: str
    eta_seconds: float | None
    step_losses: list[dict]  # {"epoch": fractional epoch, "loss": float}
    epochs: list[dict]  # one record per finished epoch: epoch, train_loss, val_loss, val_auc, seconds


LOADING_SHARE = 0.1


def job_progress(events: list[dict], now: float | None = None) -> JobProgress:
    now = time.time() if now is None else now
    step_losses = [{"epoch": e["epoch"] - 1 + e["step"] / e["steps"], "loss": e["loss"]}
                   for e in events if e.get("phase") == "train"]
    epochs = [{k: e[k] for k in ("epoch", "train_loss", "val_loss", "val_auc", "seconds")}
              for e in events if e.get("phase") == "epoch"]
    last_train = next((e for e in reversed(events) if e.get("phase") == "train"), None)
    last_loading = next((e for e in reversed(events) if e.get("phase") == "loading" and "total" in e), None)
    if any(e.get("phase") == "done" for e in events):
        return JobProgress("done", 1.0, "Finished.", 0.0, step_losses, epochs)
    if last_train is not None:
        eta = max(0.0, last_train["eta_seconds"] - (now - last_train.get("time", now)))
        fraction = LOADING_SHARE + (1 - LOADING_SHARE) * last_train["progress"]
        if last_train["progress"] >= 1.0:
            return JobProgress("finishing", fraction, "Choosing the operating point, evaluating on validation "
                               "and registering the new version.", None, step_losses, epochs)
        text = (f"Training: epoch {last_train['epoch']} of {last_train['epochs']}, "
                f"step {last_train['step']} of {last_train['steps']}")
        return JobProgress("training", fraction, text, eta, step_losses, epochs)
    if last_loading is not None:
        share = last_loading["done"] / max(1, last_loading["total"])
        return JobProgress("loading", LOADING_SHARE * share,
                           f"Decoding films: {last_loading['done']} of {last_loading['total']}", None, [], [])
    if events:
        return JobProgress("loading", 0.0, "Decoding films.", None, [], [])
    return JobProgress("starting", 0.0, "Starting the training process.", None, [], [])
