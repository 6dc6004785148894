"""The promotion floor: the one way a version becomes its task's default.

A default triages every clinician's films, so it must have shown, on enough films, that it finds what it is
there to find: at least ``promotion_min_films`` validation films of EACH class (per task where the task's
set is small, core.config) and an operating point that promises, and on validation reaches, at least
``promotion_min_sensitivity``. The CLI (``train/calibrate --set-default``, ``set-default``), the app and a
task's first model all come through here; shipping with ``make models`` may override the floor explicitly,
and every change of default, override or refusal is written to the audit log (core.admin.audit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from core.admin.audit import ensure_writable, record_action
from core.config import settings
from core.errors import AuditLogUnavailable, PromotionRefused
from core.store.atomic import atomic_write_bytes
from core.store.base import MAX_RECORD_BYTES, read_regular_file
from core.store.manifest import REGISTRY_FILE
from core.store.records import ModelRecord
from core.store.reports import Report
from core.store.registry import (ModelEntry, ensure_default, find_model, list_models, registry_lock, set_default,
                                 site_dir)
from core.store.writable import ensure_models_writable
from core.stop_signals import stops_held
from core.tasks import find_normal_index, task_name


# other_reports' entry of the site films a version's threshold was chosen on, and its Calibration.source (calibrate)
SITE_REPORT, SITE_FOLDER = "site", "site folder"
# how a site report's split ends (core.training.calibrate): the page, which says so already, shows the rest
SITE_CHOSEN = "; the threshold was chosen on these films, so the sensitivity target is met here by construction"


@dataclass(frozen=True)
class Floor:
    min_films: int  # validation films of each class
    min_sensitivity: float


def floor_for(task: str) -> Floor:
    """The floor a version of ``task`` must clear (core.config: a per-task minimum, else the global one)."""
    current = settings()
    films = dict(current.promotion_min_films_by_task).get(task, current.promotion_min_films)
    return Floor(min_films=int(films), min_sensitivity=float(current.promotion_min_sensitivity))


def check_promotion(entry: ModelEntry) -> list[str]:
    """Why ``entry`` may not become its task's default, in words; an empty list when it may."""
    return refusal(entry)[0]


def refusal(entry: ModelEntry) -> tuple[list[str], str]:
    """:func:`check_promotion`'s reasons and what to train instead ("" when ``entry`` may become the default):
    the words the CLI's refusal and the Retrain page both show."""
    refusals = _refusals(entry)
    advice = _what_to_do({kind for kind, _ in refusals}, _site_report(entry.record) is not None)
    return [words for _, words in refusals], advice if refusals else ""


def _site_report(record: ModelRecord) -> Report | None:
    """The report of the site films a site-calibrated version's threshold was chosen on: what its operating point
    promises, so what the floor reads (a review: a version at 95.8 % on 55 site films was refused for its internal
    validation's 94.57 % at the site's threshold, and told to train again); None for any other version."""
    if record.calibration is None or record.calibration.source != SITE_FOLDER:
        return None
    return record.other_reports.get(SITE_REPORT)


# What to train instead, by the kind of refusal (in this order when several apply).
ADVICE = {"films": "on more films", "normal": "on a folder with a normal class",
          "sensitivity": "with a higher sensitivity target"}


def _refusals(entry: ModelEntry) -> list[tuple[str, str]]:
    """(kind, words) for each reason ``entry`` falls below its task's floor; kinds are ADVICE's keys or "report"."""
    record, floor = entry.record, floor_for(entry.task)
    site = _site_report(record)
    report, point = site or record.report, record.operating_point
    if report is None:
        return [("report", "it has no validation report, so nothing shows how it performs")]
    reasons = _too_few(report.classes, report.class_counts, floor, "holds", "site folder" if site else "validation")
    wanted = _percent(floor.min_sensitivity)
    if point.normal_index is None:
        reasons.append(("normal", f"it has no normal class, so its operating point promises no sensitivity "
                                  f"(a default must promise at least {wanted})"))
        return reasons
    target = point.target_sensitivity
    if target is None or not math.isfinite(target) or target < floor.min_sensitivity:  # NaN passes any "<"
        promised = (f"{_percent(target)} sensitivity" if target is not None and math.isfinite(target)
                    else "no stated sensitivity")
        reasons.append(("sensitivity", f"its operating point was chosen for {promised}; a default must promise at "
                                       f"least {wanted}"))
    reached = report.sensitivity
    if reached is None or not math.isfinite(reached) or reached < floor.min_sensitivity:
        reached = _percent(reached) if reached is not None and math.isfinite(reached) else "an unknown"
        films = "site films" if site else "validation films"
        reasons.append(("sensitivity", f"it reached {reached} sensitivity on its {films}; a default needs "
                                       f"at least {wanted}"))
    return reasons


