"""The training loop, readable top to bottom: class-weighted cross-entropy, AdamW with a one-cycle schedule,
training-only augmentation, and early stopping on validation AUC.

The films arrive decoded once (uint8) and already on the training device; each step indexes a batch there,
turns it into the float pixel contract, augments it in batch on the device and runs forward and loss under
the precision of :class:`~core.training.distributed.Hardware` (bf16 autocast keeps fp32 master weights).
Validation runs once per epoch on rank 0 only, in inference mode at the device's inference batch.
At the end of every epoch the run's state is saved (core.training.resume), so an interrupted run
resumes from its last finished epoch.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.errors import CheckpointError, TrainingCancelled, TrainingDiverged, TrainingStopped, TriageError
from core.films.folders import FilmSet
from core.films.tensor import as_float, load_tensors
from core.models.device import has_convolutions, to_device, training_autocast
from core.models.inference import probabilities_in_batches
from core.store.records import EpochRecord, TrainConfig
from core.tasks import find_normal_index
from core.training.augment import TrainingAugmentation
from core.training.distributed import Hardware
from core.training.data import class_weights
from core.training.events import EpochEvent, LoadingEvent, NoteEvent, ProgressEvent, StepEvent
from core.training.resume import RunCheckpoint, RunProgress
from core.training.saved_runs import cancelled_message


@dataclass(frozen=True)
class TrainingFilms:
    """What one process trains on: its films (all of them in a single-process run) on its device."""

    films: torch.Tensor  # N x 1 x S x S uint8
    labels: torch.Tensor  # N class indices
    class_weight: torch.Tensor  # from the whole training part, so every rank weighs the classes alike
    total: int  # films in the whole training part (all ranks together)
    smallest_shard: int | None = None  # films of the smallest rank's shard (Hardware.smallest_shard)


def decode_for_training(train_set: FilmSet, val_set: FilmSet, config: TrainConfig, hardware: Hardware,
                        emit: Callable[[ProgressEvent], None],
                        should_stop: Callable[[], bool] | None) -> tuple[TrainingFilms, torch.Tensor | None]:
    """Decode this rank's training films (and on rank 0 the validation films) once, onto the device. A film one
    rank cannot read stops every rank (a review: the others went on into DDP's set-up and waited there)."""
    mine = hardware.shard(train_set, config.seed)
    total = len(mine) + (len(val_set) if hardware.is_main else 0)
    emit(LoadingEvent(message=f"decoding {total} films once"))

    def loading(done: int, _: int, offset: int = 0) -> None:
        if should_stop and should_stop():
            raise TrainingCancelled("Training was cancelled while decoding films; nothing was saved.")
        emit(LoadingEvent(done=offset + done, total=total))

    x_val, failure = None, None
    try:
        x_train = load_tensors(mine, config.image_size, on_progress=loading)
        if hardware.is_main:
            x_val = to_device(load_tensors(val_set, config.image_size,
                                           on_progress=lambda d, n: loading(d, n, len(mine))), hardware.device)
    except TriageError as exc:
        failure = exc
    _raise_everywhere(failure, hardware, "another training process stopped while decoding its films")
    films_here = TrainingFilms(films=to_device(x_train, hardware.device),
                               labels=to_device(torch.as_tensor(mine.labels, dtype=torch.long), hardware.device),
                               class_weight=class_weights(train_set), total=len(train_set),
                               smallest_shard=hardware.smallest_shard(train_set))
    return films_here, x_val


def fit(model: nn.Module, train: TrainingFilms, x_val: torch.Tensor | None, val_set: FilmSet, config: TrainConfig,
        hardware: Hardware, emit: Callable[[ProgressEvent], None], should_stop: Callable[[], bool] | None,
        run: RunCheckpoint | None = None) -> tuple[dict | None, list[EpochRecord]]:
    """Train ``model`` (already on ``hardware.device``) in place; on rank 0 returns the state with the best
    validation AUC and one record per epoch (other ranks: None and []).

    With ``run`` (core.training.resume) the run's state is saved at the end of every epoch and, when it
    resumes, restored first: training goes on from the epoch after the saved one as if it had never stopped.
    """
    trainer = _Trainer.build(model, train, config, hardware)
    aside = run.set_aside if run else ""
    progress = run.restore(model, trainer.optimiser, trainer.schedule, trainer.generator) if run else RunProgress()
    if run and run.set_aside != aside:  # resuming if saved, the state did not fit the fresh model: a fresh run
        emit(NoteEvent(message=run.notes[0]))
    if progress.epoch == 0 and hardware.is_main:
        progress.best_state = copy.deepcopy(model.state_dict())
    _replay(progress, config, emit)
    total, first = config.epochs * trainer.steps, progress.epoch * trainer.steps
    started, resumed = time.monotonic() - progress.seconds, time.monotonic()
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        if progress.finished:  # resumed after the last epoch (or an early stop): only shipping was left
            break
        model.train()
        epoch_started = time.monotonic()
        order, losses = torch.randperm(len(train.films), generator=trainer.generator).to(hardware.device), []
        for step in range(trainer.steps):
            if should_stop and hardware.on_any(should_stop()):
                raise TrainingCancelled(cancelled_message(progress.epoch if run else 0, config.epochs))
            index = order[step * trainer.batch_size : (step + 1) * trainer.batch_size]
            losses.append(trainer.step(train.films[index], train.labels[index]))
            if not math.isfinite(losses[-1]) and not hardware.world.is_distributed:  # ranks agree once an epoch
                raise TrainingDiverged(_diverged(epoch, f"the loss became {losses[-1]}", config, hardware))
            done = (epoch - 1) * trainer.steps + step + 1
            rate = (time.monotonic() - resumed) / (done - first)  # seconds per step in this process
            emit(StepEvent(epoch=epoch, epochs=config.epochs, step=step + 1, steps=trainer.steps, loss=losses[-1],
                           progress=done / total, eta_seconds=rate * (total - done)))
        steps_seconds = time.monotonic() - epoch_started
        train_loss = hardware.mean(float(np.mean(losses)))
        if not math.isfinite(train_loss):  # every rank sees the same mean: they stop together
            raise TrainingDiverged(_diverged(epoch, f"the loss became {train_loss}", config, hardware))
        failure = None  # rank 0's alone (validating, writing the state): raised on every rank together
        if hardware.is_main:  # the other ranks wait for its decision below
            try:
                record = _validate(model, x_val, val_set, trainer.loss_fn.weight.cpu(), epoch, train_loss, started,
                                   hardware, steps_seconds, config.batch_size)
                _judge(progress, record, model, config)
            except CheckpointError:  # the epoch's last step left weights whose outputs are not numbers
                failure = TrainingDiverged(_diverged(epoch, "its outputs stopped being numbers", config, hardware))
            except (TriageError, torch.OutOfMemoryError) as exc:
                failure = exc
        _raise_everywhere(failure, hardware)
        progress.epoch, progress.seconds = epoch, time.monotonic() - started
        if run:
            try:
                run.save(progress, model, trainer.optimiser, trainer.schedule, trainer.generator)
            except TriageError as exc:  # a full disk: only rank 0 writes, after the states are gathered
                failure = exc
            _raise_everywhere(failure, hardware)
        stopping = hardware.from_main(progress.stale >= config.patience)
        if hardware.is_main:  # after the save: whoever sees the epoch finished can resume from it; before the check
            # below, so a job's time limit knows an early stop's last epoch is past training (a resume review)
            emit(EpochEvent(epochs=config.epochs, last=progress.finished, **progress.history[-1].model_dump()))
        if (stopping or epoch == config.epochs) and should_stop and hardware.on_any(should_stop()):
            # asked during the last epoch's validation or save: the steps' check comes no more, and the run would
            # have registered its model after Cancel (a review); its state is saved, so Resume can register it
            raise TrainingCancelled(cancelled_message(progress.epoch if run else 0, config.epochs))
        if stopping:
            emit(NoteEvent(message=f"early stop: no validation AUC gain for {progress.stale} epochs"))
            break
    return progress.best_state, progress.history


def _raise_everywhere(failure: BaseException | None, hardware: Hardware,
                      elsewhere: str = "the main training process (rank 0) failed") -> None:
    """``failure`` (one rank's) raised on every rank: the others were left waiting in the next collective until
    torchrun tore them down, and said only that an unexpected error had stopped them (a review)."""
    if hardware.on_any(failure is not None):
        raise failure or TrainingStopped(f"Training stopped: {elsewhere}; its message says why.")


def _diverged(epoch: int, what: str, config: TrainConfig, hardware: Hardware) -> str:
    """A NaN loss was once sent on as progress the page could not read, and the run then failed in the
    validation AUC as an unexpected ValueError (a review). The learning rate is a command-line setting only."""
    fp32 = ", or in fp32 precision (the Retrain form's Training precision)" if hardware.precision != "fp32" else ""
    return (f"Training diverged in epoch {epoch} of {config.epochs}: {what}, so the weights are no longer numbers "
            f"and nothing was registered. Train again with a lower learning rate (this run's was {config.lr:g}; "
            f"--lr on the command line){fp32}.")


@dataclass
class _Trainer:
    """What one optimiser step needs, built once per run."""

    network: nn.Module  # the model, or DDP around it
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    augment: TrainingAugmentation | None
    generator: torch.Generator  # batch order and augmentation: the seed on rank 0
    channels_last: bool  # placed channels_last for training: feed it alike
    batch_size: int
    steps: int
    hardware: Hardware

    @classmethod
    def build(cls, model: nn.Module, train: TrainingFilms, config: TrainConfig, hardware: Hardware) -> "_Trainer":
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = hardware.steps_per_epoch(config.batch_size, train.total, train.smallest_shard)
        return cls(network=hardware.wrap(model), optimiser=optimiser,
                   schedule=torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr,
                                                                total_steps=config.epochs * steps, pct_start=0.15),
                   loss_fn=nn.CrossEntropyLoss(weight=train.class_weight.to(hardware.device)),
                   augment=_augmentation(config),
                   generator=torch.Generator().manual_seed(config.seed + 7919 * hardware.world.rank),
                   channels_last=has_convolutions(model) and config.layout != "contiguous",
                   batch_size=hardware.rank_batch_size(config.batch_size, train.total), steps=steps, hardware=hardware)

    def step(self, films: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimiser step on a batch of uint8 films; its loss."""
        batch = as_float(films)  # uint8 -> float on the device, per batch
        batch = self.augment(batch, self.generator) if self.augment else batch
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with training_autocast(self.hardware.device, self.hardware.precision):
            loss = self._loss(self.network(batch).float(), labels)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.schedule.step()
        return loss.item()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The class-weighted cross-entropy of the global batch. Under torchrun each rank's share is its films'
        weighted losses over the weight of every rank's films, times the ranks, which DDP's mean of the gradients
        divides out again (a review: each rank divided by its own films' weight, so a rank that drew more of the
        rarer class counted its films less); the logged loss is then the rank's share, and the epoch's mean over
        the ranks is the global loss. One process: the loss function itself."""
        if not self.hardware.world.is_distributed:
            return self.loss_fn(logits, labels)
        weight = self.loss_fn.weight
        everyone = self.hardware.summed(weight[labels].sum())
        summed = nn.functional.cross_entropy(logits, labels, weight=weight, reduction="sum")
        return summed * self.hardware.world.world_size / everyone


def _judge(progress: RunProgress, record: EpochRecord, model: nn.Module, config: TrainConfig) -> None:
    """Rank 0, after validating an epoch: keep the best weights, count the epochs without a gain."""
    progress.history.append(record)
    if record.val_auc > progress.best_auc:
        progress.best_auc, progress.best_state, progress.stale = record.val_auc, copy.deepcopy(model.state_dict()), 0
    else:
        progress.stale += 1
    progress.finished = progress.stale >= config.patience or record.epoch == config.epochs


def _replay(progress: RunProgress, config: TrainConfig, emit: Callable[[ProgressEvent], None]) -> None:
    """A resumed run first tells its listeners the epochs it already has, so curves and counts are whole."""
    if not progress.epoch:
        return
    emit(NoteEvent(message=f"resuming after epoch {progress.epoch} of {config.epochs} from the run's saved state"))
    for record in progress.history:
        emit(EpochEvent(epochs=config.epochs, last=progress.finished and record is progress.history[-1],
                        **record.model_dump()))


def _validate(model: nn.Module, x_val: torch.Tensor, val_set: FilmSet, weight: torch.Tensor, epoch: int,
              train_loss: float, started: float, hardware: Hardware, steps_seconds: float,
              training_batch: int) -> EpochRecord:
    """Per-epoch monitoring (early stopping, the curves) at the training precision, inference mode. On a GPU
    at the device's inference batch; on the CPU at the training batch, whose freed activations the process
    keeps (core.models.host_memory): 9.1 ms a film for ResNet-18 in bf16 against 10.0 at the CPU's inference
    batch of 6 (bench/inference_batch.py). The operating point and the report are computed afterwards, in
    fp32, on the stored weights."""
    validating = time.monotonic()
    batch = training_batch if hardware.device.type == "cpu" else None
    val_probs = probabilities_in_batches(model, x_val, batch_size=batch, precision=hardware.precision)
    return EpochRecord(epoch=epoch, train_loss=train_loss, val_auc=_auc(val_set, val_probs),
                       val_loss=_weighted_nll(val_probs, val_set.labels, weight),
                       seconds=round(time.monotonic() - started, 1), steps_seconds=round(steps_seconds, 2),
                       validation_seconds=round(time.monotonic() - validating, 2))


def _weighted_nll(probs: np.ndarray, labels: np.ndarray, weight: torch.Tensor) -> float:
    """The training loss (class-weighted cross-entropy) from probabilities already computed for the AUC."""
    log_probs = torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-7))
    return float(nn.functional.nll_loss(log_probs, torch.as_tensor(labels), weight=weight))


def _auc(val_set: FilmSet, probs: np.ndarray) -> float:
    """The AUC early stopping and the curves read, scored as the stored report scores it (core.evaluation.metrics):
    binary on 1 - p(normal), whose float32 softmax still orders films that p(abnormal) rounds to 1.0."""
    y_true, normal, probs = val_set.labels, find_normal_index(val_set.classes), np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        if normal is None:
            return float(roc_auc_score(y_true, probs[:, 1]))
        return float(roc_auc_score(y_true != normal, 1.0 - probs[:, normal]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))


def _augmentation(config: TrainConfig) -> TrainingAugmentation | None:
    if not config.augment:
        return None
    if config.wide_framing:
        return TrainingAugmentation.wide_framing(hflip=config.hflip)
    return TrainingAugmentation(hflip=config.hflip)
