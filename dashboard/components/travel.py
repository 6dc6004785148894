"""How a model's promise travels (#13): its internal validation beside the other sets of films it was read on
(``ModelRecord.other_reports``), the range at a new site and figures others measured, as the card's table and
lines and Compare's rows and chart: formatting only."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.evaluation.site_range import READINGS, stored_site_range
from core.store.records import MeasuredElsewhere, ModelRecord
from core.store.registry import ModelEntry
from core.store.reports import HeadlineFigures, Report, shown_reports
from core.wording import digits_apart, fixed, interval_text
from dashboard.components.reports import metrics_table, target_percent, threshold_value, with_interval
from dashboard.components.site_films import site_films_title

# Internal validation beside ModelRecord.other_reports, whose keys come from core.training.other_reports
# ("out-of-batch", "tighter-framing", "other-collection", "other-collection-framed") and recalibration ("site").
# Withdrawn keys that older versions still store (core.store.reports.WITHDRAWN) are never shown.
VALIDATION = "Internal validation"
TRAVEL_TITLES = {"out-of-batch": "Another batch", "other-collection": "Another collection (viral pneumonias)",
                 "other-collection-framed": "Another collection, framed 15 % tighter",
                 "tighter-framing": "Another batch, framed 15 % tighter (synthetic)",
                 "site": "Site films (used to recalibrate)"}
# the tighter framing of a run that held no batch out: its validation films (never one row with the batch's)
FRAMED_VALIDATION = "Validation films, framed 15 % tighter (synthetic)"
SHORT_TITLES = {VALIDATION: "Validation", TRAVEL_TITLES["out-of-batch"]: "Other batch",
                TRAVEL_TITLES["site"]: "Site"}  # the card's narrow columns
# the checks shown as lines under the card's table (no room for more columns)
CARD_LINES = frozenset({"other-collection", "other-collection-framed", "tighter-framing"})
SITE_RANGE = "Range at a new site"  # over the other collection's two readings (core.evaluation.site_range)
FIGURES = ("n", "AUC", "Sens.", "Spec.")  # rows of the card's table: films, AUC, sensitivity, specificity
NOT_MEASURED = "not measured"


def travel_title(key: str, report: Report | None = None) -> str:
    """The title of ``other_reports[key]``; the tighter framing's says which films it framed (``report``)."""
    if key == "tighter-framing" and report is not None and "validation films" in (report.split or ""):
        return FRAMED_VALIDATION
    return TRAVEL_TITLES.get(key, f"Other: {key}")


def other_reports_in_order(record: ModelRecord) -> list[tuple[str, str, Report]]:
    """(key, title, report) of the reports beside internal validation: known ones in a fixed order, then by key."""
    known, shown = list(TRAVEL_TITLES), shown_reports(record.other_reports)
    keys = sorted(shown, key=lambda k: (known.index(k) if k in known else len(known), k))
    return [(key, travel_title(key, shown[key]), shown[key]) for key in keys]


def travel_reports(record: ModelRecord, sites_apart: bool = False) -> dict[str, Report]:
    """Title -> report: internal validation first, then the other reports (:func:`other_reports_in_order`);
    ``sites_apart`` (Compare): a site's films titled by their folder and films (:func:`site_films_title`)."""
    reports = {VALIDATION: record.report} if record.report is not None else {}
    reports.update({site_films_title(record, title) if key == "site" and sites_apart else title: report
                    for key, title, report in other_reports_in_order(record)})
    return reports


def _missing(reason: str) -> str:
    return f"— ({reason})"


def _auc_sensitivity_specificity(figures: Report | HeadlineFigures, missing: str) -> tuple[str, str, str]:
    """AUC, sensitivity and specificity with their intervals, of a report or of figures stored without one (both
    name them alike); ``missing`` where a figure is absent."""
    def cell(value: float | None, interval, as_percent: bool = True) -> str:
        return missing if value is None else with_interval(value, interval, as_percent)

    return (cell(figures.auc, figures.auc_ci, as_percent=False), cell(figures.sensitivity, figures.sensitivity_ci),
            cell(figures.specificity, figures.specificity_ci))


