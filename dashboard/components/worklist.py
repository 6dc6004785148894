"""The worklist: films in reading order (urgent first, most abnormal first within a priority), as the page's
table and as a CSV for the record; its first column numbers that order, so a table sorted by another column
(the priority sorts by its words) returns to it in one click.

Imports nothing that loads torch (the page draws before the model is up). File names may be hostile: the table
draws them as plain text, and the CSV neutralises cells a spreadsheet would run.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.tasks import find_normal_index
from core.wording import digits_apart
from dashboard.components.reports import spreadsheet_safe
from dashboard.state import FilmResult

URGENT, ROUTINE = "urgent", "routine"  # Prediction.priority's values (core.serving.predict, which loads torch)
NOT_READ, NOT_TRIAGED, UNREADABLE = "not read yet", "not triaged", "unreadable"
ATYPICAL = "routine, atypical"  # called routine on a film unlike what the model reads (Prediction.atypical)
# A film not read yet, or one the model would not triage (not a usable chest film to it), may be urgent: each
# needs a reader before the films the model called routine (a review: not triaged came after every routine one).
# So does a routine call on a film unlike the model's training films: its priority is kept (a missed disease is
# worse than a flagged doubt), but a green "Routine" among the confident ones reassured where the model knows
# least (a review).
# A file that could not be read at all was assessed by nobody: it may be a patient's film the reader must get again,
# so it comes before the films the model called routine too (a review: it came last, after every routine call).
_RANK = {URGENT: 0, NOT_READ: 1, NOT_TRIAGED: 2, UNREADABLE: 3, ATYPICAL: 4, ROUTINE: 5}
READING_ORDER = "Reading order"
FILM_ID = "Film ID"  # the start of the file's content fingerprint (SHA-256), on its card too
LEADING_ABNORMAL = "Leading abnormal class"
BAR_RANGE = (0.0001, 0.9999)  # what a probability bar shows at most and at least: "99.99%", never "100%" or "0%"
BAR_HELP = " Shown between 0.01 % and 99.99 %: no output is a certainty; the card gives it to more decimals."
BADGES = {URGENT: ("Urgent", "red", ":material/priority_high:"), ROUTINE: ("Routine", "green", ":material/check:"),
          NOT_READ: ("Not read yet", "orange", ":material/hourglass_empty:"),
          NOT_TRIAGED: ("Not triaged", "gray", ":material/help:"),
          ATYPICAL: ("Routine, atypical film", "orange", ":material/help:"),
          UNREADABLE: ("Unreadable", "gray", ":material/block:")}  # label, colour, icon


def status_of(result: FilmResult) -> str:
    if result.error:  # a film the busy server has not read yet is no unreadable file
        return NOT_READ if result.retry else UNREADABLE
    if result.prediction.priority == ROUTINE and result.prediction.atypical:
        return ATYPICAL
    return result.prediction.priority or NOT_TRIAGED


def worklist_key(result: FilmResult) -> tuple[int, float]:
    """Urgent first, then films not read yet, films not triaged, files that could not be read and routine calls on
    atypical films (each may be urgent), then routine; most abnormal first within each."""
    score = result.prediction.abnormal_score if result.prediction else None
    return _RANK[status_of(result)], -(score if score is not None else -1.0)


def in_worklist_order(results: list[FilmResult]) -> list[FilmResult]:
    return sorted(results, key=worklist_key)


def worklist(results: list[FilmResult], classes: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """One row per film in worklist order. With the model's ``classes``: every class's probability as well,
    and, for a model with more than one abnormal class, the most probable abnormal class (the one an urgent
    film is labelled with; for a routine film, the abnormality it comes nearest to)."""
    abnormal = _abnormal_classes(classes) if classes else []
    rows = []
    for place, result in enumerate(in_worklist_order(results), 1):
        prediction = result.prediction
        row = {READING_ORDER: place, "File": result.file, "Priority": BADGES[status_of(result)][0]}
        triaged = prediction is not None and prediction.priority is not None
        if not triaged:  # unreadable, or not a usable chest film: no call, and no figure that reads as one
            row["Label"] = None
            row.update({LEADING_ABNORMAL: None} if len(abnormal) > 1 else {})
            row.update({"Top class": None, "Probability": None, "Abnormal score": None})
        else:
            top = max(prediction.probabilities, key=prediction.probabilities.get)
            row["Label"] = prediction.label
            if len(abnormal) > 1:
                row[LEADING_ABNORMAL] = leading_abnormal(prediction.probabilities, abnormal)
            row.update({"Top class": top, "Probability": prediction.probabilities[top],
                        "Abnormal score": prediction.abnormal_score})
        row.update({probability_column(c): prediction.probabilities.get(c) if triaged else None
                    for c in classes or ()})
        row["Warnings"] = result.error if prediction is None else " ".join(  # sentences, each with its full stop
            prediction.warnings + ([prediction.population_warning] if prediction.population_warning else []))
        row[FILM_ID] = film_id(result)
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def film_id(result: FilmResult) -> str:
    """Which file a row or card is, whatever its name (two patients' "image.jpeg" are two IDs): the start of its
    content's SHA-256."""
    return result.digest[:8]


def leading_abnormal(probabilities: dict[str, float], abnormal: list[str]) -> str:
    """The abnormal class the model gives most (of ``abnormal``, not empty)."""
    return max(abnormal, key=lambda c: probabilities.get(c, -1.0))


def _abnormal_classes(classes: tuple[str, ...] | list[str]) -> list[str]:
    normal = find_normal_index(classes)
    return [c for i, c in enumerate(classes) if i != normal] if normal is not None else []


def probability_column(class_name: str) -> str:
    return f"p({class_name})"


NOT_RECEIVED = "The server did not receive this film, so it is on no worklist: upload it again."


def worklist_csv(results: list[FilmResult], model: str, classes: tuple[str, ...] | list[str] | None = None,
                 not_received: list[str] | tuple[str, ...] = ()) -> bytes:
    """The worklist with every class probability (``classes``: the model's, else those the films carry),
    the model and its threshold, for the record, then a row for each film of the batch the server did not
    receive (``not_received``: a partial batch's CSV looked whole, a review); no cell starts with what a
    spreadsheet would take for a formula (a file named ``=HYPERLINK(...).png``). UTF-8 with a byte-order mark:
    without one, Excel read "Müller_Zoë.png" as "MÃ¼ller_ZoÃ«.png" (a review)."""
    if classes is None:
        classes = next((list(r.prediction.probabilities) for r in results if r.prediction), [])
    table = worklist(results, classes)
    extra = [{"Model": model, "Threshold": r.prediction.threshold if r.prediction else None}
             for r in in_worklist_order(results)]
    table = pd.concat([table, pd.DataFrame.from_records(extra)], axis=1)
    missing = [{"File": name, "Priority": "Not received", "Warnings": NOT_RECEIVED, "Model": model}
               for name in not_received]
    if missing:
        table = pd.concat([table, pd.DataFrame.from_records(missing)], ignore_index=True)
        table[READING_ORDER] = table[READING_ORDER].astype("Int64")  # 1, 2, ..., then none: never "1.0"
    # named for what they hold: "Probability" beside "Top class" read as the call's (an accessibility review)
    table = table.rename(columns={"Top class": "Most probable class", "Probability": "p(most probable class)"})
    table.columns = [spreadsheet_safe(column) for column in table.columns]  # class names come from a model
    # RFC 4180 line ends: a carriage return inside a cell is then quoted too, and cannot split a row.
    return table.map(spreadsheet_safe).to_csv(index=False, lineterminator="\r\n").encode("utf-8-sig")


WORKLIST_COLUMNS = {
    READING_ORDER: st.column_config.NumberColumn(
        "Reading order", help="Urgent first, then films not read yet or not triaged, then "
                                 "unreadable files, then routine calls on atypical films, then routine. Sort by "
                                 "this column to return to it."),
    "File": st.column_config.TextColumn("File", width="medium"),
    "Priority": st.column_config.TextColumn(
        "Priority", help="From the model's operating point. Sorting by this column orders the words, not the "
                         "urgency: sort by Reading order to return to it."),
    "Label": st.column_config.TextColumn("Label", help="The model's call at its operating point."),
    "Top class": st.column_config.TextColumn("Top class", help="The most probable class."),
    "Probability": st.column_config.ProgressColumn("Probability", format="percent", min_value=0.0, max_value=1.0,
                                                   help="Probability of the top class." + BAR_HELP),
    "Warnings": st.column_config.TextColumn("Warnings", width="medium",
                                            help="Why a film was not triaged, or what to check before trusting it."),
    FILM_ID: st.column_config.TextColumn(FILM_ID, width="small", help=(
        "The start of the file's content fingerprint (SHA-256), also on its card: it tells apart uploads that "
        "share a name (numbered in upload order) and identifies the file a row of the CSV was read from.")),
}


def worklist_table(results: list[FilmResult], classes: tuple[str, ...] | list[str], where=st,
                   key: str | None = None) -> None:
    """The worklist as the page draws it, into ``where`` (the page, or a placeholder for the films read so far)."""
    where.dataframe(on_screen(worklist(results, classes), classes), hide_index=True,
                    column_config=worklist_columns(classes, results), column_order=worklist_screen_order(classes),
                    key=key, placeholder="—")


def on_screen(table: pd.DataFrame, classes: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """The worklist's probability bars kept within :data:`BAR_RANGE`: their percent format rounds to two decimals,
    so a saturated output of 0.99998 read "100%", a certainty no model gives (a review; the card reads ">99.9999 %").
    The CSV keeps every figure as predicted."""
    columns = [c for c in ("Probability", *(probability_column(c) for c in classes)) if c in table]
    return table.assign(**{c: table[c].clip(*BAR_RANGE) for c in columns})


def worklist_screen_order(classes: tuple[str, ...] | list[str]) -> list[str]:
    """The worklist's columns on screen: what a reader acts on (priority, call, score, warnings) before the
    figures behind them, so a laptop-wide page shows it without scrolling sideways; the CSV keeps
    :func:`worklist`'s order and every column. Not the top class and its probability: an urgent film the threshold
    flags at p(PNEUMONIA) 0.35 read "NORMAL, 65 %" beside "Urgent" (a worklist review); each class's bar says it."""
    abnormal = _abnormal_classes(classes)
    return [READING_ORDER, "File", "Priority", "Label", "Abnormal score", "Warnings",
            *([LEADING_ABNORMAL] if len(abnormal) > 1 else []), *(probability_column(c) for c in classes), FILM_ID]


def worklist_columns(classes: tuple[str, ...] | list[str], results: list[FilmResult] = ()) -> dict:
    """:data:`WORKLIST_COLUMNS` plus the leading abnormal class and one probability bar per class; the abnormal
    score to as many decimals as tell each film's from its threshold, shown in its help at the same (at 3, a
    routine film at 0.7306 read "0.731", as a threshold of 0.73135 does)."""
    scored = [(r.prediction.abnormal_score, r.prediction.threshold) for r in results
              if r.prediction is not None and r.prediction.priority is not None and r.prediction.threshold is not None]
    digits = max((digits_apart(score, threshold) for score, threshold in scored), default=3)
    thresholds = {threshold for _, threshold in scored}  # one model's: one threshold
    at = f", {next(iter(thresholds)):.{digits}f}" if len(thresholds) == 1 else ""
    columns = {**WORKLIST_COLUMNS, LEADING_ABNORMAL: st.column_config.TextColumn(
        LEADING_ABNORMAL, help="The most probable abnormal class, whatever the priority."),
        "Abnormal score": st.column_config.NumberColumn("Abnormal score", format=f"%.{digits}f",
                                                        help=f"1 − p(normal); urgent at or above the threshold{at}.")}
    columns.update({probability_column(c): st.column_config.ProgressColumn(
        probability_column(c), format="percent", min_value=0.0, max_value=1.0, help=f"Probability of {c}." + BAR_HELP)
        for c in classes})
    return columns
