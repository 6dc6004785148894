"""Drawing the comparison page: metrics table, ROC curves, confusion matrices, per-class reports, curves."""
from __future__ import annotations

import streamlit as st

from core.admin.audit import record_action
from core.errors import FolderNotAllowed, TriageError
from core.films.roots import folder_label
from core.store.registry import ModelEntry
from core.store.reports import Report
from dashboard.components.charts import confusion_matrix, roc_curves, training_curves
from dashboard.components.reports import metrics_table, operating_points, per_class_table, roc_input

PER_ROW = 3


def _in_rows(items: list):
    """Groups of at most PER_ROW, so four or more models still get readable columns."""
    for start in range(0, len(items), PER_ROW):
        chunk = items[start: start + PER_ROW]
        yield zip(st.columns(PER_ROW, gap="medium"), chunk)


def _split(report: Report) -> str:
    """Which films, with any folder named by its data-root label, never by its server path."""
    words = (report.split or "unknown split").split(" ")
    return " ".join(_label(word) if "/" in word else word for word in words)


def _label(folder: str) -> str:
    try:
        return folder_label(folder)
    except FolderNotAllowed:
        return "a folder outside the data roots"


def record_evaluations(rows: list[tuple[ModelEntry, Report]], folder: str, *, who: str) -> None:
    """One audit line per model evaluated on a server folder, with its figures (the folder by its label)."""
    label = _label(folder)
    for entry, report in rows:
        try:
            record_action("evaluate-folder", who, model=entry.name, folder=label, n=report.n, auc=report.auc,
                          sensitivity=report.sensitivity, specificity=report.specificity)
        except TriageError as exc:
            st.warning(str(exc), icon=":material/warning:")
            return


def sources(rows: list[tuple[ModelEntry, Report]]) -> None:
    """Say which films every figure comes from."""
    lines = [f"- **{entry.name}**: {_split(report)} ({report.n} films)" for entry, report in rows]
    st.caption("Figures computed on:\n" + "\n".join(lines))
    if len({entry.classes for entry, _ in rows}) > 1:
        st.warning("These models were trained on different classes; the ROC curves compare abnormal against "
                   "normal only.", icon=":material/warning:")
    for entry, report in rows:
        if report.skipped:
            with st.expander(f"{entry.name}: {len(report.skipped)} film(s) could not be read and were left out"):
                st.table([{"file": s.file, "reason": s.error} for s in report.skipped])


def comparison(rows: list[tuple[ModelEntry, Report]]) -> None:
    st.subheader("Metrics at each model's operating point")
    st.caption("Values with their 95 % bootstrap intervals. Sensitivity and specificity are for abnormal "
               "(any non-normal class) against normal. Inference time is the median for one film on the CPU "
               "the model was trained on.")
    table = metrics_table(rows)
    st.dataframe(table, key="metrics-table", height=38 + 35 * len(table),
                 column_config={"_index": st.column_config.TextColumn("", width="medium")})

    st.subheader("ROC curves")
    curves = [c for c in (roc_input(entry.name, report) for entry, report in rows) if c]
    if not curves:
        st.info("None of these models has a normal class, so there is no abnormal-vs-normal ROC curve.")
        return
    chart, points = st.columns(2, gap="large")
    chart.plotly_chart(roc_curves(curves), key="roc-chart")
    with points:
        st.markdown("**Operating points** (◆ on the chart)")
        st.dataframe(operating_points(curves), hide_index=True, key="operating-points")
        st.caption("Each model calls a film abnormal, and triages it urgent, when its abnormal score "
                   "1 − p(normal) reaches the threshold chosen on its validation films.")


def details(rows: list[tuple[ModelEntry, Report]]) -> None:
    st.subheader("Confusion matrices")
    for group in _in_rows(rows):
        for column, (entry, report) in group:
            matrix = report.at_operating_point.confusion_matrix
            if matrix:
                column.plotly_chart(confusion_matrix(matrix, report.classes, entry.name),
                                    key=f"confusion-{entry.name}", config={"displayModeBar": False})

    st.subheader("Per-class report")
    for group in _in_rows(rows):
        for column, (entry, report) in group:
            column.markdown(f"**{entry.name}**")
            column.table(per_class_table(report).set_index("Class").style.format(
                {"Precision": "{:.3f}", "Recall": "{:.3f}", "F1": "{:.3f}"}))

    st.subheader("Training curves")
    histories = {entry.name: entry.record.training.history for entry, _ in rows
                 if entry.record.training and entry.record.training.history}
    if histories:
        st.plotly_chart(training_curves(histories), key="training-curves")
    else:
        st.info("These models carry no training history.")
