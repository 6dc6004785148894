"""Re-choose a model's operating point without retraining: on its own validation films, or on a site's own.

A site that wants a different sensitivity target (or a model trained under an older policy) gets a new
version with the same weights, a threshold chosen by the same rule (core.training.operating_point) and fresh
reports. Versions stay immutable: the app caches models and results per version.

Where the threshold is chosen (``Calibration.source``):

- ``validation``: the patient-disjoint validation split, rebuilt from the training record (data folder,
  validation fraction, seeds, subset, holdout) and required to hash to the fingerprint stored at training
  time; otherwise the films differ and the choice could include training films, so it is refused.
- ``site folder``: a labelled class-folder tree of the site (core.training.site_folder), named by its data-root
  label, with at least the promotion floor's films per class. The version records the folder's label and
  fingerprint. The operating point's ``validation_sensitivity``/``validation_specificity`` are then the figures
  on the site films it was chosen on, and its policy says so.

Which report says what, in both modes (chosen so that a clinician compares like with like): ``report`` stays
the internal validation, re-read at the new threshold, so a calibrated version's card and the promotion floor
still speak of the same films as every other version's; ``other_reports["site"]`` is the site films read at
the new threshold (its sensitivity is met by construction: the threshold was chosen on them); every other
entry of ``other_reports`` (the out-of-batch holdout, the tighter-framing check) is recomputed at the new
threshold, and entries that cannot be recomputed (a previous calibration's site films, another run's
other-batch figures lent by ``other-batch --from``, a withdrawn report such as ``adults``) are dropped rather
than kept at a threshold the version no longer uses. Either mode therefore needs the training folder to re-read
validation. Figures others measured (``measured_elsewhere``) cannot be re-read: they stay, at the threshold they
were read at (the previous version's where none was reported), while the weights are stored unchanged, and go
when storing rounds them.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from core.admin.audit import ensure_writable, record_action
from core.errors import CalibrationError, DatasetError, DeviceOutOfMemory, FolderNotAllowed
from core.films.folders import FilmSet
from core.films.manifest import find_manifest, recorded_source
from core.films.roots import folder_label
from core.films.tensor import load_tensors
from core.models.device import model_device, place_model, resolve_device, to_device
from core.store.checkpoints import kept_when_stored, load_checkpoint
from core.store.promotion import SITE_CHOSEN, SITE_FOLDER, SITE_REPORT, promote
from core.store.records import Calibration, MeasuredElsewhere, ModelRecord, TrainConfig
from core.store.registry import checkpoint_dir, find_model
from core.store.writable import ensure_models_writable
from core.store.reports import OperatingPoint, Report
from core.tasks import task_name
from core.training.data import fingerprint
from core.films.copies import copies_in_detail
from core.training.holdout import holdout_rule
from core.training.other_collection import collection_films
from core.training.other_reports import other_reports, report_on
from core.training.shipping import ship_version
from core.training.site_folder import SiteFolder, distinct_films, hide_path, read_site_folder, triaged_films
from core.training.train import split_films, validate_for_shipping

_VERSION = re.compile(r"-v\d+$")
SITE = SITE_REPORT  # the key of the site films' report in other_reports
VALIDATION = "validation"


def calibrate(
    name: str | None, target_sensitivity: float, data_dir: str | Path | None = None,
    directory: Path | None = None, make_default: bool = False, device: str = "auto", who: str = "cli",
    site_folder: str | Path | None = None,
) -> ModelRecord:
    """Register ``<base>-vN+1``: the weights of ``name`` with a threshold for ``target_sensitivity``, chosen on
    its validation films or, with ``site_folder`` (a data-root label, or a folder inside a data root), on the
    site's labelled films; the films run on ``device`` (in fp32, as at training). The calibration is written to
    the audit log as done by ``who``; ``make_default`` goes through the promotion floor (PromotionRefused: the
    new version stays registered, not the default)."""
    directory = directory or checkpoint_dir()
    ensure_writable()  # before minutes of work: a version is registered only where that can be recorded
    ensure_models_writable(directory)  # and only where it can be written
    where = resolve_device(device)
    try:
        return _calibrate(name, target_sensitivity, data_dir, directory, make_default, where, who, site_folder)
    except torch.OutOfMemoryError as exc:  # a GPU a training job fills: in words, never a traceback on the page
        gpu = "The GPU" if where.type == "cuda" else "This computer"
        raise DeviceOutOfMemory(f"{gpu} ran out of memory while calibrating; another job may be using it. Nothing "
                                "was registered: try again once it is free.", command_step="nvidia-smi shows which "
                                "job; or calibrate on the CPU (--device cpu).") from exc


def _calibrate(name: str | None, target_sensitivity: float, data_dir: str | Path | None, directory: Path,
               make_default: bool, where: torch.device, who: str, site_folder: str | Path | None) -> ModelRecord:
    loaded = load_checkpoint(find_model(name, directory).json_path)
    record = loaded.record
    if record.operating_point.normal_class is None:  # the page offers none such; the CLI registered a copy of the
        # same reading, with an audit line for a target nothing met (a review)
        raise CalibrationError(f"{record.name} has no normal class, so it has no threshold to choose: it reads "
                               "every film by its most probable class. Nothing was registered.")
    site = read_site_folder(site_folder, record.classes, record.task) if site_folder is not None else None
    val_set, held_out, training_folder = recorded_split(record, data_dir)
    if site is not None:
        _refuse_own_films(site, record.name, training_folder, val_set, held_out)
        site = distinct_films(triaged_films(site, record.task), record.task)
    config = _config(record, target_sensitivity)
    elsewhere = _measured_elsewhere(record, loaded.model)  # before the model runs: its tensors as loaded
    model = place_model(loaded.model, where)  # older checkpoints were float32; the new version is float16
    split = record.report.split if record.report else f"validation: {len(val_set)} films"
    if site is None:
        films = to_device(load_tensors(val_set, loaded.image_size), where)
        point, report = validate_for_shipping(model, films, val_set, config, split)
        chosen_on = {}
    else:
        point, site_report = _choose_on_site(model, site, loaded.image_size, config)
        report = report_on(model, val_set, loaded.image_size, point, split, config.seed)
        chosen_on = {SITE: site_report}
    holdout = holdout_rule(config.holdout).description if held_out is not None else ""
    # a site folder drawn from the other collection: its reports (and the range at a new site) would be read on
    # the very films the threshold was chosen on (a review), so they are left out
    collection = training_folder if site is None or not _shares_collection(site) else None
    others = {**other_reports(model, held_out, holdout, loaded.image_size, point, config.seed, validation=val_set,
                              training_folder=collection),
              **chosen_on}
    previous = record.operating_point
    calibrated = record.model_copy(update={
        "operating_point": point, "report": report, "other_reports": others,
        "calibration": _calibration(loaded.name, previous, target_sensitivity, site),
        "holdout_run": None,  # another run's other-batch figures were read at that run's threshold, not this one's
        "measured_elsewhere": elsewhere,
        # a version copied without its check's file is loaded without it (core.store.checkpoints): so is this one,
        # not a record naming a check it cannot save (a ValueError after minutes of work: a review)
        "population_check": record.population_check if loaded.population is not None else None,
    })
    stored = ship_version(  # same weights, same training films: same population; no audit entry, no version
        model, calibrated, _VERSION.sub("", loaded.name), directory, who=who, population=loaded.population,
        after_save=lambda stored: record_action(
            "calibrate", who, model=stored.name, from_model=loaded.name, task=stored.task,
            target_sensitivity=target_sensitivity, previous_threshold=previous.threshold, threshold=point.threshold,
            sensitivity=report.sensitivity, specificity=report.specificity, n=report.n,
            **_source_details(site, others.get(SITE))))
    if make_default:
        promote(stored.name, who=who, directory=directory)
    return stored


def _config(record: ModelRecord, target_sensitivity: float) -> TrainConfig:
    try:
        stored = record.training.config  # resolved when it was trained: what it was trained with stays
        return stored.model_copy(update={"target_sensitivity": target_sensitivity}).resolved().model_copy(
            update={"pretrained": stored.pretrained})
    except ValueError as exc:
        raise CalibrationError(str(exc)) from exc


def _measured_elsewhere(record: ModelRecord, model) -> tuple[MeasuredElsewhere, ...]:
    """Others' figures that still describe the new version, each with the threshold it was read at: none when
    storing the weights again rounds them (an older float32 checkpoint: other weights than the ones measured);
    an entry that reported no threshold was read at the previous version's, so the card and Compare say so."""
    if not kept_when_stored(model):
        return ()
    previous = record.operating_point.threshold
    return tuple(m if m.threshold is not None else m.model_copy(update={"threshold": previous})
                 for m in record.measured_elsewhere)


