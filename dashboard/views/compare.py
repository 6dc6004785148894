"""Model comparison: registered models side by side, on their stored validation reports or on a folder.

Everyone sees the stored reports; evaluating on a server folder is for administrators (core.access) and is
written to the audit log.
"""
import streamlit as st

from core.admin.audit import ensure_writable
from core.films.folders import discover, evaluation_split
from core.serving.detector_files import detector_stamps
from core.errors import (CheckpointError, DataRootsUnreadable, DeviceUnavailable, SettingOutOfRange, TriageError,
                         TryAgainLater)
from dashboard.components.access import current_user, how_to_administer
from dashboard.components.compare_view import (comparison, details, folder_report, policy_films_caveat,
                                               record_evaluations, sources)
from dashboard.components.folder_overlap import training_films_caveat
from dashboard.components.folder_picker import folder_choice
from dashboard.components.no_models import as_seen_by, no_models
from dashboard.components.task_choice import models_of, pick_task, title_of
from dashboard.components.reports import code_span, escape_markdown
from dashboard.labels import inside_a_root, source_label, without_server_paths
from dashboard.folder_stamp import folder_stamp
from dashboard.state import default_evaluation_dir, registered_models

STORED, FOLDER = "Stored validation reports", "Evaluate on a folder"
EVALUATED_FOLDER = "evaluated_folder"
RECORDED = "evaluations-recorded"  # (model, folder) pairs in the audit log since the last press of Evaluate
EVALUATED = "evaluations-shown"  # (model, folder) pairs evaluated since then, recorded or not (yet)
FAILED = "evaluations-failed"  # (model, folder) -> why it could not be evaluated, since the last press of Evaluate


def _next_step(exc: TriageError) -> str:
    """What pressing Evaluate can do after ``exc``: try again (a busy server, unless its words say when), nothing
    (the model's file or the server's set-up, which its words name), or read a folder put right (a review: "Press
    Evaluate to try again" followed every failure)."""
    if isinstance(exc, TryAgainLater):
        return "" if "try again" in str(exc).lower() else "Press Evaluate to try again."
    if isinstance(exc, (CheckpointError, DataRootsUnreadable, DeviceUnavailable, SettingOutOfRange)):
        return ""
    return "Put the folder right, or choose another, and press Evaluate."


user = current_user()

st.title("Compare models")
st.caption("Pick registered models and compare them side by side. By default the figures are the "
           "reports stored with each model, computed on its own validation films and, where measured, on another "
           "batch of the same hospital, on Kermany-type films another collection gathered, and on films the "
           "project measured it on elsewhere.")

entries, problems = registered_models()
problems = as_seen_by(problems, user.is_admin)
for problem in problems:
    st.warning(problem, icon=":material/warning:")
if not entries:
    st.info(no_models(problems, "No model is registered yet.", user.is_admin, "Train one on the Retrain page."),
            icon=":material/info:")
    st.stop()

task = pick_task(entries)
entries = models_of(entries, task)
names = [e.name for e in entries]
models_key = f"compare-models-{task}"
gone = [name for name in st.session_state.get(models_key, []) if name not in names]
if gone:  # removed since chosen: keep the rest of the choice rather than fall back to the first four
    st.session_state[models_key] = [name for name in st.session_state[models_key] if name in names]
    st.warning(f"No longer registered, so left out: {', '.join(gone)}.", icon=":material/warning:")
chosen = st.multiselect("Models", names, default=None if models_key in st.session_state else names[:4],
                        key=models_key, placeholder="Choose models to compare",
                        help=f"The models of the task chosen in the sidebar ({title_of(task)}); its default is "
                             "listed first.")
if user.is_admin:
    source = st.segmented_control("Figures from", [STORED, FOLDER], default=STORED, required=True,
                                  help="Stored reports come with each model. A folder is evaluated now, with "
                                       "every chosen model, and remembered.")
else:
    source = STORED
    st.caption(f"Evaluating the models on a server folder is for administrators. {how_to_administer()}")
selected = [e for name in chosen for e in entries if e.name == name]
if not selected:
    st.info("Choose at least one model.", icon=":material/info:")
    st.stop()

