"""Reports beside internal validation, computed when a version is trained (#13): how its promise travels.

- ``out-of-batch``: the films a holdout rule (core.training.holdout) kept out of training and validation.
- ``tighter-framing``: the same films (the validation films when no batch was held out) magnified 15 % about
  their centre, as a tighter framing of the chest would show them (core.evaluation.framing): synthetic, and the
  one shift found here that moves every pneumonia model measured on the official Kermany test the way it did.
- ``other-collection``: Kermany-type films another dataset collected and re-encoded, minus copies of the training
  folder's films (core.training.other_collection), for every model that reads NORMAL and PNEUMONIA: real films
  from outside the training folder.
- ``other-collection-framed``: those films framed 15 % tighter. Between the two readings lies what the project
  measured on the official Kermany test for every model it measured (core.evaluation.site_range): the range a
  card shows for a new site.

Withdrawn (:data:`WITHDRAWN`): ``adults``, once a specificity on ``shared-data/tb/train/Normal``, read as adult
normal films. That folder holds smoothed random-noise textures, not chest films (each of its "Tuberculosis"
images is a "Normal" one with a few bright blobs), so the figure measured nothing about adults. It is no longer
computed; versions that still carry it load as before, and the card, Compare and ``models --json`` leave it out.

Every figure carries its 95 % interval (core.evaluation.metrics). Thresholds are never chosen here.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from core.errors import DatasetError
from core.evaluation.framing import TIGHTER_FRAMING, framed_tighter, framing_description
from core.evaluation.metrics import evaluate_probabilities
from core.films.folders import FilmSet
from core.films.tensor import load_tensors
from core.models.device import model_device, to_device
from core.models.inference import probabilities_in_batches
from core.store.reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED, OUT_OF_BATCH, OperatingPoint, Report
from core.training.other_collection import CLASSES, collection_description, collection_films

log = logging.getLogger(__name__)

__all__ = ["OTHER_COLLECTION", "OTHER_COLLECTION_FRAMED", "OUT_OF_BATCH", "TIGHTER_FRAMING", "collection_reports",
           "framing_report", "other_reports", "report_on"]


def report_on(model: nn.Module, films: FilmSet, image_size: int, point: OperatingPoint, split: str,
              seed: int = 0) -> Report:
    """``model`` (eval mode, stored weights) read at ``point`` on ``films``, in fp32 on the model's device."""
    return _read(model, films, _tensors(model, films, image_size), point, split, seed)


def other_reports(model: nn.Module, held_out: FilmSet | None, holdout_description: str, image_size: int,
                  point: OperatingPoint, seed: int = 0, validation: FilmSet | None = None,
                  training_folder: FilmSet | None = None) -> dict[str, Report]:
    """The out-of-batch report (when a batch was held out) and the tighter-framing one, on the held-out batch
    or, without one, on ``validation``; with ``training_folder`` (every film the run drew from), the
    other-collection reports too (as collected and framed tighter) where they apply. {} when there are none."""
    reports = {}
    if held_out is not None:
        split = f"{OUT_OF_BATCH}: {len(held_out)} films, {holdout_description}"
        x = _tensors(model, held_out, image_size)
        reports[OUT_OF_BATCH] = _read(model, held_out, x, point, split, seed)
        reports[TIGHTER_FRAMING] = _framed(model, held_out, x, point, holdout_description, seed)
    elif validation is not None and len(validation):
        reports[TIGHTER_FRAMING] = framing_report(model, None, "", validation, image_size, point, seed)
    if training_folder is not None:
        reports.update(collection_reports(model, training_folder, image_size, point, seed))
    return reports


def framing_report(model: nn.Module, held_out: FilmSet | None, holdout_description: str, validation: FilmSet,
                   image_size: int, point: OperatingPoint, seed: int = 0) -> Report:
    """The tighter-framing report alone (as :func:`other_reports` computes it): on the held-out batch when there
    is one, else on the validation films."""
    films = held_out if held_out is not None else validation
    x = _tensors(model, films, image_size)
    return _framed(model, films, x, point, holdout_description if held_out is not None else None, seed)


def collection_reports(model: nn.Module, training_folder: FilmSet, image_size: int, point: OperatingPoint,
                       seed: int = 0) -> dict[str, Report]:
    """``model`` read at ``point`` on the other collection's films that are not copies of ``training_folder``'s,
    as collected (:data:`OTHER_COLLECTION`) and framed 15 % tighter (:data:`OTHER_COLLECTION_FRAMED`); {} when the
    model does not read NORMAL and PNEUMONIA, the collection is not on this server (or holds only copies), or one
    of its films cannot be read (logged)."""
    if not set(CLASSES) <= set(point.classes):
        return {}
    found = collection_films(training_folder)
    if found is None:
        return {}
    films, copies, repeats = found
    if not len(films):
        return {}
    described = {OTHER_COLLECTION: collection_description(films, copies, repeats),
                 OTHER_COLLECTION_FRAMED: (f"{collection_description(films, copies, repeats, OTHER_COLLECTION_FRAMED)}"
                                           f", {framing_description()}")}
    films = films.in_classes(point.classes)
    try:
        x = _tensors(model, films, image_size)
    except DatasetError as exc:  # an auxiliary check never costs a finished run: say so in the log, skip it
        log.warning("other-collection check skipped: %s", exc)
        return {}
    return {OTHER_COLLECTION: _read(model, films, x, point, described[OTHER_COLLECTION], seed),
            OTHER_COLLECTION_FRAMED: _read(model, films, framed_tighter(x), point, described[OTHER_COLLECTION_FRAMED],
                                           seed)}


def _framed(model: nn.Module, films: FilmSet, x: torch.Tensor, point: OperatingPoint, holdout_description: str | None,
            seed: int) -> Report:
    which = (f"the {len(films)} films of another batch ({holdout_description})" if holdout_description is not None
             else f"the {len(films)} validation films")
    split = f"{TIGHTER_FRAMING}: {which}, {framing_description()}"
    return _read(model, films, framed_tighter(x), point, split, seed)


def _tensors(model: nn.Module, films: FilmSet, image_size: int) -> torch.Tensor:
    return to_device(load_tensors(films, image_size), model_device(model))


def _read(model: nn.Module, films: FilmSet, x: torch.Tensor, point: OperatingPoint, split: str,
          seed: int) -> Report:
    probs = probabilities_in_batches(model, x)
    return evaluate_probabilities(films.labels, probs, films.classes, point, seed=seed, split=split,
                                  sources=films.sources)
