"""Turning core's stored reports into tables and chart inputs: formatting and arrangement only."""
from __future__ import annotations

import pandas as pd

from core.registry import ModelEntry

RATE_METRICS = (("Accuracy", "accuracy"), ("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                ("Precision", "precision"))


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def interval_text(interval: list[float] | None, as_percent: bool = True) -> str:
    if not interval:
        return "—"
    if as_percent:
        return f"{interval[0] * 100:.1f}–{interval[1] * 100:.1f}"
    return f"{interval[0]:.3f}–{interval[1]:.3f}"


def with_interval(value: float | None, interval: list[float] | None, as_percent: bool = True) -> str:
    """``86.1 % (78.5–93.7)``: the value and its 95 % bootstrap interval."""
    if value is None:
        return "—"
    text = f"{value * 100:.1f} %" if as_percent else f"{value:.3f}"
    return f"{text} ({interval_text(interval, as_percent)})" if interval else text


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


def metrics_table(rows: list[tuple[ModelEntry, dict]]) -> pd.DataFrame:
    """One column per model, one row per figure: decision metrics at the operating point with their
    95 % intervals, then size and speed. Models side by side stay readable with long interval strings."""
    columns = {}
    for entry, report in rows:
        point = report.get("at_operating_point", report)
        column = {"Architecture": entry.arch, "Films evaluated": str(report.get("n", "—"))}
        for title, key in RATE_METRICS:
            column[title] = with_interval(point.get(key), point.get(f"{key}_ci"))
        column["F1"] = with_interval(point.get("f1", point.get("macro_f1")), point.get("f1_ci"), as_percent=False)
        column["AUC"] = with_interval(report.get("auc"), report.get("auc_ci"), as_percent=False)
        threshold = report.get("threshold")
        column["Threshold (abnormal score)"] = "—" if threshold is None else f"{threshold:.3f}"
        parameters = entry.metadata.get("parameters")
        column["Parameters"] = "—" if parameters is None else f"{parameters:,}"
        inference = entry.metadata.get("inference_ms_per_film")
        column["Inference per film"] = "—" if inference is None else f"{inference:.1f} ms"
        column["Training time"] = duration(entry.metadata.get("training", {}).get("seconds"))
        columns[entry.name] = column
    return pd.DataFrame(columns)


def per_class_table(report: dict) -> pd.DataFrame:
    per_class = report.get("at_operating_point", report).get("per_class", {})
    return pd.DataFrame.from_records([
        {"Class": name, "Precision": row["precision"], "Recall": row["recall"], "F1": row["f1"],
         "Films": row["support"]} for name, row in per_class.items()
    ])


def roc_input(name: str, report: dict) -> dict | None:
    """The ROC curve and the operating point (1 − specificity, sensitivity) of one report, for the chart."""
    roc = report.get("roc")
    if not roc:
        return None
    point = report.get("at_operating_point", {})
    specificity, sensitivity = point.get("specificity"), point.get("sensitivity")
    return {"name": name, "fpr": roc["fpr"], "tpr": roc["tpr"], "auc": report.get("auc"),
            "threshold": report.get("threshold") or 0.0,
            "point_fpr": None if specificity is None else 1 - specificity, "point_tpr": sensitivity}


def operating_points(curves: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records([
        {"Model": c["name"], "Threshold": f"{c['threshold']:.3f}",
         "Sensitivity": percent(c["point_tpr"]), "Specificity": percent(None if c["point_fpr"] is None
                                                                        else 1 - c["point_fpr"])}
        for c in curves
    ])
