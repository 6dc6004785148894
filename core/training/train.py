"""Training a new model version, top to bottom:

decode once -> patient-disjoint split -> fit (core.training.loop) -> operating point on validation ->
report -> ship a new version (core.training.shipping).

Training runs on the device and at the precision of core.models.device (bf16 autocast where the hardware
has it); the operating point and report are computed in fp32, in the layout every inference path uses, so
they describe the model that ships. Under torchrun each process trains its shard (core.training.distributed).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.errors import (AuditLogUnavailable, CommandRefused, DeviceOutOfMemory, PromotionRefused, TrainingCancelled,
                         TrainingStopped, TriageError)
from core.evaluation.metrics import evaluate_probabilities
from core.models.build import build_model
from core.models.device import model_device, place_for_training, place_model
from core.models.inference import probabilities_in_batches
from core.store.checkpoints import round_to_storage
from core.store.promotion import check_before_training
from core.store.records import DataRecord, InputSpec, ModelArgs, ModelRecord, TrainConfig, TrainingRecord
from core.store.registry import checkpoint_dir
from core.store.writable import ensure_models_writable
from core.store.reports import OperatingPoint, Report
from core.tasks import task_name
from core.admin.audit import ensure_writable, record_action
from core.films.folders import FilmSet
from core.films.manifest import training_films
from core.films.roots import audit_label
from core.films.tensor import check_film_sizes
from core.training.data import film_groups, fingerprint, patient_split, split_words, with_patients_of, without_copies_of
from core.training.holdout import holdout_rule, split_holdout
from core.training.distributed import Hardware, leave, prepare_hardware
from core.training.events import DoneEvent, LoadingEvent, NoteEvent, ProgressEvent
from core.training.loop import decode_for_training, fit
from core.training.operating_point import choose_operating_point
from core.training import run_lock
from core.training.resume import RunIdentity, open_run, run_identity
from core.training.other_reports import other_reports
from core.training.population import try_fit_population_check
from core.training.shipping import complete_registration, forget_run, registered_already, ship_version

__all__ = ["TrainingCancelled", "train", "split_films", "validate_for_shipping"]


def train(
    data_dir: str | Path, config: TrainConfig, name: str | None = None, directory: Path | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None, should_stop: Callable[[], bool] | None = None,
    job_id: str | None = None, make_default: bool = False, who: str = "cli", resume: bool | str = False,
    floor_first: bool = False) -> ModelRecord | None:
    """Train, evaluate on validation, ship a new version; returns its record (``directory/NAME.json``).

    Under torchrun (core.training.distributed) every process trains on its shard; rank 0 alone reports
    progress, validates and ships, and the other ranks return None. The new version becomes its task's
    default only through the promotion floor (core.store.promotion), in the audit log as done by ``who``.
    The run's state is saved every epoch until it ships (core.training.resume); ``resume`` continues the
    interrupted run of these settings and films from it (ResumeRefused when there is none; with
    ``resume=IF_SAVED`` a fresh run instead). ``floor_first`` (or ``make_default``): refused before training where
    the promotion floor already rules the new version out as a default (core.store.promotion)."""
    config, directory = config.resolved(), directory or checkpoint_dir()
    hardware = prepare_hardware(config)
    emit = (on_progress or _ignore) if hardware.is_main else _ignore
    completed = False
    try:
        record = _train(data_dir, config, hardware, name, directory, emit, should_stop, job_id, make_default, who,
                        resume, floor_first or make_default)
        completed = True
        return record
    except PromotionRefused:  # registered, not the default: every rank ends at the barrier, as after a success (the
        completed = True  # others returned; rank 0 tearing the group down alone can abort them: a re-read)
        raise
    except torch.OutOfMemoryError as exc:
        gpu = hardware.device.type == "cuda"  # the page's form has no batch size: the command line's step (a review)
        raise DeviceOutOfMemory(
            f"{'The GPU' if gpu else 'This computer'} ran out of memory training {config.arch} at {config.image_size} "
            f"px with batch size {config.batch_size}; try a smaller image size, or "
            f"{'check that no other job is using the GPU' if gpu else 'close other programs using its memory'}. "
            "No model was registered.", command_step="A smaller --batch-size also helps"
            + (" (nvidia-smi shows what uses the GPU)." if gpu else ".")) from exc  # finished epochs stay saved
    finally:
        run_lock.release_all()  # however it ended: a job or command may take the run up (e.g. resume it) at once
        leave(hardware, completed)


def _ignore(event: ProgressEvent) -> None:
    pass


def _same_run_on_every_rank(identity: RunIdentity | None, hardware: Hardware, refusal: TriageError | None) -> None:
    """Under torchrun every process trains the same run, or all refuse together, none left waiting in a collective
    (a review): a refusal on one rank (rank 0's audit log or models folder, a folder missing on one machine), the
    settings as they resolved on each machine (ImageNet weights present on one only gave it another start and
    learning rate, which DDP averaged in silently), the same films (another copy of DIR: other step counts, a
    hang). One process alone raises its refusal, as before."""
    if hardware.on_any(refusal is not None):
        raise refusal or CommandRefused("Another training process could not start this run; its message says why.")
    settings = json.dumps(identity.config.to_json(), sort_keys=True)
    films = json.dumps([identity.data_dir, identity.train.to_json(), identity.validation.to_json(), identity.content])
    differing = hardware.differing({"settings": _digest(settings), "films": _digest(films)})
    if "settings" in differing:
        raise CommandRefused("The training processes resolved different settings: an ImageNet weights file present "
                             "on some machines only changes the start and learning rate there. Give every machine "
                             "the same weights files, or pass --no-pretrained and --lr.")
    if differing:
        raise CommandRefused("The training processes found different films: every machine needs the same films "
                             "in DIR, at the same path.")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


def _train(data_dir: str | Path, config: TrainConfig, hardware: Hardware, name: str | None, directory: Path,
           emit: Callable[[ProgressEvent], None], should_stop: Callable[[], bool] | None, job_id: str | None,
           make_default: bool, who: str, resume: bool | str = False, floor_first: bool = False) -> ModelRecord | None:
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    started = time.monotonic()
    split_notes: list[str] = []  # near-duplicates grouped, a val/ folder joined
    try:
        if hardware.is_main:
            ensure_writable()  # the new version is recorded: a log that cannot take it stops the run before it trains
            ensure_models_writable(directory)  # and written: a folder that cannot take it stops it too
        films, train_set, val_set, held_out = split_films(data_dir, config, split_notes)
        if floor_first:
            check_before_training(films.classes, val_set.class_counts(), config.target_sensitivity)
        identity, refusal = run_identity(config, data_dir, train_set, val_set, hardware.world.world_size), None
    except TriageError as exc:
        identity, refusal = None, exc
    _same_run_on_every_rank(identity, hardware, refusal)
    run = open_run(identity, hardware, resume, job_id)  # before decoding: a refused resume says so at once
    shipped = registered_already(run.run_id, directory) if run.on_disk[1] and hardware.is_main else None
    if hardware.on_any(shipped is not None):  # killed after registering, before forgetting the run: not again
        _ = shipped and complete_registration(shipped, run, make_default, who, directory)
        _ = shipped and emit(NoteEvent(message=f"registered as {shipped.name} before its process stopped"))
        return shipped  # None on the other ranks, as after shipping
    train_films, x_val = decode_for_training(train_set, val_set, config, hardware, emit, should_stop)
    model, notes = build_model(config.arch, len(films.classes), config.image_size, config.pretrained)
    hardware.own_randomness(config.seed)  # the same start everywhere, then each rank its own dropout masks
    run_notes = run.notes
    notes += split_notes + list(hardware.notes) + run_notes
    for note in notes:
        emit(NoteEvent(message=note))
    emit(NoteEvent(message=hardware.describe()))
    model = place_for_training(model, hardware.device, config.layout)
    best_state, history = fit(model, train_films, x_val, val_set, config, hardware, emit, should_stop, run)
    if run.notes != run_notes:  # resuming if saved, the state was set aside as it was restored
        notes = [note for note in notes if note not in run_notes] + run.notes
    if not hardware.is_main:  # rank 0's outcome: its failure to ship had left the others at the final barrier
        if hardware.on_any(False):
            raise TrainingStopped("Training stopped: the main training process (rank 0) failed after the last "
                                  "epoch, before its model was registered; its message says why.")
        return None

    def ship() -> ModelRecord:
        model.load_state_dict(best_state)
        kept = len(train_set) + len(val_set)
        share = f"{len(val_set) / kept:.0%}"
        split = f"validation: {len(val_set)} films, {split_words(train_set.paths + val_set.paths, share, data_dir)}"
        if held_out is not None:
            split += f" after holding out another batch ({config.holdout})"
        checks, since = {}, time.monotonic()

        def timed(step: str) -> None:
            nonlocal since
            checks[step], since = round(time.monotonic() - since, 1), time.monotonic()

        point, report = validate_for_shipping(model, x_val, val_set, config, split)
        timed("validation report")
        emit(LoadingEvent(message="reading the other-batch and outside-population checks"))
        others = other_reports(model, held_out, holdout_rule(config.holdout).description if held_out else "",
                               config.image_size, point, config.seed, validation=val_set, training_folder=films)
        timed("other-batch and other-collection checks")
        population, population_check = try_fit_population_check(  # is a film like these training films?
            train_set, val_set, data_dir, config.seed, lambda message: emit(LoadingEvent(message=message)), notes)
        timed("population check")
        record = ModelRecord(
            name="", task=task_name(films.classes), arch=config.arch, classes=films.classes,
            model_args=ModelArgs(num_classes=len(films.classes), image_size=config.image_size),
            input=InputSpec(image_size=config.image_size), operating_point=point, report=report, other_reports=others,
            training=TrainingRecord(config=config, data_dir=str(data_dir), history=history,
                                    best_epoch=int(np.argmax([h.val_auc for h in history])) + 1,
                                    seconds=round(time.monotonic() - started + run.earlier_seconds, 1),  # all segments
                                    notes=notes, job_id=job_id, run_id=run.run_id,
                                    device=hardware.device.type, precision=hardware.precision,
                                    world_size=hardware.world.world_size, checks_seconds=checks),
            data=DataRecord(train=fingerprint(train_set), validation=fingerprint(val_set)),
            parameters=int(sum(p.numel() for p in model.parameters())), population_check=population_check)
        details = {"job": job_id, "run": run.run_id, "resumed": run.payload is not None,
                   "dataset": audit_label(data_dir), "arch": config.arch, "image_size": config.image_size,
                   "epochs": len(history), "auc": report.auc, "sensitivity": report.sensitivity,
                   "specificity": report.specificity, "n": report.n}

        def saved(stored: ModelRecord) -> None:  # the run's state goes once it is promoted too (forget_run)
            record_action("train", who, model=stored.name, task=stored.task, **details)

        try:
            record = ship_version(model, record, name or f"{record.task}-{config.arch}", directory, make_default, who,
                                  population, after_save=saved)  # PromotionRefused: stored and recorded, not default
        except AuditLogUnavailable as exc:  # the version was withdrawn; the run's state was not forgotten
            raise AuditLogUnavailable(f"{exc} The run's saved state is kept: once the log can be written, resuming the "
                                      "run registers it.") from exc
        except PromotionRefused:  # stored and recorded, not the default: the run has shipped
            forget_run(run, "its version")
            raise
        forget_run(run, record.name)
        emit(DoneEvent(name=record.name, auc=report.auc, seconds=record.training.seconds))
        return record

    try:
        shipped = ship()
    except BaseException as exc:  # every rank past its last epoch waits for this (a review); a version stored but
        hardware.on_any(not isinstance(exc, PromotionRefused))  # not made the default is no failure to the others
        raise
    hardware.on_any(False)
    return shipped


def split_films(data_dir: str | Path, config: TrainConfig, notes: list[str] | None = None,
                recorded: DataRecord | None = None) -> tuple[FilmSet, FilmSet, FilmSet, FilmSet | None]:
    """All films of ``data_dir`` (a class-folder tree, a manifest file or a shipped manifest's name; or the
    configured subset; a split root's ``val/`` included); its patient-disjoint training and validation parts
    (near-duplicates kept on one side; a split root's ``val/`` films added to validation, never to training); and
    the batch a holdout rule keeps out of both (None without ``config.holdout``). ``notes``, when given, receives
    what to say about the split. ``recorded``: a trained version's data record, whose split is rebuilt as it ran
    (val/ by the rule before 2026-12-05, when its fingerprint says so)."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    films, extra_val = training_films(data_dir)
    films = maybe_subset(films, config, split_seed)
    check_film_sizes(films if extra_val is None else films.joined(extra_val))
    held_out, copies = None, 0
    if config.holdout:
        kept, held_out = split_holdout(films, config.holdout)
        kept, copies = without_copies_of(kept, held_out)
    else:
        kept = films
    groups, duplicates = film_groups(kept)
    train_set, val_set = patient_split(kept, config.val_fraction, split_seed, groups)
    theirs, twins = None, 0
    before = (train_set, val_set.joined(extra_val) if extra_val is not None else val_set, held_out)
    if extra_val is not None:  # found by a review: val/ joined unchecked, its patients' train/ films trained on
        if config.holdout:  # val/ films of the held-out batch belong to that batch, not to validation
            rule = holdout_rule(config.holdout)
            held = np.array([rule.held_out(path.name) for path in extra_val.paths], dtype=bool)
            held_val = extra_val.subset(np.flatnonzero(held))
            held_out, extra_val = held_out.joined(held_val), extra_val.subset(np.flatnonzero(~held))
            (train_set, more), (val_set, most) = (without_copies_of(part, held_val) for part in (train_set, val_set))
            copies += more + most  # found by a review: its copies were looked for before val/'s films joined it
        train_set, theirs = with_patients_of(train_set, extra_val)
        train_set, twins = without_copies_of(train_set, extra_val)  # grouping saw train/ alone: a copy of a val/
        # film under another name trained while it validated (found by a review)
        val_set = val_set.joined(theirs).joined(extra_val)
        if recorded is not None and fingerprint(val_set).sha256 != recorded.validation.sha256 \
                and fingerprint(before[1]).sha256 == recorded.validation.sha256:  # trained by the earlier rule
            (train_set, val_set, held_out), theirs, twins = before, None, 0
    if notes is not None:
        notes += [note for note in (duplicates.note(), extra_val and f"validation: the {len(extra_val)} films of "
                                    "val/ joined the patient-disjoint validation split"
                                    + (f", with {len(theirs)} film{'s' * (len(theirs) != 1)} of their patients "
                                       "from train/" if theirs else ""),
                                    twins and f"validation: {twins} film{'s' * (twins != 1)} of train/ left out of "
                                    "training as copies of val/ films",
                                    copies and f"another batch: {copies} film{'s' * (copies != 1)} of the folder "
                                    "left out of training and validation as copies of held-out films") if note]
    # every film the run drew from, val/ included: the other-collection check leaves out copies of these (a review:
    # a collection's copy of a val/ film counted as a film no run had seen)
    return (films if extra_val is None else films.joined(extra_val)), train_set, val_set, held_out


def validate_for_shipping(model: nn.Module, x_val: torch.Tensor, val_set: FilmSet, config: TrainConfig,
                          split: str) -> tuple[OperatingPoint, Report]:
    """Operating point and validation report for exactly the weights that will be stored (float16), in fp32
    on the device the model is on."""
    place_model(model, model_device(model))  # the layout every inference path runs in
    round_to_storage(model)
    model.eval()
    probs = probabilities_in_batches(model, x_val)
    point = choose_operating_point(val_set.labels, probs, val_set.classes, config.target_sensitivity)
    return point, evaluate_probabilities(val_set.labels, probs, val_set.classes, point, seed=config.seed, split=split,
                                         sources=val_set.sources)


def maybe_subset(films: FilmSet, config: TrainConfig, seed: int | None = None) -> FilmSet:
    """A random subset of ``config.max_films`` films keeping each class's share of ``films`` (all without it),
    drawn with ``seed`` (the split seed; default ``config.seed``)."""
    if not config.max_films or config.max_films >= len(films):
        return films
    rng = np.random.default_rng(config.seed if seed is None else seed)
    keep = []
    for label, share in enumerate(films.subset_counts(config.max_films)):  # the class balance of the full set
        keep += rng.choice(np.flatnonzero(films.labels == label), size=share, replace=False).tolist()
    return films.subset(np.sort(np.asarray(keep)))
