"""The training loop, readable top to bottom: class-weighted cross-entropy, AdamW with a one-cycle schedule,
training-only augmentation, and early stopping on validation AUC."""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.errors import TrainingCancelled
from core.films.tensor import as_float
from core.models.inference import probabilities_in_batches
from core.store.records import EpochRecord, TrainConfig
from core.training.augment import TrainingAugmentation
from core.films.folders import FilmSet
from core.training.data import class_weights
from core.training.events import EpochEvent, NoteEvent, ProgressEvent, StepEvent


def fit(model: nn.Module, x_train: torch.Tensor, train_set: FilmSet, x_val: torch.Tensor, val_set: FilmSet,
        config: TrainConfig, emit: Callable[[ProgressEvent], None],
        should_stop: Callable[[], bool] | None) -> tuple[dict, list[EpochRecord]]:
    """Train ``model`` in place; returns the state with the best validation AUC and one record per epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    augment = TrainingAugmentation(hflip=config.hflip) if config.augment else None
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_set))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = min(config.batch_size, len(train_set))
    steps = max(1, len(train_set) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=config.epochs * steps,
                                                   pct_start=0.15)
    labels = torch.as_tensor(train_set.labels)
    history, best, best_state, stale, started = [], -1.0, copy.deepcopy(model.state_dict()), 0, time.monotonic()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order, losses = torch.randperm(len(train_set), generator=generator), []
        for step in range(steps):
            if should_stop and should_stop():
                raise TrainingCancelled("Training was cancelled; nothing was saved.")
            index = order[step * batch_size : (step + 1) * batch_size]
            batch = as_float(x_train[index])
            batch = augment(batch, generator) if augment else batch
            loss = loss_fn(model(batch), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            done = (epoch - 1) * steps + step + 1
            elapsed = time.monotonic() - started
            emit(StepEvent(epoch=epoch, epochs=config.epochs, step=step + 1, steps=steps, loss=losses[-1],
                           progress=done / (config.epochs * steps),
                           eta_seconds=elapsed / done * (config.epochs * steps - done)))
        val_probs = probabilities_in_batches(model, x_val)
        record = EpochRecord(epoch=epoch, train_loss=float(np.mean(losses)), val_auc=_auc(val_set.labels, val_probs),
                             val_loss=_weighted_nll(val_probs, val_set.labels, loss_fn.weight),
                             seconds=round(time.monotonic() - started, 1))
        history.append(record)
        emit(EpochEvent(epochs=config.epochs, **record.model_dump()))
        if record.val_auc > best:
            best, best_state, stale = record.val_auc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                emit(NoteEvent(message=f"early stop: no validation AUC gain for {stale} epochs"))
                break
    return best_state, history


def _weighted_nll(probs: np.ndarray, labels: np.ndarray, weight: torch.Tensor) -> float:
    """The training loss (class-weighted cross-entropy) from probabilities already computed for the AUC."""
    log_probs = torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-7))
    return float(nn.functional.nll_loss(log_probs, torch.as_tensor(labels), weight=weight))


def _auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    if probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))