def travel_figures(report: Report) -> tuple[str, str, str, str]:
    """Films, AUC, sensitivity and specificity with their intervals; a figure that cannot exist says why (a set
    of one class, such as normal films only, has no AUC and no sensitivity)."""
    reason = _missing("one class only" if sum(1 for n in report.class_counts if n) < 2 else "not computed")
    auc, sensitivity, specificity = _auc_sensitivity_specificity(report, reason)
    auc = _macro(auc, report.auc, len(report.classes))
    if report.operating_point.normal_index is None:
        return str(report.n), auc, _missing("no normal class"), _missing("no normal class")
    return str(report.n), auc, sensitivity, specificity


def elsewhere_figures(measured: MeasuredElsewhere) -> tuple[str, str, str, str]:
    """Films, AUC, sensitivity and specificity others measured (:class:`MeasuredElsewhere`), with the intervals
    computed from their figures and films per class."""
    auc, sensitivity, specificity = _auc_sensitivity_specificity(measured, _missing("not reported"))
    return str(measured.n), _macro(auc, measured.auc, len(measured.class_counts)), sensitivity, specificity


def _macro(shown: str, auc: float | None, classes: int) -> str:
    """A macro one-vs-rest AUC (more than two classes) says so: its rows are labelled plain "AUC"."""
    return f"{shown}, macro" if auc is not None and classes > 2 else shown


def elsewhere_title(measured: MeasuredElsewhere) -> str:
    """Its title, said to be measured elsewhere where it is one of this product's own (one titled "Another batch"
    replaced the product's other-batch row on Compare, under the product's own threshold row: a review)."""
    ours = {VALIDATION, FRAMED_VALIDATION, SITE_RANGE, *TRAVEL_TITLES.values()}
    return f"{measured.title}, measured elsewhere" if measured.title in ours else measured.title


def elsewhere_columns(record: ModelRecord) -> dict[str, tuple[str, str, str, str]]:
    """Title -> figures of each set of films others measured this version on."""
    return {elsewhere_title(measured): elsewhere_figures(measured) for measured in record.measured_elsewhere}


def site_range_figures(record: ModelRecord) -> tuple[str, str, str, str] | None:
    """Films, then the AUC, sensitivity and specificity ranges at a new site (``low–high``); None unless this
    version has both readings of the other collection (only models reading NORMAL and PNEUMONIA do)."""
    if (spans := stored_site_range(record.other_reports)) is None:
        return None

    def text(span, as_percent: bool = True) -> str:
        unit = " %" if as_percent else ""
        return _missing("not computed") if span is None else interval_text(span, as_percent) + unit

    films = record.other_reports[READINGS[0]].n
    return (f"{films} × 2 readings", text(spans.auc, as_percent=False), text(spans.sensitivity),
            text(spans.specificity))


def site_range_line(record: ModelRecord) -> str | None:
    """The card's line on the range at a new site, or None without both readings; no coverage is claimed ("95 %
    bounds" read as a new site's odds, which nothing shows: a review)."""
    if (figures := site_range_figures(record)) is None:
        return None
    _, auc, sensitivity, specificity = figures
    return (f"**{SITE_RANGE}** (from the lowest to the highest 95 % interval end of another collection as collected "
            f"and framed 15 % tighter; how often a new site falls inside is not known): AUC {auc}; "
            f"sensitivity {sensitivity}; specificity {specificity}.")


def line_summaries(record: ModelRecord) -> list[str]:
    """The card's line per check shown as a line (:data:`CARD_LINES`) this version has: its films and figures."""
    lines = []
    for key in sorted(CARD_LINES & set(shown_reports(record.other_reports))):
        n, auc, sensitivity, specificity = travel_figures(record.other_reports[key])
        title = travel_title(key, record.other_reports[key])
        chose = " The same films chose its threshold and epoch: a little high." if title == FRAMED_VALIDATION else ""
        lines.append(f"**{title}** ({n} films): AUC {auc}; sensitivity {sensitivity}; specificity {specificity}."
                     + chose)
    return lines


def elsewhere_summaries(record: ModelRecord) -> list[str]:
    """The card's line per set of figures measured elsewhere: its films, threshold and figures with intervals."""
    lines = []
    for measured in record.measured_elsewhere:
        n, auc, sensitivity, specificity = elsewhere_figures(measured)
        at = "" if measured.threshold is None else \
            f", read at threshold {_read_at(record, measured.threshold, '; ', '')}"
        lines.append(f"**{elsewhere_title(measured)}** ({n} films{at}): AUC {auc}; sensitivity {sensitivity}; "
                     f"specificity {specificity}.")
    return lines


