"""Shipping a version: measure its speed, stamp it, write its checkpoint under the next free ``-vN`` name
(free in both tiers) and register it, making it its task's default when asked (or when its task has none
yet). Training, calibration and (later) ensembles all ship through here; versions are immutable once written.

New versions go to the site folder. Only an explicit ``directory`` equal to the shipped folder (``train
--shipped``, as ``make models`` runs it) writes there, and then the checksum manifest records the new files.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core import clock
from core.errors import AuditLogUnavailable, CheckpointError, PromotionRefused, TriageError
from core.models.device import place_model
from core.models.features import GaussianScore
from core.models.inference import inference_ms_per_film
from core.store import manifest
from core.store.atomic import remove_stale_temporaries
from core.store.checkpoints import save_checkpoint
from core.store.names import check_model_name
from core.store.records import ModelRecord
from core.store.promotion import promote, promote_first
from core.store.registry import checkpoint_dir, find_model, list_models, registry_lock
from core.store.versions import next_version_name
from core.stop_signals import stops_held

log = logging.getLogger(__name__)


def ship_version(model: nn.Module, record: ModelRecord, base_name: str, directory: Path | None = None,
                 make_default: bool = False, who: str = "cli", population: GaussianScore | None = None,
                 after_save: Callable[[ModelRecord], object] | None = None) -> ModelRecord:
    """Write ``model`` with ``record`` as ``base_name-vN`` into ``directory`` (default: the site folder);
    returns the record as stored. ``population``: the score of ``record.population_check``, stored beside it.
    ``after_save``: called with the stored record before any promotion, to write the audit entry: when the log
    cannot be written (AuditLogUnavailable, e.g. a full disk), the version is removed again and the error raised.

    The model is moved to the CPU in the memory layout it is served in (:func:`place_model`, what
    :func:`load_checkpoint` and the app give), so its recorded speed is the one the app sees and compares with
    every other version's, whatever device it was trained on.
    """
    check_model_name(base_name)
    directory = directory or checkpoint_dir()
    place_model(model, torch.device("cpu"))
    record = record.model_copy(update={"inference_ms_per_film": inference_ms_per_film(model, record.image_size),
                                       "created": clock.iso()})
    with stops_held() as stops:  # files, manifest, audit line, the run forgotten and the promotion: all of them
        stored = _stored(model, record, base_name, directory, population)
        if after_save is not None:
            try:
                after_save(stored)
            except AuditLogUnavailable as exc:  # a version no one can trace is not kept (found by a review)
                _withdraw(stored, directory)
                raise AuditLogUnavailable(f"{exc} So the new version was not kept: nothing was registered.") from exc
        _promoted(stored, make_default, who, directory)
    if stops:  # too late to stop: the version is registered whole and the command reports it
        log.warning("a stop was asked for while %s was being registered; it is registered", stored.name)
    return stored


def _promoted(stored: ModelRecord, make_default: bool, who: str, directory: Path) -> None:
    """Through the promotion floor (core.store.promotion), recorded in the audit log as done by ``who``."""
    if make_default:
        promote(stored.name, who=who, directory=directory)  # PromotionRefused: the version stays, not default
    else:
        try:
            promote_first(stored.name, who=who, directory=directory)
        except TriageError as exc:  # the version is registered: a run must not read as failed for a convenience
            log.warning("%s is registered but was not made its task's first default: %s", stored.name, exc)


def _stored(model: nn.Module, record: ModelRecord, base_name: str, directory: Path,
            population: GaussianScore | None) -> ModelRecord:
    """The version written under its next free name (and, in the shipped folder, signed in the manifest)."""
    with registry_lock(directory):
        remove_stale_temporaries(directory)
        named = record.model_copy(update={"name": next_version_name(base_name, directory)})
        try:
            stored = save_checkpoint(directory, model, named, population)
        except OSError as exc:  # a full disk, a read-only folder: its text would name the server path
            raise CheckpointError(f"The new version could not be written ({exc.strerror or type(exc).__name__}); "
                                  "nothing was registered.") from exc
        if directory.resolve() == manifest.shipped_dir().resolve():  # the shipping path (make models)
            written = [directory / f"{stored.name}{suffix}" for suffix in (".json", ".pt")]
            if stored.population_check is not None:
                written.append(directory / stored.population_check.file)
            try:
                manifest.write_manifest(directory, written)
            except OSError as exc:  # unsigned, every listing refused them, and the next run shipped another (a review)
                for path in written:
                    path.unlink(missing_ok=True)
                why = exc.strerror or type(exc).__name__
                raise CheckpointError(f"The checksum manifest could not be written ({why}); nothing was registered.") \
                    from exc
    return stored


def _withdraw(stored: ModelRecord, directory: Path) -> None:
    """Remove a version just written (its description first, so no listing sees it half gone)."""
    files = [directory / f"{stored.name}{suffix}" for suffix in (".json", ".pt")]
    if stored.population_check is not None:
        files.append(directory / stored.population_check.file)
    with registry_lock(directory):
        for path in files:
            path.unlink(missing_ok=True)
        if directory.resolve() == manifest.shipped_dir().resolve():
            manifest.write_manifest(directory, [])  # its entries go with its files


def registered_already(run_id: str, directory: Path | None = None) -> ModelRecord | None:
    """The version a run registered before its process was killed (SIGKILL, power loss) between writing it and
    deleting the run's finished state: resuming that state registered the same model a second time (a review).
    The run's own version, not a recalibrated copy of it (which keeps its training record, run id included)."""
    entries, _ = list_models(directory or checkpoint_dir())
    trained = [e.record for e in entries if e.record.training and e.record.training.run_id == run_id
               and e.record.calibration is None and not e.record.members]
    return min(trained, key=lambda record: record.created or "", default=None)


def complete_registration(stored: ModelRecord, run, make_default: bool, who: str, directory: Path | None) -> None:
    """What the kill may have left undone for ``stored`` (:func:`registered_already`): its ``train`` audit line
    (found by the run's id) and its promotion; then the run's state goes (a re-read of the change)."""
    from core.admin.audit import find_action, record_action

    if find_action(run.run_id, "train", until=(), key="run") is None:
        record_action("train", who, model=stored.name, task=stored.task, run=run.run_id, settled=True)
    directory = directory or checkpoint_dir()
    try:
        if not (make_default and find_model(stored.name, directory).is_default):  # promoted before a failed forget
            _promoted(stored, make_default, who, directory)
    except PromotionRefused:  # registered, not the default: the run has shipped all the same
        forget_run(run, stored.name)
        raise
    forget_run(run, stored.name)


def forget_run(run, name: str) -> None:
    """A shipped run's state goes once its version is registered and promoted: killed before, the state stays for
    a resume to complete the registration (:func:`complete_registration`; a resume review: forgotten before the
    promotion, a command-line run killed in between left its new task without a default for good)."""
    try:
        run.forget()
    except OSError:  # registered all the same; its run id finds it again next time
        log.warning("the saved state of the run that registered %s stays", name)