def _too_few(classes, counts, floor: Floor, verb: str, films: str = "validation") -> list[tuple[str, str]]:
    """One reason for every class short of films (a browser review: "a default needs at least 20 of each class"
    stood once for each class)."""
    short = [f"{count} {name} film{'s' * (count != 1)}" for name, count in zip(classes, counts)
             if count < floor.min_films]
    listed = ", ".join(short[:-1]) + f" and {short[-1]}" if len(short) > 1 else "".join(short)
    return [("films", f"its {films} {verb} only {listed}; a default needs at least {floor.min_films} of each "
                      "class")] if short else []


def check_before_training(classes: tuple[str, ...], validation_counts: list[int], target_sensitivity: float) -> None:
    """``train --set-default`` refused before it trains where the floor already rules the new version out: too few
    validation films of a class, no normal class or too low a sensitivity target (a review: the refusal came only
    after the whole run). PromotionRefused says why; whether it reaches its sensitivity is known only after."""
    refusals = _ruled_out(classes, validation_counts, target_sensitivity, "would hold")
    if find_normal_index(classes) is None:
        refusals.append(("normal", "it would have no normal class, so its operating point promises no sensitivity"))
    if refusals:
        raise PromotionRefused(f"A version trained on these films cannot become the default model for "
                               f"{task_name(classes)}: {'; '.join(words for _, words in refusals)}. Train "
                               f"{' and '.join(words for kind, words in ADVICE.items() if kind in dict(refusals))}, or "
                               "leave out --set-default (or add --override-floor). Nothing was trained.")


def check_before_calibrating(record: ModelRecord, target_sensitivity: float, site_folder: bool = False) -> None:
    """``calibrate --set-default`` refused before it calibrates where the floor already rules the new version out:
    a target below the floor's sensitivity, or, on its validation films (no site folder, whose films are counted
    only once read), too few of a class (a CLI review: it registered the version, then refused to make it the
    default, as training no longer does)."""
    counts = None if site_folder or record.report is None else record.report.class_counts
    refusals = _ruled_out(record.classes, counts, target_sensitivity, "holds")
    if refusals:
        advice = [words for kind, words in (("sensitivity", "Calibrate for a higher target"), ("films", (
            "Calibrate on a site folder with enough films of each class (--site-folder)"))) if kind in dict(refusals)]
        raise PromotionRefused(f"A version recalibrated from {record.name} cannot become the default model for "
                               f"{record.task}: {'; '.join(words for _, words in refusals)}. "
                               f"{'; or '.join(advice)}, or leave out --set-default (or add --override-floor). "
                               "Nothing was registered.")


def _ruled_out(classes, counts: list[int] | None, target: float, verb: str) -> list[tuple[str, str]]:
    """(kind, words) for what rules a version out before its work: too few validation films of a class in
    ``counts`` (None: not known yet), a sensitivity target below the floor's."""
    floor = floor_for(task_name(classes))
    refusals = _too_few(classes, counts, floor, verb) if counts is not None else []
    if find_normal_index(classes) is not None and target < floor.min_sensitivity:
        refusals.append(("sensitivity", f"its operating point would be chosen for {_percent(target)} sensitivity; "
                                        f"a default must promise at least {_percent(floor.min_sensitivity)}"))
    return refusals


def _what_to_do(kinds: set[str], site: bool = False) -> str:
    """The advice that fits the kinds of refusal: more films (a site calibration's: more site films), a normal
    class, a threshold for a higher sensitivity target, which recalibrating gives with the same weights (a messages
    review: "Train with a higher sensitivity target" sent administrators to hours of training)."""
    if site and kinds <= {"films", "sensitivity"}:
        advice = [words for kind, words in (("films", "on more site films"), ("sensitivity", "for a higher "
                                            "sensitivity target")) if kind in kinds]
        return f"Calibrate again {' and '.join(advice)}, and try again."
    if kinds == {"sensitivity"}:
        return "Recalibrate it for a higher sensitivity target, and try again."
    advice = [words for kind, words in ADVICE.items() if kind in kinds]
    return f"Train {' and '.join(advice)}, and try again." if advice else "Train another version and try again."


