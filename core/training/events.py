"""Progress events ``train()`` emits, typed: the CLI draws them, a background job appends them to
``events.jsonl`` and the Retrain page reads them back (:func:`parse_event`)."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError

from core.store.base import Record


class _Event(Record):
    time: float | None = None  # seconds since the epoch, stamped by whoever records the event


class LoadingEvent(_Event):
    phase: Literal["loading"] = "loading"
    message: str | None = None
    done: int | None = None
    total: int | None = None


class NoteEvent(_Event):
    phase: Literal["note"] = "note"
    message: str


class StepEvent(_Event):
    """One optimiser step."""

    phase: Literal["train"] = "train"
    epoch: int = Field(ge=1)  # a line with none of these (steps 0) divided by zero on the page (a review)
    epochs: int = Field(ge=1)
    step: int = Field(ge=1)
    steps: int = Field(ge=1)
    loss: float
    progress: float  # 0..1 over all steps of the run
    eta_seconds: float


class EpochEvent(_Event):
    phase: Literal["epoch"] = "epoch"
    epoch: int = Field(ge=1)
    epochs: int = Field(ge=1)
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float
    last: bool = False  # no epoch follows: the last one, or early stopping ended the run here (only shipping is left)


class DoneEvent(_Event):
    phase: Literal["done"] = "done"
    name: str
    auc: float | None
    seconds: float


ProgressEvent = Annotated[Union[LoadingEvent, NoteEvent, StepEvent, EpochEvent, DoneEvent],
                          Field(discriminator="phase")]
_EVENT = TypeAdapter(ProgressEvent)


def parse_event(line: str) -> ProgressEvent | None:
    """One line of ``events.jsonl`` -> its event; None for a torn or unknown line (the writer is mid-line)."""
    try:
        return _EVENT.validate_json(line)
    except ValidationError:
        return None
