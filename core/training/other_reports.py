"""Reports beside internal validation, computed when a version is trained (#13): how its promise travels.

- ``out-of-batch``: the films a holdout rule (core.training.holdout) kept out of training and validation.
- ``adults``: model-only specificity on the adult normal films of the shared tuberculosis set
  (``shared-data/tb/train/Normal``), for models with a NORMAL class; those films are *outside the training
  population* (adults, other hospitals and detectors) and the chest-film check would refuse them, so this is
  the network alone, read at its operating point.

Every figure carries its bootstrap 95 % interval (core.evaluation.metrics). Thresholds are never chosen here.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from core.errors import DataRootsUnreadable, FolderNotAllowed
from core.evaluation.metrics import evaluate_probabilities
from core.films.bounds import FILM_SUFFIXES
from core.films.folders import FilmSet
from core.films.roots import SHARED_ROOT, resolve_folder
from core.films.tensor import load_tensors
from core.models.device import model_device, to_device
from core.models.inference import probabilities_in_batches
from core.store.reports import OperatingPoint, Report

OUT_OF_BATCH = "out-of-batch"
ADULTS = "adults"
ADULT_NORMALS = "tb/train/Normal"  # inside the shared-data root
ADULTS_SPLIT = ("adults: outside the training population ({n} adult normal films of the Tuberculosis Chest X-ray "
                "Database, shared-data/tb/train/Normal); the network alone, without the chest-film check")


def report_on(model: nn.Module, films: FilmSet, image_size: int, point: OperatingPoint, split: str,
              seed: int = 0) -> Report:
    """``model`` (eval mode, stored weights) read at ``point`` on ``films``, in fp32 on the model's device."""
    x = to_device(load_tensors(films, image_size), model_device(model))
    probs = probabilities_in_batches(model, x)
    return evaluate_probabilities(films.labels, probs, films.classes, point, seed=seed, split=split)


def adult_normals(classes: tuple[str, ...]) -> FilmSet | None:
    """The adult normal films labelled with this model's normal class, or None (no such class, no shared data)."""
    normal = next((i for i, c in enumerate(classes) if c.upper() == "NORMAL"), None)
    if normal is None:
        return None
    try:
        folder = resolve_folder(SHARED_ROOT, ADULT_NORMALS)
    except (FolderNotAllowed, DataRootsUnreadable):
        return None
    paths = tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FILM_SUFFIXES))
    if not paths:
        return None
    return FilmSet(paths, np.full(len(paths), normal, dtype=np.int64), tuple(classes))


def other_reports(model: nn.Module, held_out: FilmSet | None, holdout_description: str, image_size: int,
                  point: OperatingPoint, seed: int = 0) -> dict[str, Report]:
    reports = {}
    if held_out is not None:
        split = f"{OUT_OF_BATCH}: {len(held_out)} films, {holdout_description}"
        reports[OUT_OF_BATCH] = report_on(model, held_out, image_size, point, split, seed)
    adults = adult_normals(point.classes)
    if adults is not None:
        reports[ADULTS] = report_on(model, adults, image_size, point, ADULTS_SPLIT.format(n=len(adults)), seed)
    return reports
