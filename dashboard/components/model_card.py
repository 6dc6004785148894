"""The short model card: what the model was trained on, how it did on validation, and what it is for."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.models import ARCHITECTURES
from core.registry import ModelEntry
from dashboard.components.reports import percent, with_interval

INTENDED_USE = (
    "**Intended use.** A research and triage aid: it orders a worklist so that films which look abnormal are "
    "read first. It is **not a diagnosis**; a clinician reads every film. It has only been validated on films "
    "like its training data; other populations, adult or lateral films, other devices and sites may do worse."
)


def _class_counts(counts: dict) -> str:
    return ", ".join(f"{n} {name.lower()}" for name, n in counts.items())


def model_card(entry: ModelEntry) -> None:
    meta = entry.metadata
    report, point = meta.get("report", {}), meta["operating_point"]
    training, data = meta.get("training", {}), meta.get("data", {})
    arch = ARCHITECTURES.get(entry.arch)
    st.markdown(f"**{entry.name}**" + ("  \n:primary-badge[default model]" if entry.is_default else ""))
    st.caption(f"{arch.title if arch else entry.arch} · input {meta['model_args']['image_size']} px · "
               f"classes {', '.join(entry.classes)} · created {meta.get('created', 'unknown')[:10]}")
    if data.get("train"):
        folder = "/".join(Path(training.get("data_dir", "")).parts[-2:]) or "unknown folder"
        validation = data.get("validation", {}).get("n", "?")
        st.markdown(f"**Training data.** {data['train']['n']} films ({_class_counts(data['train']['class_counts'])}) "
                    f"from `{folder}`; validated on {validation} films of other patients.")
    if report:
        lines = [f"- AUC {with_interval(report.get('auc'), report.get('auc_ci'), as_percent=False)}"]
        for title, key in (("Sensitivity", "sensitivity"), ("Specificity", "specificity"), ("Accuracy", "accuracy")):
            if report.get(key) is not None:
                lines.append(f"- {title} {with_interval(report[key], report.get(f'{key}_ci'))}")
        st.markdown("**Validation** (95 % intervals):\n" + "\n".join(lines))
    if point.get("normal_class") is not None:
        st.markdown(
            f"**Operating point.** Urgent when 1 − p({point['normal_class']}) ≥ {point['threshold']:.3f}, "
            f"chosen for ≥ {percent(point.get('target_sensitivity'), 0)} sensitivity on validation."
        )
    else:
        st.markdown("**Operating point.** None: this model has no normal class, so it cannot set priorities.")
    st.caption(INTENDED_USE)
