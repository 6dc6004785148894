"""Drawing the comparison page: metrics table, ROC curves, confusion matrices, per-class reports, curves, and a
model's reading of a folder (:func:`folder_report`)."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from core.admin.audit import record_action
from core.errors import TriageError, TryAgainLater
from core.films.roots import SHARED_ROOT, folder_label
from core.store.registry import ModelEntry
from core.store.reports import Report
from core.tasks import canonical_class
from dashboard.components.charts import (class_roc_curves, confusion_matrix, roc_curves, training_curves,
                                         travel_intervals)
from dashboard.components.class_figures import (CLASS_FIGURES_NOTE, SOURCE_SHORTCUT, class_curves, class_table,
                                                several_classes, source_table)
from core.wording import fixed, valid_text
from dashboard.components.same_films import films_apart
from dashboard.components.reports import (METRICS_NOTE, SEVERAL_CLASSES_NOTE, data_label, escape_markdown,
                                          films_in_words, metrics_table, operating_points, per_class_table, roc_input,
                                          threshold_value)
from dashboard.components.model_card import ensemble_chosen, threshold_note, validation_caveat
from dashboard.components.paired_view import paired_differences
from dashboard.components.travel_notes import elsewhere_films
from dashboard.components.travel import (VALIDATION, elsewhere_thresholds,
                                         metrics_with_travel, out_of_batch_origin, read_at_another_threshold,
                                         travel_points, travel_reports)
from dashboard.components.travel_notes import shortcuts, travel_text
from dashboard.labels import PATHS_HASHED, without_server_paths

if TYPE_CHECKING:  # torch and scikit-learn: imported only when a folder is evaluated
    from core.evaluation.folder import FolderReading
    from core.evaluation.paired import FilmScores

PER_ROW = 3
POLICY_FILMS = f"{SHARED_ROOT}/films"  # 16 full-resolution films that helped choose the default's policy
POLICY_FILMS_CAVEAT = ("The 16 full-resolution films of shared-data/films already helped choose the default "
                       "model's operating policy, so they are no longer a clean check: read these figures as a "
                       "sanity check, not a measurement.")


def _in_rows(items: list):
    """Groups of at most PER_ROW, so four or more models still get readable columns."""
    for start in range(0, len(items), PER_ROW):
        chunk = items[start: start + PER_ROW]
        yield zip(st.columns(PER_ROW, gap="medium"), chunk)


def record_evaluations(rows: list[tuple[ModelEntry, Report]], folder: str, *, who: str) -> list[ModelEntry]:
    """One audit line per model evaluated on a server folder, with its figures (the folder by its label); the
    models recorded. Those after a line that could not be written are not: a later run records them."""
    label, recorded = data_label(folder), []
    for entry, report in rows:
        try:
            record_action("evaluate-folder", who, model=entry.name, folder=label, n=report.n, auc=report.auc,
                          sensitivity=report.sensitivity, specificity=report.specificity, threshold=report.threshold)
        except TriageError as exc:
            st.warning(f"{exc} The page records it at its next run.", icon=":material/warning:")
            break
        recorded.append(entry)
    return recorded


def policy_films_caveat(folder: str) -> None:
    """Say so when the evaluated folder is, or lies inside, the films that chose the default's policy."""
    label = data_label(folder)
    if label == POLICY_FILMS or label.startswith(POLICY_FILMS + "/"):
        st.info(POLICY_FILMS_CAVEAT, icon=":material/info:")


def _with_count(words: str, n: int) -> str:
    """``words`` with the number of films, unless they already say it."""
    return words if f"{n} films" in words else f"{words} ({n} films)"


SKIPPED_LISTED = 100  # unreadable films listed per model (a resource review: 100,000 junk files, a 13 MB table)