def elsewhere_thresholds(record: ModelRecord) -> list[str]:
    """The threshold each set of figures measured elsewhere was read at, where it was reported."""
    return [f"{elsewhere_title(measured)}: read at threshold {_read_at(record, measured.threshold)}."
            for measured in record.measured_elsewhere if measured.threshold is not None]


def _read_at(record: ModelRecord, threshold: float, between: str = " (", after: str = ")") -> str:
    """``threshold`` and, where it is not this version's, this version's beside it (``between`` and ``after``
    around it): to as many decimals as tell the two apart."""
    shipped = record.operating_point.threshold
    if f"{threshold:.6f}" == f"{shipped:.6f}":  # scores are stored to 6 decimals: no film reads between the two, and
        return threshold_value(threshold)  # 1e-6 apart read "0.470980 (this version's is now 0.470980)" (a review)
    digits = digits_apart(shipped, threshold)
    return f"{threshold:.{digits}f}{between}this version's is now {threshold_value(shipped, threshold)}{after}"


def travel_table(record: ModelRecord) -> pd.DataFrame:
    """The model card's table, narrow enough for the sidebar: one row per figure, one column per set of films
    (short titles: :data:`SHORT_TITLES`), ``not measured`` where a check never ran. The checks shown as lines
    (:data:`CARD_LINES`) and figures measured elsewhere follow it as lines (:func:`line_summaries`,
    :func:`elsewhere_summaries`): a third column would not fit."""
    lines = {travel_title(key, record.other_reports.get(key)) for key in CARD_LINES}
    columns = {title: travel_figures(report) for title, report in travel_reports(record).items()
               if title not in lines}
    # another batch always follows internal validation, as not measured where the check never ran
    other_batch = TRAVEL_TITLES["out-of-batch"]
    first = {title: columns[title] for title in (VALIDATION,) if title in columns}
    columns = {**first, other_batch: columns.get(other_batch, (NOT_MEASURED,) * len(FIGURES)), **columns}
    return pd.DataFrame({SHORT_TITLES.get(title, title): figures for title, figures in columns.items()},
                        index=list(FIGURES))


def travel_comparison(entries: list[ModelEntry]) -> pd.DataFrame:
    """Compare's rows beside internal validation: one column per model, one row per set of films and figure
    (another batch always, site and other sets when a model has them), ``not measured`` where a model lacks one."""
    per_model = {entry.name: {**{title: travel_figures(report) for title, report in travel_reports(
        entry.record, sites_apart=True).items() if title != VALIDATION}, **elsewhere_columns(entry.record)}
        for entry in entries}
    for entry in entries:
        spans = site_range_figures(entry.record)
        if spans is not None:
            per_model[entry.name][SITE_RANGE] = spans
    titles = [TRAVEL_TITLES["out-of-batch"]]
    titles += [t for t in (*TRAVEL_TITLES.values(), FRAMED_VALIDATION, SITE_RANGE)
               if t not in titles and any(t in f for f in per_model.values())]
    titles += sorted({t for figures in per_model.values() for t in figures} - set(titles))
    labels = ("films", "AUC", "sensitivity", "specificity")
    index = [f"{title}: {label}" for title in titles for label in labels]
    columns = {name: [figures.get(title, (NOT_MEASURED,) * 4)[i] for title in titles for i in range(4)]
               for name, figures in per_model.items()}
    table = pd.DataFrame(columns, index=index)
    # the other batch of a version retrained on every film is another run's reading, at that run's threshold
    row = pd.DataFrame({entry.name: [other_batch_threshold(entry.record)] for entry in entries},
                       index=[f"{TRAVEL_TITLES['out-of-batch']}: read at threshold"])
    split = index.index(f"{TRAVEL_TITLES['out-of-batch']}: specificity") + 1
    return pd.concat([table.iloc[:split], row, table.iloc[split:]])