if source == FOLDER:
    folder = folder_choice("Folder of films, one sub-folder per class", key="evaluate-folder",
                           default=default_evaluation_dir() or None,
                           help="For example NORMAL/ and PNEUMONIA/ with films inside; class names must be ones "
                                "the models know.")
    if st.button("Evaluate", icon=":material/play_arrow:", type="primary", disabled=folder is None):
        st.session_state[EVALUATED_FOLDER] = str(folder)
        st.session_state[RECORDED] = set()  # each press is recorded; reruns that reuse its results are not
        st.session_state[EVALUATED], st.session_state[FAILED] = set(), {}
    target = st.session_state.get(EVALUATED_FOLDER)
    stamp = folder_stamp(target) if target and inside_a_root(target) else ""
    if target and not stamp:  # moved, renamed, deleted or its root taken off the list: not read again at every rerun
        del st.session_state[EVALUATED_FOLDER]
        st.warning("The folder evaluated before can no longer be read (moved, renamed or deleted, or its data root "
                   "is no longer configured).", icon=":material/folder_off:")
        target = None
    if not target:
        st.info("Choose a folder and press Evaluate.", icon=":material/info:")
        st.stop()
    if folder is not None and str(folder) != target:  # the figures below stayed on the folder pressed for
        st.info(f"The figures below are for {code_span(source_label(target))}; press Evaluate for "
                f"{code_span(source_label(folder))}.", icon=":material/info:")
    recorded, evaluated = st.session_state.setdefault(RECORDED, set()), st.session_state.setdefault(EVALUATED, set())
    failed = st.session_state.setdefault(FAILED, {})
    # keyed by the folder's stamp too: films added since are read again, and that reading is recorded (a review);
    # by what a version reads with (weights, operating point): one saved again is read, and recorded, again
    target_key = (target, stamp)
    readings = {entry.name: (entry.name, entry.record.weights_sha256, entry.record.operating_point.model_dump_json(),
                             target_key) for entry in selected}
    if any(readings[entry.name] not in evaluated | set(failed) for entry in selected):  # a model added later too
        try:
            ensure_writable()  # a server folder is read only where the reading can be recorded
        except TriageError as exc:
            st.error(f"The models were not evaluated on the folder. {exc}", icon=":material/error:")
            st.stop()
        try:  # the folder's own faults (no class folders, no films) said once, not once for each model (a review)
            discover(target, evaluation_split(target, None), min_classes=1)
        except TriageError as exc:
            st.error(f"The models were not evaluated on the folder: "
                     f"{escape_markdown(without_server_paths(str(exc), target))} Choose another folder and press "
                     "Evaluate.", icon=":material/error:")
            st.stop()
    rows, films, log_full, errors, unlike = [], [], False, {}, {}
    for entry in selected:
        key = readings[entry.name]
        if key not in failed:  # a failure is said again, not read again at every rerun (a review: a folder of
            try:  # an unknown class reloaded every model, and an out-of-memory device decoded it all, each click)
                check = entry.record.population_check
                reading = folder_report(entry.name, entry.record.weights_sha256, str(entry.json_path), target, stamp,
                                        entry.record.operating_point.model_dump_json(),
                                        check.model_dump_json() if check else "", repr(detector_stamps()))
            except TriageError as exc:  # "try again" only where trying again may help (a review)
                failed[key] = f"{escape_markdown(without_server_paths(str(exc), target))} {_next_step(exc)}".strip()
        if key in failed:
            errors.setdefault(failed[key], []).append(entry.name)
            continue
        rows.append((entry, reading.report))
        films.append((entry.name, reading.films))
        if reading.cautions():  # films Triage warns on, counted in the figures (a browser review): said once a kind
            unlike.setdefault(tuple(reading.cautions("them")), (reading, []))[1].append(entry.name)
        evaluated.add(key)  # shown: an audit line still owed is tried again
        if key not in recorded and not log_full:  # at once, not after every model: a run left midway still
            done = record_evaluations([(entry, reading.report)], target, who=user.who)  # recorded its readings
            recorded.update(readings[model.name] for model in done)
            log_full = not done  # said once; the next run tries again
    for reading, names in unlike.values():
        for caution in reading.cautions("every model" if len(names) == len(selected) > 1 else ", ".join(names)):
            st.warning(escape_markdown(caution), icon=":material/person_search:")
    for why, names in errors.items():  # the same fault once for all the models it stopped (a browser review)
        every = len(names) == len(selected) > 1
        st.error(f"{'None of the models could' if every else ', '.join(names) + ' could not'} be evaluated on the "
                 f"chosen folder: {why}", icon=":material/error:")
else:
    rows, films = [(e, e.record.report) for e in selected if e.record.report is not None], []
    for entry in selected:
        if entry.record.report is None:
            st.warning(f"{entry.name} has no stored report; evaluate it on a folder instead.")

if rows:
    sources(rows)
    if source == FOLDER:
        policy_films_caveat(target)
        training_films_caveat(rows, target, stamp)
    comparison(rows, stored=source == STORED, films=films)
    details(rows, stored=source == STORED)
