"""The short model card: what the model was trained on, how it did on validation, and what it is for."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.films.manifest import recorded_source
from core.models.catalog import CATALOG
from core.store.promotion import SITE_REPORT
from core.store.records import NO_POPULATION_CHECK, POPULATION_CHECK_SINCE, ModelRecord
from core.store.registry import ModelEntry
from dashboard.components.class_figures import class_recall_lines, several_classes
from dashboard.components.reports import (architecture_title, chosen_on, code_span, escape_markdown, films_in_words,
                                          percent, target_percent, threshold_value, with_interval)
from dashboard.components.travel_notes import elsewhere_films
from dashboard.components.travel import (SHORT_TITLES, elsewhere_summaries, line_summaries,
                                         other_reports_in_order, out_of_batch_origin, read_at_another_threshold,
                                         site_range_line, travel_table)
from dashboard.components.travel_notes import new_site_caution, not_on_the_official_test, shortcuts, travel_text
from dashboard.components.task_choice import title_of
from dashboard.labels import source_label

INTENDED_USE = (
    "**Intended use.** A research and triage aid: it orders a worklist so that films which look abnormal are "
    "read first. It is **not a diagnosis**; a clinician reads every film. It has only been validated on films "
    "like its training data (its population, above); other populations, lateral films, other devices and sites "
    "may do worse."
)


def _class_counts(counts: dict) -> str:
    return ", ".join(f"{n} {name.lower()}" for name, n in counts.items())


def _training_source(data_dir: str | Path) -> str:
    """The training folder by its data-root label (never a server path nor any of its folders' names: a folder
    outside the roots may be named after a patient), or a manifest by name."""
    source = recorded_source(data_dir)
    if not source:
        return "unknown folder"
    if Path(source).suffix == ".toml" or not Path(source).is_absolute():  # a file, or a shipped manifest's name
        return f"{Path(source).stem} manifest"
    return source_label(source)


def model_card(entry: ModelEntry) -> None:
    record = entry.record
    report, training, data = record.report, record.training, record.data
    st.markdown(f"**{entry.name}**" + ("  \n:primary-badge[default model]" if entry.is_default else ""))
    st.caption(f"Task {title_of(entry.task)} · {architecture_title(entry)} · input {record.image_size} "
               f"px · classes {', '.join(entry.classes)} · created {(record.created or 'unknown')[:10]}")
    if data is not None:
        folder = _training_source(training.data_dir if training else "")
        st.markdown(f"**Training data.** {data.train.n} films ({_class_counts(data.train.class_counts)}) "
                    f"from {code_span(folder)}; validated on {data.validation.n} films kept out of training "
                    f"({_kept_apart(report)}; copies of a film kept together).")
    if report is not None:
        figures = report.at_operating_point
        several = several_classes(report)
        lines = [f"- AUC{' (macro, one-vs-rest)' if several else ''} "
                 f"{with_interval(report.auc, report.auc_ci, as_percent=False)}"]
        normal_name = report.classes[report.operating_point.normal_index] if several and \
            report.operating_point.normal_index is not None else None
        if normal_name in (report.class_auc or {}):  # the macro figure is not the score triage reads (a review)
            score_ci = (report.class_auc_ci or {}).get(normal_name)
            lines.append("- AUC of the abnormal score 1 − p(normal), which triage reads: "
                         f"{with_interval(report.class_auc[normal_name], score_ci, as_percent=False)}")
        abnormal, normal = films_behind(report)
        for title, value, interval, films in (("Sensitivity", figures.sensitivity, figures.sensitivity_ci, abnormal),
                                              ("Specificity", figures.specificity, figures.specificity_ci, normal),
                                              ("Accuracy", figures.accuracy, figures.accuracy_ci, None)):
            if value is not None:
                lines.append(f"- {title} {with_interval(value, interval)}" + (f", of {films}" if films else ""))
        st.markdown(new_site_caution(record))
        st.markdown(f"**Validation** ({report.n} films, 95 % intervals):{validation_caveat(record)}\n"
                    + "\n".join(lines))
        if several:
            st.markdown("**Per class on validation**, at the threshold (95 % intervals):\n"
                        + "\n".join(class_recall_lines(report)))
    if (ensemble := ensemble_line(record)) is not None:
        st.markdown(ensemble)
    if report is not None:
        _how_the_promise_travels(record)
    st.markdown(operating_point_text(record))
    st.markdown(population_check_text(entry))
    for shortcut in shortcuts(record):
        st.warning(f"**Shortcut.** {shortcut}", icon=":material/warning:")
    st.caption(INTENDED_USE)


# Found by a review: the same films that measure a model also chose it, and the card said so only in part.
ENSEMBLE_CHOSEN = ("An ensemble is chosen over its members and other candidates on the shift checks (other batch, "
                   "other collection, tighter framing), the same films that measure it there: read its figures on "
                   "them as a little high.")
TARGET_CHOSEN = (" Its sensitivity target, the project's 96 % for pneumonia, was itself set after reading those checks "
                 "and earlier models' official Kermany test figures.")  # an out-of-batch review


def ensemble_chosen(record: ModelRecord) -> str:
    """:data:`ENSEMBLE_CHOSEN`, and for a pneumonia version at the project's 96 % target how that target was set
    (a re-read: said of every ensemble, the sentence described another model on most cards)."""
    target = record.operating_point.target_sensitivity
    pneumonia = {"NORMAL", "PNEUMONIA"} <= set(record.classes) and target is not None and abs(target - 0.96) < 1e-9
    return ENSEMBLE_CHOSEN + (TARGET_CHOSEN if pneumonia else "")


def validation_caveat(record: ModelRecord) -> str:
    """What the validation films did besides measuring: chose the threshold (sensitivity met by design) and
    the epoch whose weights were kept (every figure a little high); "" when neither."""
    report, words = record.report, ""
    if _chosen_where(record) == "validation" and report is not None \
            and report.operating_point.target_sensitivity is not None:
        words += (" The threshold was chosen on these films to reach the sensitivity target, so their sensitivity "
                  "meets it by design: it is not a check.")
    if record.training is not None and (len(record.training.history) > 1 or record.members):
        words += (" They also chose which epoch's weights were kept (the best validation AUC), so every figure here "
                  "reads a little high.")
    if report is not None and "film by film" in (report.split or ""):  # core.training.data.split_words
        words += (" The training films' names carry no patient, so one patient's films (a follow-up, a second view) "
                  "can sit on both sides of the split, and every figure here may read high.")
    return words


def _kept_apart(report) -> str:
    """How the validation films were kept apart: by patient, or film by film where the names carry none (a browser
    review: "by patient where file names carry one" stood above "The training films' names carry no patient")."""
    split = report.split or "" if report is not None else ""
    if "its names carry no patient" in split:  # core.training.data.split_words; a mixed split says both (a re-read)
        return "film by film: the names carry no patient"
    return "by patient where file names carry one" + (", film by film for the rest" if "film by film" in split else "")


def films_behind(report) -> tuple[str | None, str | None]:
    """The films behind sensitivity and specificity, in words (None without a normal class)."""
    normal = report.operating_point.normal_index
    if normal is None:
        return None, None
    counts = report.class_counts
    return (f"{sum(counts) - counts[normal]} abnormal films",
            f"{counts[normal]} {report.classes[normal].lower()} films")


def ensemble_line(record: ModelRecord) -> str | None:
    """An ensemble's networks and how they are combined, in words; None for a single network."""
    if not record.members:
        return None
    titles = [CATALOG[m.arch].title if m.arch in CATALOG else m.arch for m in record.members]
    counted = ", ".join(f"{titles.count(t)} × {t}" if titles.count(t) > 1 else t for t in dict.fromkeys(titles))
    explained = all(CATALOG[m.arch].explainable if m.arch in CATALOG else False for m in record.members)
    # as core.serving.predict draws it (it once said "the mean of the members' maps": a review)
    cam = ("its Grad-CAM map is the members' maps, each weighted by its probability for the class (EigenCAM's, "
           "which explains no class, equally)" if explained else
           "no Grad-CAM map: a member weighs the film's pixels directly, with no image features to map, and a map "
           "of the others would not show where the ensemble looked")
    return (f"**Ensemble** of {len(record.members)} networks ({counted}): the mean of their probabilities, one "
            f"operating point; {cam}.")


