"""Reports beside internal validation, computed when a version is trained (#13): how its promise travels.

- ``out-of-batch``: the films a holdout rule (core.training.holdout) kept out of training and validation.

Withdrawn (:data:`WITHDRAWN`): ``adults``, once a specificity on ``shared-data/tb/train/Normal``, read as adult
normal films. That folder holds smoothed random-noise textures, not chest films (each of its "Tuberculosis"
images is a "Normal" one with a few bright blobs), so the figure measured nothing about adults. It is no longer
computed; versions that still carry it load as before, and the card, Compare and ``models --json`` leave it out.

Every figure carries its bootstrap 95 % interval (core.evaluation.metrics). Thresholds are never chosen here.
"""
from __future__ import annotations


from torch import nn

from core.evaluation.metrics import evaluate_probabilities
from core.films.folders import FilmSet
from core.films.tensor import load_tensors
from core.models.device import model_device, to_device
from core.models.inference import probabilities_in_batches
from core.store.reports import OUT_OF_BATCH, OperatingPoint, Report

__all__ = ["OUT_OF_BATCH", "other_reports", "report_on"]


def report_on(model: nn.Module, films: FilmSet, image_size: int, point: OperatingPoint, split: str,
              seed: int = 0) -> Report:
    """``model`` (eval mode, stored weights) read at ``point`` on ``films``, in fp32 on the model's device."""
    x = to_device(load_tensors(films, image_size), model_device(model))
    probs = probabilities_in_batches(model, x)
    return evaluate_probabilities(films.labels, probs, films.classes, point, seed=seed, split=split,
                                  sources=films.sources)


def other_reports(model: nn.Module, held_out: FilmSet | None, holdout_description: str, image_size: int,
                  point: OperatingPoint, seed: int = 0) -> dict[str, Report]:
    reports = {}
    if held_out is not None:
        split = f"{OUT_OF_BATCH}: {len(held_out)} films, {holdout_description}"
        reports[OUT_OF_BATCH] = report_on(model, held_out, image_size, point, split, seed)
    return reports
