"""Recalibrating a model on the Retrain page: a new version with the same weights and another threshold.

For administrators only (the page asks core.access before drawing this); core.training.calibrate writes the
calibration, with where its threshold came from, to the audit log. The threshold is chosen either on the
model's own validation films or on a labelled folder of this site, picked inside a data root (never a server
path). It runs while the page waits: a few hundred films at most, read once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import streamlit as st

from core import limits
from core.access.policy import User
from core.errors import TriageError
from core.films.manifest import recorded_source
from core.store.promotion import check_promotion
from core.store.registry import ModelEntry
from dashboard.components.folder_picker import folder_choice
from dashboard.components.reports import chosen_on, escape_markdown, threshold_value, with_interval
from dashboard.folder_stamp import folder_stamp
from dashboard.labels import without_server_paths
from dashboard.state import registered_models

VALIDATION, SITE_FOLDER = "validation", "site folder"  # core.training.calibrate's sources
SOURCES = {VALIDATION: "Its own validation films", SITE_FOLDER: "A labelled folder of this site"}
MODEL_KEY = "calibrate-model"
_DONE = "calibrate-done"  # ((model, target, folder) asked, the version it registered): the session's last
_PENDING = "calibrate-pending"  # each request's calibration, while it runs and after (_Pending)
_RENEWED = "calibrate-model-renewed"  # times the chosen model was removed meanwhile: each time a new, empty box


def _model_key() -> str:
    renewed = st.session_state.get(_RENEWED, 0)
    return MODEL_KEY if not renewed else f"{MODEL_KEY}-{renewed}"


def calibrate_section(user: User) -> None:
    st.subheader("Recalibrate a model")
    st.caption("A new version with the same weights and a threshold for another sensitivity target. The model's "
               "card keeps its internal validation, re-read at the new threshold; films of this site, when chosen, "
               "are reported beside it.")
    entries = [e for e in registered_models()[0] if e.record.operating_point.normal_class is not None]
    if not entries:
        st.info("No model with a normal class is registered, so none can be recalibrated.", icon=":material/info:")
        return
    by_name = {e.name: e for e in entries}  # names, not entries: the list grows with each new version
    key = _model_key()
    gone = st.session_state.get(key)
    if gone is not None and gone not in by_name:  # removed since it was chosen (another tab, the command line)
        # A box under a new key, with nothing chosen: the old one would keep showing the removed model in the
        # browser, and a box that fell back to the first model would let the next press recalibrate that one.
        st.session_state[_RENEWED] = st.session_state.get(_RENEWED, 0) + 1
        key = _model_key()
        st.warning(f"{gone}, the model chosen before, is no longer registered. Choose the model to recalibrate "
                   "again.", icon=":material/warning:")
    else:
        gone = None
    chosen = st.selectbox("Model", list(by_name), format_func=lambda n: _describe(by_name[n]), key=key,
                          index=0 if key == MODEL_KEY else None, placeholder="Choose the model to recalibrate")
    entry = by_name.get(chosen)
    source = st.radio("Choose the threshold on", list(SOURCES), format_func=SOURCES.get, horizontal=True,
                      key="calibrate-source")
    folder = None
    if source == SITE_FOLDER:
        classes = ", ".join(entry.classes) if entry else "each class"
        folder = folder_choice("Labelled folder of this site", key="calibrate-site",
                               help=f"One sub-folder per class of the model ({classes}; upper or lower case alike), "
                                    "each with at least the promotion floor's films.")
    target = st.number_input("Sensitivity target (%)", min_value=round(limits.TARGET_SENSITIVITY.low * 100, 1),
                             max_value=round(limits.TARGET_SENSITIVITY.high * 100, 1),
                             value=round(limits.DEFAULT_TARGET_SENSITIVITY * 100, 1), step=0.5, format="%.1f",
                             key="calibrate-target",
                             help="The new threshold is the highest one that still finds this share of the "
                                  "abnormal films it is chosen on.")
    if not st.button("Calibrate", icon=":material/tune:", key="calibrate-start"):
        return
    if gone is not None:  # the press was meant for the model that went
        st.error(f"The model was not recalibrated: {gone} is no longer registered. Choose a model above and "
                 "press Calibrate again.", icon=":material/error:")
        return
    if entry is None:
        st.error("The model was not recalibrated. Choose the model to recalibrate above.", icon=":material/error:")
        return
    if source == SITE_FOLDER and folder is None:
        st.error("The model was not recalibrated. Choose a labelled folder inside a data root.",
                 icon=":material/error:")
        return
    # the site folder by its contents too: pressed again after films were relabelled (moved between class folders),
    # added or removed, it calibrates again instead of showing the version chosen before (a review)
    asked = (entry.name, round(float(target) / 100, 4), str(folder) if folder is not None else None,
             folder_stamp(folder) if folder is not None else "")
    done = st.session_state.get(_DONE)
    if done is not None and done[0] == asked and done[1] in by_name:  # pressed again while it ran, or after
        st.info(f"{entry.name} was already recalibrated for this target and these films in this session: "
                f"{done[1]}, below.", icon=":material/info:")
        _report(by_name[done[1]].record)
        return
    _run(entry, asked, folder, user)


@dataclass
class _Pending:
    """A press's calibration while it runs, and its outcome: a press while it runs waits for it. Streamlit starts
    the page again at once on a second press (fast reruns), while the first run goes on calibrating: both registered
    a version, 2 s apart (a review). Kept by request (see _run)."""
    finished: threading.Event = field(default_factory=threading.Event)
    outcome: list = field(default_factory=list)  # the record registered, or the error's words


def _run(entry: ModelEntry, asked: tuple, folder, user: User) -> None:
    presses = st.session_state.setdefault(_PENDING, {})  # by request: another target pressed meanwhile keeps this
    pending = presses.get(asked)
    if pending is None or pending.finished.is_set() and not _registered(pending):
        pending = presses[asked] = _Pending()
        _calibrate(entry, asked, folder, user, pending)
    elif not pending.finished.is_set():
        with st.spinner(f"Recalibrating {entry.name} (pressed again while it ran: the first press goes on)…"):
            while not pending.finished.wait(0.5):
                pass
    outcome = pending.outcome[0] if pending.outcome else "Its run stopped before it ended: press Calibrate again."
    if isinstance(outcome, str):
        st.error(f"The model was not recalibrated. {outcome}", icon=":material/error:")
        return
    st.session_state[_DONE] = (asked, outcome.name)
    _report(outcome)


def _registered(pending: _Pending) -> bool:
    """Whether a finished press registered a version that still is (an error, or a version removed since, is
    tried again)."""
    names = {e.name for e in registered_models()[0]}
    return bool(pending.outcome) and not isinstance(pending.outcome[0], str) and pending.outcome[0].name in names


def _calibrate(entry: ModelEntry, asked: tuple, folder, user: User, pending: _Pending) -> None:
    from core.training.calibrate import calibrate  # torch loads only when someone recalibrates

    try:
        with st.spinner(f"Recalibrating {entry.name}…"):
            pending.outcome.append(calibrate(entry.name, asked[1], who=user.who, site_folder=folder))
    except TriageError as exc:  # a film that fails to decode is named by its path: put data roots in words
        training = entry.record.training
        folder_trained_on = recorded_source(training.data_dir) if training is not None else None
        # a folder's names, plain (a review)
        pending.outcome.append(escape_markdown(without_server_paths(str(exc), folder_trained_on)))
    finally:
        pending.finished.set()


def outcome_lines(record) -> list[str]:
    """What a calibration registered, in words: the new threshold, and the figures at it with their 95 % intervals
    (a site folder may hold as few films as the floor: a review found its figures given bare)."""
    from core.store.promotion import SITE_CHOSEN, SITE_REPORT

    report, calibration = record.report, record.calibration
    lines = [f"{record.name} is registered: urgent when 1 − p({record.operating_point.normal_class}) ≥ "
             f"{threshold_value(record.operating_point.threshold)} (was "
             f"{threshold_value(calibration.previous_threshold)}), chosen on {chosen_on(calibration)}.",
             f"Internal validation at this threshold: sensitivity "
             f"{with_interval(report.sensitivity, report.sensitivity_ci)}, specificity "
             f"{with_interval(report.specificity, report.specificity_ci)} ({report.n} films)."]
    site = record.other_reports.get(SITE_REPORT)
    if site is not None:
        lines.append(f"Site films: sensitivity {with_interval(site.sensitivity, site.sensitivity_ci)}, specificity "
                     f"{with_interval(site.specificity, site.specificity_ci)} ({site.n} films; the threshold was "
                     "chosen on these films, so their sensitivity meets the target by construction and is no check "
                     "of it).")
        if (site.split or "").startswith("site folder"):  # how many films, and which were left out (a review)
            lines.append(f"Read on the {escape_markdown(site.split.removesuffix(SITE_CHOSEN))}.")
    return lines


def _report(record) -> None:
    st.success("  \n".join(outcome_lines(record)), icon=":material/check_circle:")
    # a task without a default takes its first version that clears the floor (core.store.promotion.promote_first):
    # the caption said "not the default" when it had become it (a review)
    entry = next((e for e in registered_models()[0] if e.name == record.name), None)
    if entry is not None and entry.is_default:
        st.caption("It is now the default of its task, which had none: it clears the promotion floor. Compare it "
                   "with the others; another version can be made the default below.")
    elif entry is not None and (reasons := check_promotion(entry)):  # a browser review: a 90 % target was told
        st.caption(f"It is not the default, and cannot become it: {'; '.join(reasons)}.")  # "before making it one"
    else:
        st.caption("It is not the default; compare it with the others before making it one.")


def _describe(entry: ModelEntry) -> str:
    point = entry.record.operating_point
    return f"{entry.name} (threshold {threshold_value(point.threshold)}" + (", default)" if entry.is_default else ")")