def promote(name: str, *, who: str, override: bool = False, directory: Path | None = None) -> None:
    """Make ``name`` its task's default if it clears the floor (or ``override``, recorded as such);
    PromotionRefused says why not. The change is written to the audit log."""
    entry = find_model(name, directory)
    reasons, advice = refusal(entry)
    if reasons and not override:
        try:
            record_action("default.refused", who, model=name, task=entry.task, reasons=reasons, **figures(entry))
        except AuditLogUnavailable:
            pass  # nothing changed: the refusal itself is what the person must see
        raise PromotionRefused(f"{name} cannot become the default model for {entry.task}: {'; '.join(reasons)}. "
                               f"{advice}")
    ensure_writable()  # a default changes only where the change can be recorded: checked first, it costs nothing
    ensure_models_writable(directory)
    from core.store.checkpoints import load_checkpoint  # torch: only where a default changes

    load_checkpoint(entry.json_path)  # CheckpointError: a default that cannot be loaded stops its task's triage
    with stops_held(), registry_lock(directory or site_dir()):  # `train --set-default` promotes after its own hold
        # read under the lock: two promotions at once each named the default before both (a concurrency review)
        previous = _current_default(entry.task, directory)
        before = _registry_bytes(directory)
        set_default(name, directory, held=True)
        _recorded_or_put_back(entry, directory, before, lambda: record_action(
            "default.change", who, model=name, task=entry.task, previous=previous, override=override,
            **({"floor_not_met": reasons} if override else {}), **figures(entry)))


def _registry_bytes(directory: Path | None) -> bytes | None:
    registry_file = (directory or site_dir()) / REGISTRY_FILE
    return read_regular_file(registry_file, MAX_RECORD_BYTES) if registry_file.exists() else None


def _recorded_or_put_back(entry: ModelEntry, directory: Path | None, before: bytes | None, record) -> None:
    """Write the audit line of a change of default just made; when it cannot be written (the log writable when
    checked, then its disk full), put the registry back as it was: a default never changes unrecorded while the
    person is told it did not change. The caller holds the registry lock from reading ``before`` to here, so no
    other change lands in between to be undone with it (a review: ``before`` was read outside the lock)."""
    try:
        record()
    except AuditLogUnavailable as exc:
        registry_file = (directory or site_dir()) / REGISTRY_FILE
        try:
            if before is None:
                registry_file.unlink(missing_ok=True)
            else:
                atomic_write_bytes(registry_file, before)
        except OSError:
            raise AuditLogUnavailable(f"{exc} {entry.name} became the default of {entry.task} without a record, and "
                                      "could not be put back: ask an administrator to check the default.") from exc
        raise AuditLogUnavailable(f"{exc} The change could not be recorded, so the default is unchanged.") from exc


def promote_first(name: str, *, who: str, directory: Path | None = None) -> bool:
    """A task's first version becomes its default, as before the floor, but only if it clears the floor:
    a task whose first versions fall short has no default until one clears it (or an admin overrides).
    True when ``name`` became the default."""
    entry = find_model(name, directory)
    if check_promotion(entry) or entry.is_default:
        return False
    ensure_writable()
    ensure_models_writable(directory)
    with stops_held(), registry_lock(directory or site_dir()):
        if find_model(name, directory).is_default:  # made so meanwhile (two viewers settling one job, a concurrency
            return False  # review: each wrote the change's audit line)
        before = _registry_bytes(directory)
        ensure_default(name, directory, held=True)
        if not find_model(name, directory).is_default:
            return False  # the task already had a default
        _recorded_or_put_back(entry, directory, before, lambda: record_action(
            "default.change", who, model=name, task=entry.task, previous=None, override=False,
            first_of_its_task=True, **figures(entry)))
    return True


def figures(entry: ModelEntry) -> dict:
    """What the audit log keeps about a version at promotion: the figures the floor read (its validation's, or a
    site calibration's site films', said as ``films``: a re-read) and its operating point."""
    site = _site_report(entry.record)
    report, point = site or entry.record.report, entry.record.operating_point
    found = {"threshold": point.threshold, "target_sensitivity": point.target_sensitivity,
             "films": "site films" if site else "validation"}
    if report is not None:
        found.update(n=report.n, class_counts=dict(zip(report.classes, report.class_counts)), auc=report.auc,
                     sensitivity=report.sensitivity, specificity=report.specificity)
    return found


def _current_default(task: str, directory: Path | None) -> str | None:
    entries, _ = list_models(directory)
    return next((e.name for e in entries if e.task == task and e.is_default), None)


def _percent(value: float) -> str:
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + " %"  # 95 %, 95.08 %, 94.96 %: never rounded up to the floor