def _refuse_own_films(site: SiteFolder, name: str, *own: FilmSet | None) -> None:
    """A threshold chosen on films the model trained, was validated or was measured on would be read again, on
    them, as if they were unseen (its validation and other-batch reports): refuse a site folder holding any of
    them, by place, by content (a copied film) or as a near-duplicate (the same film at another contrast or size,
    or cropped by a few per cent: the split's rule, confirmed in detail, core.films.copies). A film cropped by 5 % a
    side, mirrored, rotated or inverted is not recognised (measured by a review): the check cannot promise those."""
    places = {path.resolve() for films in own if films is not None for path in films.paths}
    shared = np.array([path.resolve() in places for path in site.films.paths], dtype=bool)
    if not shared.any():  # a byte-for-byte copy is a near-duplicate too (hash distance 0, correlation 1)
        originals = tuple(sorted(places))
        shared = copies_in_detail(site.films, FilmSet(originals, np.zeros(len(originals), np.int64), ("film",)))
    if shared.any():
        raise CalibrationError(f"{int(shared.sum())} of the {len(site.films)} films in {site.label} are {name}'s own "
                               f"training, validation or held-out films (or copies of them): "
                               f"{site.named(np.flatnonzero(shared))}. A threshold chosen on them would be reported "
                               "again as if on unseen films. Calibrate on films this model never saw.")