def operating_point_text(record: ModelRecord) -> str:
    """The card's sentence on when a film is urgent, the target it was chosen for and on which films."""
    point = record.operating_point
    if point.normal_class is None:
        return "**Operating point.** None: this model has no normal class, so it cannot set priorities."
    short = point.too_few_films()
    too_few = (f" On {', '.join(f'{n} {name}' for name, n in short.items())} films this target cannot be told "
               f"from 100 %{' with a film to spare' if point.spare_films else ''}: every one of them is flagged."
               if short else "")
    return (f"**Operating point.** Urgent when 1 − p({point.normal_class}) ≥ {threshold_value(point.threshold)}, "
            f"chosen for ≥ {target_percent(point.target_sensitivity)} sensitivity on {_chosen_where(record)}"
            + (f", for each abnormal class on its own with {point.spare_films} film(s) to spare."
               if point.spare_films else ".") + too_few + recalibration_origin(record))


def _chosen_where(record: ModelRecord) -> str:
    """The films the threshold was chosen on: validation, or a site folder for a version recalibrated there."""
    calibration = record.calibration
    if calibration is None or not calibration.folder:
        return "validation"
    site = record.other_reports.get(SITE_REPORT)  # how many, and the interval that many leave (a review)
    if site is None:
        return "the site folder's films"
    there = with_interval(site.sensitivity, site.sensitivity_ci)
    return f"the site folder's {site.n} films (sensitivity there {there})"