def sources(rows: list[tuple[ModelEntry, Report]]) -> None:
    """Say which films every figure comes from, and warn when they are not the same films for every model."""
    lines = [f"- **{e.name}**: {escape_markdown(_with_count(films_in_words(r), r.n) + threshold_note(e.record))}"
             for e, r in rows]
    st.caption("Figures computed on:\n" + "\n".join(lines))
    apart = films_apart(rows)
    if apart:
        st.warning(apart, icon=":material/warning:")
    if len({frozenset(canonical_class(c) or c for c in entry.classes) for entry, _ in rows}) > 1:  # not spellings
        st.warning("These models were trained on different classes; the ROC curves compare abnormal against "
                   "normal only.", icon=":material/warning:")
    left_out: dict[tuple, tuple[list, list[str]]] = {}  # the same films left out for several models: listed once
    for entry, report in rows:
        if report.skipped:
            same = tuple((s.file, s.error) for s in report.skipped)
            left_out.setdefault(same, (report.skipped, []))[1].append(entry.name)
    for skipped, names in left_out.values():
        who = "every model evaluated" if len(names) == len(rows) > 1 else ", ".join(names)  # not those that failed
        with st.expander(f"{who}: {len(skipped)} file(s) left out: unreadable, not triaged, or copies"):
            st.table([{"file": escape_markdown(without_server_paths(s.file)),  # data-root labels, as text
                       "reason": escape_markdown(without_server_paths(s.error))} for s in skipped[:SKIPPED_LISTED]])
            if len(skipped) > SKIPPED_LISTED:
                st.caption(f"The first {SKIPPED_LISTED} of them are listed.")


# the stored reports' curves, matrices and per-class tables are the validation films' only, while the table above
# them joins other batches' figures: the titles say so (a review found it said only in the caption at the top)
ON_VALIDATION = " on the validation films"


def comparison(rows: list[tuple[ModelEntry, Report]], stored: bool = False,
               films: list[tuple[str, FilmScores | None]] | None = None) -> None:
    """``stored``: the rows are each model's stored validation report, and its other stored reports (another
    batch, a site's films, ...) join the table; figures from a folder stand alone, with the models' paired
    differences when ``films`` gives their readings film by film."""
    st.subheader("Metrics at each model's operating point")
    several = any(several_classes(report) for _, report in rows)
    st.caption(METRICS_NOTE + (SEVERAL_CLASSES_NOTE if several else ""))
    table = metrics_with_travel(rows) if stored else metrics_table(rows)
    st.dataframe(table, key="metrics-table", height=38 + 35 * len(table),  # the other sets' titles are long
                 column_config={"_index": st.column_config.TextColumn("", width="large" if stored else "medium")})
    if stored:
        travel_notes([entry for entry, _ in rows])
    paired_differences(films or [])

    st.subheader(f"ROC curves{ON_VALIDATION if stored else ''}")
    curves = [c for c in (roc_input(entry.name, report) for entry, report in rows) if c]
    # films of both kinds, yet no curve: a report stored before curves were (its reason is not the films)
    uncurved = [entry.name for entry, report in rows if report.roc is None and _both_kinds(report)]
    if uncurved:
        st.caption(f"No ROC curve is stored for {', '.join(uncurved)} (a version from before curves were "
                   "stored); its operating point is in the table above.")
    if curves:
        chart, points = st.columns(2, gap="large")
        chart.plotly_chart(roc_curves(curves, [entry.name for entry, _ in rows]), key="roc-chart")
        with points:
            st.markdown("**Operating points** (the marker on each model's curve, a shape of its own)")
            st.dataframe(operating_points(curves), hide_index=True, key="operating-points")
            recalibrated = [entry.name for entry, _ in rows if entry.record.calibration is not None
                            and entry.record.calibration.folder]
            st.caption("Each model calls a film abnormal, and triages it urgent, when its abnormal score "
                       "1 − p(normal) reaches its threshold, chosen on its validation films"
                       + (f" ({', '.join(recalibrated)}: on a site folder's films, see its card)." if recalibrated
                          else ".")
                       + (" The curve is that score's: any abnormal class against normal." if several else ""))
    elif uncurved:
        pass  # said above
    elif any(report.operating_point.normal_index is not None for _, report in rows):
        st.info("These films are all of one kind (all normal, or all abnormal), so there is no ROC curve: it "
                "needs both. The table's sensitivity or specificity still applies.")
    else:
        st.info("None of these models has a normal class, so there is no abnormal-vs-normal ROC curve.")
    by_class = class_curves([(entry.name, report) for entry, report in rows if several_classes(report)])
    if by_class:
        st.markdown("**Each class against the rest** (one-vs-rest; AUC per class on hover and in the "
                    "per-class report below)")
        st.plotly_chart(class_roc_curves(by_class, [entry.name for entry, _ in rows]), key="class-roc-chart")


