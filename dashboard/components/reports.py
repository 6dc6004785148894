"""Turning core's stored reports into tables and chart inputs, and text into safe forms: formatting only.

How a model's promise travels beyond its validation films (the card's table, Compare's rows and chart) is in
dashboard.components.travel."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import DataRootsUnreadable, FolderNotAllowed, TriageError
from core.films.manifest import recorded_source
from core.films.roots import data_roots, folder_label
from core.models.catalog import CATALOG
from core.store.registry import ModelEntry
from core.store.reports import Report
from core.wording import fixed, percent, threshold_value, valid_text, with_interval
from dashboard.labels import UNPLACED


_MARKDOWN = re.compile(r"[\\`*_\[\]<>|~$&]|:(?=\S)")  # a colon starts a directive only when text follows
_LINE_START = re.compile(r"^(\s*(?:\d+)?)([#+\-=.)])")  # a heading, a list item or an underline at the start
# Where the browser's Markdown turns plain text into a link (GitHub's autolinks: "www.", "scheme://", "a@b.c"). It
# finds them in the text after escapes are read, so a backslash cannot stop it; an invisible word joiner can.
_AUTOLINK = re.compile(r"(?<=www)(?=\.)|(?<=:)(?=//)|(?=@)", re.IGNORECASE)
METRICS_NOTE = (
    "Values with their 95 % intervals (Wilson score intervals for shares of films, resampled films for AUC and F1; "
    "where every resample gives the same value, Hanley–McNeil's for an AUC (with more than two classes, the mean of "
    "the classes' lower bounds, up to 1) and Wilson's for an F1, read as a share; for an AUC on fewer than 20 films "
    "of a kind, the wider of the resampled and Hanley–McNeil's intervals (a macro AUC: no narrower than the mean of "
    "its classes' intervals), though reports stored before that rule "
    "keep their resampled ones; resampling patients instead, a patient's films together, moved the ends of five "
    "shipped pneumonia models' intervals by under a point). Sensitivity and specificity are for abnormal (any "
    "non-normal class) against normal. Precision (the share of urgent calls that are abnormal) depends on how "
    "many films are abnormal: it is read at the mix of the films each row was measured on, and is lower where "
    "disease is rarer. Inference time is the fastest of 10 one-film passes on the CPU of the "
    "machine that registered the version (a best case; machines differ).")
SEVERAL_CLASSES_NOTE = (
    " With more than two classes the AUC is the mean of each class's one-vs-rest AUC, *most probable class* reads "
    "every film by its most probable class, as published multi-class accuracy is measured, and precision and F1 "
    "count any abnormal call on any abnormal film as right: one abnormal class read as another shows in the macro "
    "F1 and the per-class figures below.")
_WORD_JOINER = "\u2060"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_markdown(text: str) -> str:
    """``text`` (an upload's name, a message quoting it) made literal for elements that read Markdown
    (st.error, st.warning, st.table, ...): every character with which Markdown or Streamlit's directives
    (``:red[…]``, ``:material/…:``, ``$…$``) could start is escaped; line breaks become spaces; web and e-mail
    addresses get an invisible word joiner that keeps them from becoming links (a link in an upload's name on a
    clinical page is a phishing link). Plain sentences ("Not triaged: the image…") read the same before and
    after."""
    line = _AUTOLINK.sub(_WORD_JOINER, " ".join(str(text).splitlines()))
    line = _MARKDOWN.sub(lambda match: "\\" + match.group(0), line)
    return _LINE_START.sub(lambda match: match.group(1) + "\\" + match.group(2), line)


def code_span(text: str) -> str:
    """``text`` as inline code that nothing in it can end (CommonMark: a fence of more backticks than any run inside,
    padded with a space), on one line; inside, Markdown, links and directives are plain text. A folder named with
    a backtick closed the span of `{label}` and made the rest of its name a live link on every clinician's model
    card (a review)."""
    text = " ".join(str(text).splitlines()) or " "
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if len(fence) > 1 else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet will not run: text starting with = + - @, tab or carriage return gets a
    leading single quote (OWASP's advice for CSV injection); other values pass unchanged."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def target_percent(target: float | None) -> str:
    """A sensitivity target as set (95 %, 99.5 %): forms take half points, so rounding to whole ones would
    promise more than was asked (99.5 % shown as 100 %)."""
    return "—" if target is None else f"{target * 100:.2f}".rstrip("0").rstrip(".") + " %"


def chosen_on(calibration) -> str:
    """The films a recalibrated version's threshold was chosen on (core.store.records.Calibration), in words; a
    site folder by its data-root label, set as code so a label's underscores stay underscores."""
    return f"the site folder {code_span(calibration.folder)}" if calibration.folder else "the same validation films"


def data_label(folder: str) -> str:
    """A folder by its data-root label, never by its server path."""
    try:
        return valid_text(folder_label(folder))  # a name that is not valid UTF-8 escaped (a raw one stops the page)
    except FolderNotAllowed:
        return "a folder outside the data roots"
    except DataRootsUnreadable:  # the picker says so and what to do; a label must not stop the page
        return UNPLACED


def films_in_words(report: Report) -> str:
    """Which films a report is on (its ``split``), with any folder named by its data-root label, never by its
    server path; a folder the split already names by its label (``shared-data/tb/train/Normal``) stays. A folder
    whose name holds spaces is taken whole while it exists (none of its words may show on their own)."""
    words, shown, at = (report.split or "unknown split").split(" "), [], 0
    while at < len(words):
        if "/" not in words[at]:
            shown.append(words[at])
            at += 1
            continue
        end = next((end for end in range(len(words), at + 1, -1) if _names_a_path(" ".join(words[at:end]))),
                   _gone_path_end(words, at))
        shown.append(_folder_in_words(" ".join(words[at:end])))
        at = end
    return " ".join(shown)


def _gone_path_end(words: list[str], at: int) -> int:
    """Where a server path starting at ``words[at]`` ends when it cannot be found (a folder gone since): through
    the last word with a "/" before a separator, so none of its words shows on its own (a review: "Jane Doe 1234"
    of a deleted "/srv/ward films/Jane Doe 1234/train" showed as "Doe"). A label or a relative word is one word."""
    if not words[at].lstrip("([").startswith(("/", "~")) or words[at].rstrip(")],;:.") != words[at]:
        return at + 1
    end = at + 1
    for k in range(at + 1, len(words)):
        if words[k].startswith("(") or not words[k]:
            break
        if "/" in words[k]:
            end = k + 1
        if words[k][-1] in ",;)":
            break
    return end


def _names_a_path(text: str) -> bool:
    folder = text.lstrip("([").rstrip(")],;:.")
    return " " in folder and Path(recorded_source(folder)).exists()


def _folder_in_words(word: str) -> str:
    folder = word.lstrip("([").rstrip(")],;:.")
    start = word.index(folder)
    try:
        labels = {root.name for root in data_roots()}
    except TriageError:
        labels = set()
    label = folder if folder.split("/")[0] in labels else data_label(recorded_source(folder))
    return word[:start] + label + word[start + len(folder):]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


ARGMAX_ACCURACY = "Accuracy, most probable class"
# With more than two classes, precision and F1 count any abnormal call on any abnormal film as right; the macro F1
# (each class's own F1, averaged) is where one abnormal class read as another shows
PRECISION, F1 = "Precision (abnormal vs normal)", "F1 (abnormal vs normal)"
MACRO_F1 = "Macro F1 (each class with films)"
MACRO_AUC = "AUC (macro, one-vs-rest)"


def architecture_title(entry: ModelEntry) -> str:
    """The architecture as the card names it (core.models.catalog); an ensemble by its number of networks."""
    if entry.record.members:
        return f"ensemble of {len(entry.record.members)} networks"
    known = CATALOG.get(entry.arch)
    return known.title if known else entry.arch


def metrics_table(rows: list[tuple[ModelEntry, Report]]) -> pd.DataFrame:
    """One column per model, one row per figure: decision metrics at the operating point with their
    95 % intervals, then size and speed. Models side by side stay readable with long interval strings."""
    columns = {}
    several = any(len(report.classes) > 2 for _, report in rows)  # one task per comparison: all or none
    for entry, report in rows:
        figures, record = report.at_operating_point, entry.record
        column = {"Architecture": architecture_title(entry), "Films evaluated": str(report.n)}
        column["Accuracy"] = with_interval(figures.accuracy, figures.accuracy_ci)
        if several:  # beside the operating point: the reading published multi-class accuracy uses
            argmax = report.at_argmax
            column[ARGMAX_ACCURACY] = "—" if argmax is None else with_interval(argmax.accuracy, argmax.accuracy_ci)
        for title, value, interval in (("Sensitivity", figures.sensitivity, figures.sensitivity_ci),
                                       ("Specificity", figures.specificity, figures.specificity_ci),
                                       (PRECISION if several else "Precision", figures.precision,
                                        figures.precision_ci)):
            column[title] = with_interval(value, interval)
        # abnormal against normal; a model without a normal class has only the macro F1 (and no interval)
        f1 = figures.f1 if report.operating_point.normal_class is not None else figures.macro_f1
        column[F1 if several else "F1"] = with_interval(f1, figures.f1_ci, as_percent=False)
        if several:  # a review: COVID-19 films all read as viral pneumonia kept a perfect abnormal-vs-normal F1
            column[MACRO_F1] = "—" if figures.macro_f1 is None else fixed(figures.macro_f1, 3)
        column[MACRO_AUC if several else "AUC"] = with_interval(report.auc, report.auc_ci, as_percent=False)
        column["Threshold (abnormal score)"] = (threshold_value(report.threshold)
                                                if report.operating_point.normal_class else "—")
        column["Parameters"] = "—" if record.parameters is None else f"{record.parameters:,}"
        inference = record.inference_ms_per_film
        column["Inference per film"] = ("—" if inference is None else f"{inference:.1f} ms" if inference >= 1
                                        else f"{inference:.2g} ms")  # a logistic regression's 0.03, not 0.0
        seconds = record.training.seconds if record.training else None
        column["Training time"] = ("— (its networks trained first, each on its own)"
                                   if seconds is None and record.members else duration(seconds))
        columns[entry.name] = column
    return pd.DataFrame(columns)


def per_class_table(report: Report) -> pd.DataFrame:
    """Precision is empty for a class nothing was called (stored as 0 by scikit-learn's rule, which reads as
    "every call wrong" where no call was made; found by a review), and recall and F1 for a class with no films
    here (0 by the same rule read as "missed every normal film" on a folder of pneumonia films: another review)."""
    called = calls_per_class(report)
    return pd.DataFrame.from_records([
        {"Class": name, "Precision": row.precision if called.get(name, 1) else None,
         "Recall": row.recall if row.support else None, "F1": row.f1 if row.support else None, "Films": row.support}
        for name, row in report.at_operating_point.per_class.items()
    ])


def calls_per_class(report: Report) -> dict[str, int]:
    """How many films were called each class at the operating point (the confusion matrix's columns)."""
    matrix = report.at_operating_point.confusion_matrix
    return {name: int(sum(row[k] for row in matrix)) for k, name in enumerate(report.classes)} if matrix else {}


@dataclass(frozen=True)
class RocCurve:
    """One model's ROC curve and its operating point (1 − specificity, sensitivity), for the chart."""

    name: str
    fpr: list[float]
    tpr: list[float]
    auc: float | None
    threshold: float
    point_fpr: float | None
    point_tpr: float | None
    auc_label: str = "AUC"  # with more than two classes the curve's area is not the table's (macro) AUC


def roc_input(name: str, report: Report) -> RocCurve | None:
    if report.roc is None:
        return None
    figures = report.at_operating_point
    # The curve is abnormal against normal, scored 1 − p(normal): with more than two classes its area is the normal
    # class's one-vs-rest AUC, not the macro AUC the report leads with.
    normal = report.operating_point.normal_class
    auc = report.auc if len(report.classes) <= 2 else (report.class_auc or {}).get(normal)
    return RocCurve(name, report.roc.fpr, report.roc.tpr, auc, report.threshold,
                    None if figures.specificity is None else 1 - figures.specificity, figures.sensitivity,
                    "AUC" if len(report.classes) <= 2 else "AUC abnormal vs normal")


def operating_points(curves: list[RocCurve]) -> pd.DataFrame:
    return pd.DataFrame.from_records([
        {"Model": c.name, "Threshold": threshold_value(c.threshold), "Sensitivity": percent(c.point_tpr),
         "Specificity": percent(None if c.point_fpr is None else 1 - c.point_fpr)}
        for c in curves
    ])