def other_batch_threshold(record: ModelRecord) -> str:
    """The threshold the other-batch figures were read at and whose: this version's or another run's (its
    ``holdout_run``, or unnamed in an older record: a review); ``not measured`` without them."""
    report = record.other_reports.get("out-of-batch")
    if report is None:
        return NOT_MEASURED
    if report.threshold == record.operating_point.threshold and not record.holdout_run:
        return f"{threshold_value(report.threshold)} (this version's)"
    run = "the run that held it out" if record.holdout_run else "another run"
    return f"{threshold_value(report.threshold)} ({run}; this version's is {threshold_text(record)})"


def threshold_text(record: ModelRecord, other: float | None = None) -> str:
    """This version's threshold as the card gives it (reports.threshold_value), or to as many decimals as tell it
    from ``other``."""
    return threshold_value(record.operating_point.threshold, other)


def metrics_with_travel(rows: list[tuple[ModelEntry, Report]]) -> pd.DataFrame:
    """:func:`metrics_table` of stored validation reports with the figures of the other sets of films after the
    threshold: a model's whole promise, and how it travels, in one column."""
    table = metrics_table(rows)
    travel = travel_comparison([entry for entry, _ in rows])
    split = list(table.index).index("Parameters")  # the figures after the architecture named as the other rows are
    figures = table.iloc[:split].rename(index={row: f"{VALIDATION}: {row}" for row in table.index[1:split]})
    return pd.concat([figures, travel, table.iloc[split:]])


def out_of_batch_origin(record: ModelRecord) -> str | None:
    """Which weights the other-batch figures describe: these very weights (trained with the batch held out), or
    another run of the same recipe that held it out (``record.holdout_run``), these weights having seen that batch."""
    if "out-of-batch" not in record.other_reports:
        return None
    run = record.holdout_run
    if run is not None:
        auc = f", validation AUC {fixed(run.validation_auc, 3)}" if run.validation_auc is not None else ""
        size = f"an ensemble of {run.members} networks" if run.members else f"{run.epochs} epochs"
        return (f"The other-batch figures come from another run of the same recipe that held that batch out "
                f"({run.name}: {size}{auc}), read at that run's own threshold ({threshold_value(run.threshold)}, "
                f"chosen by the same rule for ≥ {target_percent(run.target_sensitivity)} sensitivity on its own "
                "validation films). These weights were trained with that batch included, so they were not measured "
                "on it themselves.")
    holdout = record.training.config.holdout if record.training else None
    if holdout:
        return (f"The other-batch figures are this run's own: these weights were trained with that batch held "
                f"out (rule {holdout}).")
    return ("The other-batch figures come from a run of the same recipe that held that batch out; these weights "
            "were then retrained on every film, that batch included, so they were not measured on it themselves.")


def read_at_another_threshold(record: ModelRecord) -> list[str]:
    """Titles of the other reports read at a threshold other than the shipped one (e.g. before recalibration);
    another run's other-batch report is read at that run's threshold by design (:func:`out_of_batch_origin`)."""
    shipped = record.operating_point.threshold
    lent = {"out-of-batch"} if record.holdout_run is not None else set()
    return [title for key, title, report in other_reports_in_order(record)
            if key not in lent and abs(report.threshold - shipped) > 1e-9]


@dataclass(frozen=True)
class TravelPoint:
    """One figure with its interval, for the chart: a model, a set of films, sensitivity or specificity."""
    model: str
    films: str
    figure: str
    value: float
    low: float | None
    high: float | None


def travel_points(entries: list[ModelEntry]) -> list[TravelPoint]:
    points = []
    for entry in entries:
        sets = [*travel_reports(entry.record, sites_apart=True).items(),
                *((elsewhere_title(m), m) for m in entry.record.measured_elsewhere)]
        for title, figures in sets:  # another run's figures get a row of their own (a figures review)
            borrowed = title == TRAVEL_TITLES["out-of-batch"] and entry.record.holdout_run
            title = f"{title} (another run's weights)" if borrowed else title
            for figure, value, interval in (("Sensitivity", figures.sensitivity, figures.sensitivity_ci),
                                            ("Specificity", figures.specificity, figures.specificity_ci)):
                if value is not None:
                    low, high = interval if interval else (None, None)
                    points.append(TravelPoint(entry.name, title, figure, value, low, high))
    return points
