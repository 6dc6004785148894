"""Figures of models with more than two classes (COVID-19, four classes), as tables and chart inputs: per class
and per data source. Formatting only: every number comes from core's stored report (core.store.reports).

Triage reads one abnormal score, 1 − p(normal), at one threshold, so each abnormal class has two recalls: the
share of its films *flagged urgent* (any abnormal call: what triage promises per class) and the share *called
that class* at the operating point; beside them the reading by the most probable class, the way published
multi-class accuracy is measured.
"""
from __future__ import annotations

import pandas as pd

from core.evaluation.reported import widened_for_few
from core.tasks import canonical_class
from core.store.reports import Report
from core.wording import fixed
from dashboard.components.reports import RocCurve, calls_per_class, percent, with_interval

NO_FILMS = "— (no films)"
CLASS_COLUMNS = ("Films", "Flagged urgent", "Recall (operating point)", "Recall (most probable class)",
                 "AUC (one-vs-rest)", "Precision", "F1", "Accuracy against normal alone", "AUC against normal alone")
CLASS_FIGURES_NOTE = ("Per class, with 95 % intervals: *flagged urgent* is the share of the class's "
                      "films whose abnormal score reaches the threshold (what triage promises for that class); "
                      "*recall* is the share called that very class, at the operating point or by the most "
                      "probable class; the AUC is the class against all the others. *Against normal alone*: "
                      "only this class's films and the normal films, each called by the larger of the two "
                      "probabilities, as a two-class model of that pair (e.g. the COVID-19 seed's small CNN, "
                      "COVID against normal) is measured.")
SOURCE_SHORTCUT = ("A model can learn where a film comes from instead of what it shows: when one source holds "
                   "all films of a class (here every COVID-19 film comes from the adult COVID collection), "
                   "its normal films may be flagged for the source's sake. Compare each source's share called "
                   "abnormal and its recall per class.")


def several_classes(report: Report) -> bool:
    return len(report.classes) > 2


def class_table(report: Report) -> pd.DataFrame:
    """One row per class: its films, the share flagged urgent (abnormal classes), its recall at the operating
    point and by the most probable class, its one-vs-rest AUC (each with its 95 % interval), then precision
    and F1 at the operating point. A class without films here says so."""
    point, argmax = report.at_operating_point, report.at_argmax
    flagged, flagged_ci = point.flag_recall or {}, point.flag_recall_ci or {}
    auc, auc_ci = report.class_auc or {}, report.class_auc_ci or {}
    normal, called = report.operating_point.normal_class, calls_per_class(report)
    rows = {}
    for name, figures in point.per_class.items():
        if not figures.support:
            rows[name] = ("0", *(NO_FILMS,) * (len(CLASS_COLUMNS) - 1))
            continue
        by_argmax = argmax.per_class.get(name) if argmax is not None else None
        rows[name] = (
            str(figures.support),
            "— (normal class)" if name == normal else with_interval(flagged.get(name), flagged_ci.get(name)),
            with_interval(figures.recall, figures.recall_ci),
            "—" if by_argmax is None else with_interval(by_argmax.recall, by_argmax.recall_ci),
            with_interval(auc.get(name), auc_ci.get(name), as_percent=False),
            fixed(figures.precision, 3) if called.get(name, 1) else "— (never called)", fixed(figures.f1, 3),
            *_pair_cells(report, name),
        )
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(CLASS_COLUMNS)).rename_axis("Class")


def _pair_cells(report: Report, name: str) -> tuple[str, str]:
    """The class against the normal class alone: accuracy and AUC with intervals; "—" for the normal class and
    for reports stored before these figures existed."""
    pair = (report.against_normal or {}).get(name)
    if pair is None:
        return "—", "—"
    return with_interval(pair.accuracy, pair.accuracy_ci), pair_auc(pair, name, report.operating_point.normal_class)


def pair_auc(pair, name: str, normal: str) -> str:
    """A class-against-normal AUC with its interval, no narrower than Hanley–McNeil's on fewer than 20 films of a
    kind: reports stored before that rule kept a resampled one (a figures review: 13 + 13 films, AUC 0.988 "(0.950–
    1.000)" against Hanley–McNeil's 0.945–1.000), and the card says where it widened one."""
    counts = (pair.class_counts.get(name, 0), pair.class_counts.get(normal, 0))
    interval = widened_for_few(pair.auc, pair.auc_ci, *counts) if min(counts) > 0 else pair.auc_ci
    shown = with_interval(pair.auc, interval, as_percent=False)
    widened = pair.auc_ci is not None and tuple(interval) != tuple(pair.auc_ci)
    return f"{shown}, widened to Hanley–McNeil's interval for so few films" if widened else shown


def source_table(report: Report) -> pd.DataFrame | None:
    """One row per data source (only when the films came from two or more): its films by class, accuracy and
    share called abnormal at the operating point, and the recall of each class it holds. None otherwise."""
    if not report.by_source:
        return None
    rows = {}
    for source, figures in report.by_source.items():
        rows[source] = {
            "Films": str(figures.n),
            "Classes": ", ".join(f"{name} {n}" for name, n in figures.class_counts.items()),
            "Accuracy": percent(figures.accuracy),
            "Called abnormal": percent(figures.flagged),
            "Recall per class": ", ".join(f"{name} {percent(r)}" for name, r in figures.recall.items()),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("Source")


def class_curves(rows: list[tuple[str, Report]]) -> dict[str, list[RocCurve]]:
    """Class -> one one-vs-rest ROC curve per model (``rows``: model name, report) that has one for it; classes
    in the first report's order, by their canonical names (an older model's own spelling, ``TURBERCULOSIS``,
    joins the same panel: a review). Empty when no report has curves per class (two classes, older reports)."""
    classes = list(dict.fromkeys(canonical_class(c) or c for _, report in rows for c in report.classes))
    curves: dict[str, list[RocCurve]] = {}
    for class_name in classes:
        for name, report in rows:
            own = next((c for c in report.classes if (canonical_class(c) or c) == class_name), None)
            roc = (report.class_roc or {}).get(own)
            if roc is not None:
                curves.setdefault(class_name, []).append(RocCurve(
                    name, roc.fpr, roc.tpr, (report.class_auc or {}).get(own), report.threshold, None, None))
    return curves


def class_recall_lines(report: Report) -> list[str]:
    """The model card's lines per class on validation at the threshold: for an abnormal class the share of its
    films flagged urgent and the share called that class; for the normal class the share called normal; then
    each abnormal class against the normal class alone (how a two-class seed of that pair is measured)."""
    point = report.at_operating_point
    flagged, flagged_ci = point.flag_recall or {}, point.flag_recall_ci or {}
    normal = report.operating_point.normal_class
    lines = []
    for name, figures in point.per_class.items():
        if not figures.support:
            lines.append(f"- {name}: no validation films")
            continue
        called = f"called {name} {with_interval(figures.recall, figures.recall_ci)}"
        if name != normal and name in flagged:
            called = f"flagged urgent {with_interval(flagged[name], flagged_ci.get(name))}; {called}"
        lines.append(f"- {name} ({figures.support} films): {called}")
    for name, pair in (report.against_normal or {}).items():
        normal_films = pair.class_counts.get(normal, pair.n)
        lines.append(f"- {name} against {normal} alone ({pair.class_counts.get(name, 0)} + {normal_films} films, "
                     f"the larger of the two probabilities): accuracy {with_interval(pair.accuracy, pair.accuracy_ci)}"
                     + ("" if pair.auc is None else f", AUC {pair_auc(pair, name, normal)}"))
    return lines
