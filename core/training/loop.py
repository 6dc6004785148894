"""The training loop, readable top to bottom: class-weighted cross-entropy, AdamW with a one-cycle schedule,
training-only augmentation, and early stopping on validation AUC.

The films arrive decoded once (uint8) and already on the training device; each step indexes a batch there,
turns it into the float pixel contract, augments it in batch on the device and runs forward and loss under
the precision of :class:`~core.training.distributed.Hardware` (bf16 autocast keeps fp32 master weights).
Validation runs once per epoch on rank 0 only, in fp32 and inference mode at a large batch.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.errors import TrainingCancelled
from core.films.folders import FilmSet
from core.films.tensor import as_float
from core.models.device import has_convolutions, training_autocast
from core.models.inference import probabilities_in_batches
from core.store.records import EpochRecord, TrainConfig
from core.training.augment import TrainingAugmentation
from core.training.distributed import Hardware
from core.training.events import EpochEvent, NoteEvent, ProgressEvent, StepEvent


@dataclass(frozen=True)
class TrainingFilms:
    """What one process trains on: its films (all of them in a single-process run) on its device."""

    films: torch.Tensor  # N x 1 x S x S uint8
    labels: torch.Tensor  # N class indices
    class_weight: torch.Tensor  # from the whole training part, so every rank weighs the classes alike
    total: int  # films in the whole training part (all ranks together)


def fit(model: nn.Module, train: TrainingFilms, x_val: torch.Tensor | None, val_set: FilmSet, config: TrainConfig,
        hardware: Hardware, emit: Callable[[ProgressEvent], None],
        should_stop: Callable[[], bool] | None) -> tuple[dict | None, list[EpochRecord]]:
    """Train ``model`` (already on ``hardware.device``) in place; on rank 0 returns the state with the best
    validation AUC and one record per epoch (other ranks: None and [])."""
    device = hardware.device
    generator = torch.Generator().manual_seed(config.seed + 7919 * hardware.world.rank)  # rank 0: the seed
    augment = TrainingAugmentation(hflip=config.hflip) if config.augment else None
    loss_fn = nn.CrossEntropyLoss(weight=train.class_weight.to(device))
    network = hardware.wrap(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = hardware.rank_batch_size(config.batch_size, train.total)
    steps = hardware.steps_per_epoch(config.batch_size, train.total)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=config.epochs * steps,
                                                   pct_start=0.15)
    channels_last = has_convolutions(model)  # placed channels_last for training: feed it alike
    best_state = copy.deepcopy(model.state_dict()) if hardware.is_main else None
    history, best, stale, started = [], -1.0, 0, time.monotonic()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order, losses = torch.randperm(len(train.films), generator=generator).to(device), []
        for step in range(steps):
            if should_stop and hardware.on_any(should_stop()):
                raise TrainingCancelled("Training was cancelled; nothing was saved.")
            index = order[step * batch_size : (step + 1) * batch_size]
            batch = as_float(train.films[index])  # uint8 -> float on the device, per batch
            batch = augment(batch, generator) if augment else batch
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with training_autocast(device, hardware.precision):
                loss = loss_fn(network(batch).float(), train.labels[index])
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
        train_loss, stop = hardware.mean(float(np.mean(losses))), False
        if hardware.is_main:  # the other ranks wait for its decision below
            history.append(_validate(model, x_val, val_set, loss_fn.weight.cpu(), epoch, train_loss, started,
                                     hardware.precision))
            emit(EpochEvent(epochs=config.epochs, **history[-1].model_dump()))
            if history[-1].val_auc > best:
                best, best_state, stale = history[-1].val_auc, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                stop = stale >= config.patience
        if hardware.from_main(stop):
            emit(NoteEvent(message=f"early stop: no validation AUC gain for {stale} epochs"))
            break
    return best_state, history


def _validate(model: nn.Module, x_val: torch.Tensor, val_set: FilmSet, weight: torch.Tensor, epoch: int,
              train_loss: float, started: float, precision: str) -> EpochRecord:
    """Per-epoch monitoring (early stopping, the curves) at the training precision, inference mode, a large
    batch. The operating point and the report are computed afterwards, in fp32, on the stored weights."""
    val_probs = probabilities_in_batches(model, x_val, precision=precision)
    return EpochRecord(epoch=epoch, train_loss=train_loss, val_auc=_auc(val_set.labels, val_probs),
                       val_loss=_weighted_nll(val_probs, val_set.labels, weight),
                       seconds=round(time.monotonic() - started, 1))


def _weighted_nll(probs: np.ndarray, labels: np.ndarray, weight: torch.Tensor) -> float:
    """The training loss (class-weighted cross-entropy) from probabilities already computed for the AUC."""
    log_probs = torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-7))
    return float(nn.functional.nll_loss(log_probs, torch.as_tensor(labels), weight=weight))


def _auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    if probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))
