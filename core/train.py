"""Training: a loop you can read top to bottom.

decode once -> patient-disjoint split -> class-weighted loss, AdamW + one-cycle schedule ->
early stopping on validation AUC -> operating point on validation -> report -> new checkpoint version.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.checkpoints import remove_stale_temporaries, round_to_storage, save_checkpoint
from core.data import FilmSet, class_weights, discover, fingerprint, load_tensors, patient_split
from core.errors import JobError
from core.inference import as_float, probabilities_in_batches
from core.metrics import evaluate_probabilities
from core.models import build_model, get_architecture
from core.operating_point import DEFAULT_TARGET_SENSITIVITY, check_target_sensitivity, choose_operating_point
from core.preprocess import TrainingAugmentation
from core.registry import checkpoint_dir, ensure_default, next_version_name, registry_lock
from core.tasks import task_name
from core.timing import inference_ms_per_film

ProgressCallback = Callable[[dict], None]


class TrainingCancelled(JobError):
    """Raised inside the loop when the caller asked to stop; nothing is written."""


@dataclass
class TrainConfig:
    arch: str = "resnet18"
    epochs: int = 10
    image_size: int | None = None  # None: the architecture's default
    batch_size: int = 32
    lr: float | None = None  # None: 1e-3 from scratch, 3e-4 from ImageNet weights
    weight_decay: float = 1e-4
    augment: bool = True
    hflip: bool = False
    pretrained: bool = True
    val_fraction: float = 0.2
    patience: int = 4
    seed: int = 0
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    max_films: int | None = None  # a random subset, for quick runs and tests

    def resolved(self) -> "TrainConfig":
        arch = get_architecture(self.arch)
        pretrained = self.pretrained and arch.pretrainable
        check_target_sensitivity(self.target_sensitivity)
        return TrainConfig(**{**asdict(self), "image_size": self.image_size or arch.default_image_size,
                              "pretrained": pretrained, "lr": self.lr or (3e-4 if pretrained else 1e-3)})


def train(
    data_dir: str | Path, config: TrainConfig, name: str | None = None, directory: Path | None = None,
    on_progress: ProgressCallback | None = None, should_stop: Callable[[], bool] | None = None,
    job_id: str | None = None,
) -> Path:
    """Train, evaluate on validation, register a new version; returns the new model's JSON path."""
    config, directory = config.resolved(), directory or checkpoint_dir()
    emit = on_progress or (lambda event: None)
    torch.manual_seed(config.seed)
    started = time.time()
    films, train_set, val_set = split_films(data_dir, config)
    emit({"phase": "loading", "message": f"decoding {len(films)} films once"})
    def loading(done: int, total: int, offset: int = 0) -> None:
        if should_stop and should_stop():
            raise TrainingCancelled("Training was cancelled while decoding films; nothing was saved.")
        emit({"phase": "loading", "done": offset + done, "total": len(films)})

    x_train = load_tensors(train_set, config.image_size, on_progress=loading)
    x_val = load_tensors(val_set, config.image_size, on_progress=lambda d, n: loading(d, n, len(train_set)))
    model, notes = build_model(config.arch, len(films.classes), config.image_size, config.pretrained)
    for note in notes:
        emit({"phase": "note", "message": note})
    best_state, history = _fit(model, x_train, train_set, x_val, val_set, config, emit, should_stop)
    model.load_state_dict(best_state)
    point, report = validate_for_shipping(model, x_val, val_set, config)
    report["split"] = (f"validation: {len(val_set)} films, a patient-disjoint {len(val_set) / len(films):.0%} "
                       f"of {data_dir}")
    metadata = {
        "task": task_name(films.classes), "arch": config.arch, "classes": list(films.classes),
        "model_args": {"num_classes": len(films.classes), "image_size": config.image_size},
        "input": {"channels": 1, "pixel_range": [0.0, 1.0], "image_size": config.image_size,
                  "geometry": "whole film resized to a square (224-px 8-bit JPEG reference form first)"},
        "operating_point": point.to_dict(),
        "training": {"config": asdict(config), "data_dir": str(data_dir), "history": history,
                     "best_epoch": int(np.argmax([h["val_auc"] for h in history])) + 1,
                     "seconds": round(time.time() - started, 1), "notes": notes, "job_id": job_id},
        "data": {"train": fingerprint(train_set), "validation": fingerprint(val_set)},
        "report": report,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "inference_ms_per_film": inference_ms_per_film(model, config.image_size),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with registry_lock(directory):
        remove_stale_temporaries(directory)
        metadata["name"] = next_version_name(name or f"{metadata['task']}-{config.arch}", directory)
        json_path = save_checkpoint(directory, model, metadata)
    ensure_default(metadata["name"], directory)
    emit({"phase": "done", "name": metadata["name"], "auc": report["auc"], "seconds": metadata["training"]["seconds"]})
    return json_path


def split_films(data_dir: str | Path, config: TrainConfig) -> tuple[FilmSet, FilmSet, FilmSet]:
    """All films (or the configured subset), then its patient-disjoint training and validation parts."""
    films = maybe_subset(discover(data_dir), config)
    return (films, *patient_split(films, config.val_fraction, config.seed))


def validate_for_shipping(model: nn.Module, x_val: torch.Tensor, val_set: FilmSet, config: TrainConfig):
    """Operating point and validation report for exactly the weights that will be stored (float16)."""
    round_to_storage(model)
    model.eval()
    probs = probabilities_in_batches(model, x_val)
    point = choose_operating_point(val_set.labels, probs, list(val_set.classes), config.target_sensitivity)
    return point, evaluate_probabilities(val_set.labels, probs, list(val_set.classes), point, seed=config.seed)


def maybe_subset(films: FilmSet, config: TrainConfig) -> FilmSet:
    if not config.max_films or config.max_films >= len(films):
        return films
    rng = np.random.default_rng(config.seed)
    keep = []
    for label in range(len(films.classes)):  # keep the class balance of the full set
        members = np.flatnonzero(films.labels == label)
        share = max(2, round(config.max_films * len(members) / len(films)))
        keep += rng.choice(members, size=min(share, len(members)), replace=False).tolist()
    return films.subset(np.sort(np.asarray(keep)))


def _fit(model, x_train, train_set, x_val, val_set, config, emit, should_stop):
    generator = torch.Generator().manual_seed(config.seed)
    augment = TrainingAugmentation(hflip=config.hflip) if config.augment else None
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_set))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = min(config.batch_size, len(train_set))
    steps = max(1, len(train_set) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=config.epochs * steps,
                                                   pct_start=0.15)
    labels = torch.as_tensor(train_set.labels)
    history, best, best_state, stale, started = [], -1.0, copy.deepcopy(model.state_dict()), 0, time.time()
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
            elapsed = time.time() - started
            emit({"phase": "train", "epoch": epoch, "epochs": config.epochs, "step": step + 1, "steps": steps,
                  "loss": losses[-1], "progress": done / (config.epochs * steps),
                  "eta_seconds": elapsed / done * (config.epochs * steps - done)})
        val_probs = probabilities_in_batches(model, x_val)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_auc": _auc(val_set.labels, val_probs),
                  "val_loss": _weighted_nll(val_probs, val_set.labels, loss_fn.weight),
                  "seconds": round(time.time() - started, 1)}
        history.append(record)
        emit({"phase": "epoch", **record, "epochs": config.epochs})
        if record["val_auc"] > best:
            best, best_state, stale = record["val_auc"], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                emit({"phase": "note", "message": f"early stop: no validation AUC gain for {stale} epochs"})
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