def _shares_collection(site: SiteFolder) -> bool:
    """Whether ``site`` holds films of the other collection (core.training.other_collection), or copies of them."""
    found = collection_films(FilmSet((), np.zeros(0, np.int64), ("film",)))
    if found is None:
        return False
    films = found[0]
    places = {path.resolve() for path in films.paths}
    return any(path.resolve() in places for path in site.films.paths) or bool(copies_in_detail(site.films, films).any())


def _choose_on_site(model, site: SiteFolder, image_size: int, config: TrainConfig) -> tuple[OperatingPoint, Report]:
    """The operating point chosen on the site films by the training rule, and the site films' report at it."""
    films = site.films
    split = f"site folder {site.label}: {len(films)} films ({site.counts_text()}){SITE_CHOSEN}"
    try:
        x = to_device(load_tensors(films, image_size), model_device(model))
    except DatasetError as exc:
        raise hide_path(exc, site.path, site.label) from None
    point, report = validate_for_shipping(model, x, films, config, split)
    if point.normal_index is not None:  # the rule's own words (pooled, or each abnormal class), on the site films
        words = point.policy.replace("validation sensitivity", "sensitivity")
        point = point.model_copy(update={"policy": f"{words} on the site folder {site.label} ({len(films)} films)"})
        report = report.model_copy(update={"operating_point": point})
    return point, report