def _both_kinds(report: Report) -> bool:
    """Whether ``report``'s films hold normal and abnormal films both (where a curve exists)."""
    normal = report.operating_point.normal_index
    return normal is not None and 0 < report.class_counts[normal] < sum(report.class_counts)


def per_class_view(report: Report):
    """:func:`per_class_table` as drawn: figures to 3 decimals (more where short of 1), a class never called
    without a precision (found by a review: "nan"), a class without films without a recall or F1."""
    def shown(missing: str):
        return lambda value: missing if pd.isna(value) else fixed(value, 3)

    return per_class_table(report).set_index("Class").style.format(
        {"Precision": shown("— (never called)"), "Recall": shown("— (no films)"), "F1": shown("— (no films)")})


def details(rows: list[tuple[ModelEntry, Report]], stored: bool = False) -> None:
    """``stored``: as :func:`comparison`'s; the matrices and tables are then of the validation films alone."""
    st.subheader(f"Confusion matrices{ON_VALIDATION if stored else ''}")
    for group in _in_rows(_matrices(rows)):
        for column, (title, key, matrix, classes) in group:
            column.plotly_chart(confusion_matrix(matrix, classes, title), key=key, config={"displayModeBar": False})

    st.subheader(f"Per-class report{ON_VALIDATION if stored else ''}")
    two = [(entry, report) for entry, report in rows if not several_classes(report)]
    for group in _in_rows(two):
        for column, (entry, report) in group:
            column.markdown(f"**{entry.name}**")
            column.table(per_class_view(report))
    several = [(entry, report) for entry, report in rows if several_classes(report)]
    if several:
        st.caption(CLASS_FIGURES_NOTE)
    for entry, report in several:  # seven columns: one model per row
        st.markdown(f"**{entry.name}**")
        st.table(class_table(report))
    by_source = [(entry, table) for entry, report in rows if (table := source_table(report)) is not None]
    if by_source:
        st.subheader("Figures per source")
        st.caption(SOURCE_SHORTCUT)
        for entry, table in by_source:
            st.markdown(f"**{entry.name}**")
            st.table(table.rename(index=escape_markdown))  # sources are folder names: plain text

    st.subheader("Training curves")
    histories = {entry.name: entry.record.training.history for entry, _ in rows
                 if entry.record.training and entry.record.training.history}
    if histories:
        st.plotly_chart(training_curves(histories, [entry.name for entry, _ in rows]), key="training-curves")
        without = [entry.name for entry, _ in rows if entry.name not in histories]
        if without:  # found in a browser audit: the default ensemble was simply missing from the chart
            st.caption(f"No training curves for {', '.join(without)}: no history recorded (an ensemble is made of "
                       "networks trained before it and keeps no curve of its own; a model trained before curves were "
                       "kept has none).")
    else:
        st.info("These models carry no training history.")


def _matrices(rows: list[tuple[ModelEntry, Report]]) -> list[tuple[str, str, list[list[int]], list[str]]]:
    """(title, chart key, matrix, classes) per chart: the operating point's matrix per model and, with more
    than two classes, the matrix by the most probable class beside it."""
    charts = []
    for entry, report in rows:
        matrix = report.at_operating_point.confusion_matrix
        if not matrix:
            continue
        if not several_classes(report):
            charts.append((entry.name, f"confusion-{entry.name}", matrix, report.classes))
            continue
        charts.append((f"{entry.name}: operating point", f"confusion-{entry.name}", matrix, report.classes))
        if report.at_argmax is not None:
            charts.append((f"{entry.name}: most probable class", f"confusion-argmax-{entry.name}",
                           report.at_argmax.confusion_matrix, report.classes))
    return charts


