"""The short model card: what the model was trained on, how it did on validation, and what it is for."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.models.catalog import CATALOG
from core.store.registry import ModelEntry
from dashboard.components.reports import percent, with_interval

INTENDED_USE = (
    "**Intended use.** A research and triage aid: it orders a worklist so that films which look abnormal are "
    "read first. It is **not a diagnosis**; a clinician reads every film. It has only been validated on films "
    "like its training data; other populations, adult or lateral films, other devices and sites may do worse."
)


def _class_counts(counts: dict) -> str:
    return ", ".join(f"{n} {name.lower()}" for name, n in counts.items())


def model_card(entry: ModelEntry) -> None:
    record = entry.record
    report, point, training, data = record.report, record.operating_point, record.training, record.data
    arch = CATALOG.get(entry.arch)
    st.markdown(f"**{entry.name}**" + ("  \n:primary-badge[default model]" if entry.is_default else ""))
    st.caption(f"{arch.title if arch else entry.arch} · input {record.image_size} px · "
               f"classes {', '.join(entry.classes)} · created {(record.created or 'unknown')[:10]}")
    if data is not None:
        folder = "/".join(Path(training.data_dir if training else "").parts[-2:]) or "unknown folder"
        st.markdown(f"**Training data.** {data.train.n} films ({_class_counts(data.train.class_counts)}) "
                    f"from `{folder}`; validated on {data.validation.n} films of other patients.")
    if report is not None:
        figures = report.at_operating_point
        lines = [f"- AUC {with_interval(report.auc, report.auc_ci, as_percent=False)}"]
        for title, value, interval in (("Sensitivity", figures.sensitivity, figures.sensitivity_ci),
                                       ("Specificity", figures.specificity, figures.specificity_ci),
                                       ("Accuracy", figures.accuracy, figures.accuracy_ci)):
            if value is not None:
                lines.append(f"- {title} {with_interval(value, interval)}")
        st.markdown("**Validation** (95 % intervals):\n" + "\n".join(lines))
    if point.normal_class is not None:
        st.markdown(
            f"**Operating point.** Urgent when 1 − p({point.normal_class}) ≥ {point.threshold:.3f}, "
            f"chosen for ≥ {percent(point.target_sensitivity, 0)} sensitivity on validation."
        )
    else:
        st.markdown("**Operating point.** None: this model has no normal class, so it cannot set priorities.")
    st.caption(INTENDED_USE)