def _calibration(from_model: str, previous: OperatingPoint, target: float, site: SiteFolder | None) -> Calibration:
    where = {} if site is None else {"source": SITE_FOLDER, "folder": site.label, "films": fingerprint(site.films)}
    return Calibration(from_model=from_model, previous_threshold=previous.threshold,
                       previous_policy=previous.policy, target_sensitivity=target, **where)


def _source_details(site: SiteFolder | None, site_report: Report | None) -> dict:
    """What the audit log keeps about where the threshold was chosen."""
    if site is None:
        return {"source": VALIDATION}
    return {"source": SITE_FOLDER, "site_folder": site.label, "site_films": len(site.films),
            "site_class_counts": dict(zip(site.films.classes, site.films.class_counts())),
            "site_sensitivity": site_report.sensitivity, "site_specificity": site_report.specificity}


def recorded_split(record: ModelRecord,
                   data_dir: str | Path | None = None) -> tuple[FilmSet, FilmSet | None, FilmSet]:
    """(the validation films ``record`` was validated on, the batch its holdout kept out or None, every film its
    run drew from), rebuilt
    from its training record and checked against the stored fingerprint (DatasetError when the films
    changed). The training data is a class-folder tree or a manifest (its name or file). Messages name the
    training folder by its data-root label and a manifest by its name, never a server path."""
    if record.training is None or record.data is None:
        raise CalibrationError(f"{record.name} has no training record to rebuild its validation split from.")
    data_dir_given = data_dir is not None
    source = data_dir or recorded_source(record.training.data_dir)
    manifest = find_manifest(source)
    if manifest is not None:
        data_dir, shown = manifest, f"the {manifest.stem} manifest"
    else:
        data_dir = Path(source)
        shown = folder_shown(data_dir)
        try:  # Python 3.11 raises for a name too long, or a folder above it that cannot be searched
            is_folder, why = data_dir.is_dir(), ""
        except OSError as exc:
            is_folder, why = False, f"cannot be read ({exc.strerror or type(exc).__name__})"
        if not is_folder and data_dir_given:
            raise CalibrationError(f"The folder given for {record.name}'s training films ({shown}) "
                                   f"{why or 'is not a folder on this server'}; name the folder they are in now "
                                   "(command line: --data).")
        if not is_folder:
            raise CalibrationError(f"The training folder of {record.name} ({shown}) {why or 'is not on this server'}; "
                                   "its films are needed to rebuild its validation split. Name the folder it moved to "
                                   "(command line: --data).")  # calibrate, framing-check, ...: not only a threshold
    try:
        films, _, val_set, held_out = split_films(data_dir, record.training.config.resolved(), recorded=record.data)
    except DatasetError as exc:
        raise hide_path(exc, data_dir, shown) from None
    if tuple(films.classes) != tuple(record.classes):  # its classes say what is wrong (a CLI review: another task's
        # folder was told its films were "added, removed or changed")
        whose = "another task's folder" if task_name(films.classes) != record.task else "a class folder added or gone"
        raise DatasetError(f"The classes in {shown} are {', '.join(films.classes)}, not {record.name}'s "
                           f"({', '.join(record.classes)}): {whose}; name {record.name}'s training folder as it was.")
    if fingerprint(val_set).sha256 != record.data.validation.sha256:
        raise DatasetError(f"The validation films in {shown} are not the ones {record.name} was validated "
                           f"on (files added, removed or changed); use the original training folder.")
    return val_set, held_out, films


def recorded_validation_split(record: ModelRecord, data_dir: str | Path | None = None) -> FilmSet:
    """The validation films ``record`` was validated on (see :func:`recorded_split`)."""
    return recorded_split(record, data_dir)[0]


def folder_shown(folder: Path) -> str:
    """A folder as people may see it: its data-root label, or words when it lies outside every root."""
    try:
        return folder_label(folder)
    except FolderNotAllowed:
        return "a folder outside the data roots"