def travel_notes(entries: list[ModelEntry]) -> None:
    """Below the metrics table: why internal validation is not enough, which films the other rows are, which
    weights and threshold they describe, and their intervals drawn."""
    st.markdown("**How the promise travels.** " + travel_text([entry.record for entry in entries]))
    lines = []
    for entry in entries:
        lines += [f"- **{entry.name}**: {escape_markdown(films_in_words(report))}"
                  for title, report in travel_reports(entry.record).items() if title != VALIDATION]
        if "out-of-batch" not in entry.record.other_reports:
            lines.append(f"- **{entry.name}**: not measured on another batch")
        notes = [out_of_batch_origin(entry.record), *elsewhere_thresholds(entry.record)]
        elsewhere = read_at_another_threshold(entry.record)
        if elsewhere:
            notes.append(f"{', '.join(elsewhere)}: read at an earlier threshold (before recalibration), not at "
                         f"this version's {threshold_value(entry.record.operating_point.threshold)}.")
        lines += [f"- **{entry.name}**: {note}" for note in notes + shortcuts(entry.record) if note]
        caveat = validation_caveat(entry.record).strip()  # the card's words for the same figures (a review)
        lines += [f"- **{entry.name}**, internal validation: {caveat}"] if caveat else []
        if entry.record.members and "out-of-batch" in entry.record.other_reports:
            lines.append(f"- **{entry.name}**: {ensemble_chosen(entry.record)}")
    lines += [f"- {films}" for films in elsewhere_films([entry.record for entry in entries])]
    st.caption("Which films:\n" + "\n".join(lines))
    points = travel_points(entries)
    if any(p.films != VALIDATION for p in points):
        st.plotly_chart(travel_intervals(points, [entry.name for entry in entries]), key="travel-chart")


@st.cache_data(max_entries=32, ttl=timedelta(hours=12), show_spinner=False, hash_funcs=PATHS_HASHED)
def folder_report(name: str, weights_sha256: str, json_path: str, folder: str, stamp: str,
                  operating_point: str = "", population: str = "", detector: str = "") -> FolderReading:
    """Metrics of one model on a user's folder, with a progress bar; the same request again is instant.
    ``operating_point``, ``population`` (their JSON) and ``detector`` (the chest-film detector's file stamps) only
    key the cache: a version saved again with the same weights and another threshold was shown at the old one for
    twelve hours (a review), as a refitted population check, or a reading made while the detector could not be
    loaded, would have been (re-reads).

    The model is loaded privately here, so a long evaluation never holds the lock of the shared predictor.
    """
    try:
        shown = valid_text(folder_label(folder))  # a data root's label, never the server path; escaped if not UTF-8
    except TriageError:  # outside the roots, or their list unreadable: evaluate_folder says which
        shown = "the chosen folder"
    bar = st.progress(0.0, text=f"Evaluating {name} on {shown}…")

    def on_progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 50) == 0:  # ~50 updates, however large the folder
            bar.progress(done / total, text=f"Evaluating {name}: {done} of {total} films")

    from core.evaluation.folder import read_folder  # torch: only when a folder is evaluated
    from core.store.checkpoints import load_checkpoint

    try:
        loaded = load_checkpoint(Path(json_path))
        point = loaded.record.operating_point.model_dump_json()
        if loaded.record.weights_sha256 != weights_sha256 or (operating_point and point != operating_point):
            # saved again since the page listed it: read, cached and audited under the listing's key, it would be
            # the listed version's figures at another threshold (a concurrency review), as Triage refuses too
            raise TryAgainLater(f"Model {name} was saved again while the page read it.")
        return read_folder(loaded, folder, on_progress=on_progress)
    finally:
        bar.empty()