def threshold_note(record: ModelRecord) -> str:
    """Beside the films a version's figures are read on, where its threshold was chosen when not on its validation
    (a browser review: Compare read a site-calibrated version's validation at the site's threshold without a word)."""
    where = _chosen_where(record)
    return "" if where == "validation" else f"; at a threshold chosen on {where}"


def recalibration_origin(record: ModelRecord) -> str:
    """Where a recalibrated version's threshold came from, as a sentence ("" for a trained version)."""
    calibration = record.calibration
    if calibration is None:
        return ""
    previous = calibration.previous_threshold
    before = f" (threshold {threshold_value(previous)})" if previous is not None else ""
    return f" Re-chosen from {calibration.from_model}{before} with the same weights, on {chosen_on(calibration)}."


def population_check_text(entry: ModelEntry) -> str:
    """What population the model knows, and how often films from it are warned anyway (core.serving.population)."""
    record = entry.record
    check = record.population_check
    if check is None:
        return f"**Population check.** Not checked: {_why_no_population_check(record)}."
    if entry.population_missing:  # a site copy of the usual pair: served without it (core.store.checkpoints)
        return (f"**Population check.** Not checked: its file ({check.file}) is missing from the models folder, so "
                "films unlike its training films get no warning. An administrator can copy the file back, or fit "
                f"the check again on the server (`python -m core fit-population {record.name}`).")
    return (f"**Population check.** It knows {check.population} (fitted on {check.fitted_on} of its training "
            f"films). A film unlike them keeps its priority and is shown with a warning. Its warning threshold was "
            f"set on {check.validation_films} of its validation films (the same population) to warn about "
            f"{percent(1 - check.quantile, 0)} of them: a film of that very population is warned now and then.")


def _why_no_population_check(record: ModelRecord) -> str:
    """Why a version has no population check, as its record says: the note training left when fitting failed,
    or its age; else no reason (one is only given where the record holds it)."""
    unwarned = "films unlike its training films get no warning"
    note = next((n for n in (record.training.notes if record.training else ()) if n.startswith(NO_POPULATION_CHECK)),
                None)
    if note is not None:
        return f"{unwarned}. {note}"
    if (record.created or "") < POPULATION_CHECK_SINCE:  # no date: older still
        return f"this version has none (trained before the check existed), so {unwarned}"
    return f"this version has none, so {unwarned}"


def _how_the_promise_travels(record: ModelRecord) -> None:
    """Internal validation beside another batch (and a site's own films after recalibration), at the shipped
    operating point, each with its 95 % interval; a check that never ran is shown as not measured."""
    lent = record.holdout_run is not None and "out-of-batch" in record.other_reports
    st.markdown("**How the promise travels**: films (n), AUC, sensitivity and specificity at the operating "
                "point below, with 95 % intervals" + (
                    f"; the other batch at the threshold of the run that held it out, "
                    f"{threshold_value(record.other_reports['out-of-batch'].threshold)}" if lent else ""))
    st.table(travel_table(record))
    spans = site_range_line(record)  # first: what a new site may see
    for summary in [*([spans] if spans else []), *line_summaries(record), *elsewhere_summaries(record)]:
        st.markdown(summary)  # lines, not columns: the sidebar has no room for more
    notes = [travel_text([record]), *filter(None, [not_on_the_official_test(record)])]
    if "out-of-batch" not in record.other_reports:
        notes.append(not_measured_elsewhere(record))
    origin = out_of_batch_origin(record)
    if origin:
        notes.append(origin)
    if record.members and "out-of-batch" in record.other_reports:
        notes.append(ensemble_chosen(record))
    notes += elsewhere_films([record])
    elsewhere = read_at_another_threshold(record)
    if elsewhere:
        notes.append(f"{', '.join(elsewhere)}: read at an earlier threshold (before recalibration), not at this "
                     f"version's {threshold_value(record.operating_point.threshold)}.")
    st.markdown("  \n".join(notes))
    which = [f"{SHORT_TITLES.get(title, title)}: "
             f"{escape_markdown(films_in_words(report).removeprefix(f'{key}: '))}."
             for key, title, report in other_reports_in_order(record)]
    if which:
        st.caption("Which films. " + " ".join(which))


def not_measured_elsewhere(record) -> str:
    """Why a version has no other-batch figures: the only holdout rule reads the Kermany pneumonia set's file names
    (core.training.holdout), so another task's films have no batch to hold out (a review: the COVID-19 cards said
    "trained before that check, or without a holdout", as if the check had been skipped)."""
    if record.task != "pneumonia":
        return ("This version was **not measured on another batch**: its films' names carry no acquisition batch "
                "to hold out (the one holdout rule reads the Kermany pneumonia films' names), so only a site's own "
                "labelled films can show how its promise travels.")
    return "This version was **not measured on another batch** (trained before that check, or without a holdout)."
