"""Retraining: start a training job in the background, watch it, and make the new version the default.

Starting, cancelling and promoting are for administrators (core.access); everyone else sees the jobs'
progress and history, read-only and without server paths.
"""
from pathlib import Path

import pandas as pd
import streamlit as st

from core import limits
from core.admin.audit import read_actions
from core.errors import TriageError
from core.films.manifest import shipped_manifests
from core.config import settings
from core.jobs.jobs import JobAlreadyRunning, active_job, list_jobs, start_job
from core.models.catalog import CATALOG
from core.models.device import found_devices
from core.store.records import TrainConfig
from core.training.saved_runs import saved_run_like
from dashboard.components.access import admin_only, current_user
from dashboard.components.calibrate_view import calibrate_section
from dashboard.components.default_choice import default_section
from dashboard.components.folder_picker import folder_choice
from dashboard.components.job_view import audit_table, interrupted_runs, job_history, job_panel
from dashboard.components.task_choice import FIRST_TASK, title_of
from dashboard.components.training_sample import sample_check, sample_warning
from dashboard.components.reports import escape_markdown
from dashboard.labels import source_label, without_server_paths
from dashboard.training_source import default_data_dir, source_stamp, training_preview

IMAGE_SIZES = (None, *(s for s in (64, 96, 128, 160, 192, 224, 256, 320)
                       if limits.IMAGE_SIZE.low <= s <= limits.IMAGE_SIZE.high))
AUDIT_ROWS = 50
JOBS_READ, HISTORY_ROWS = 200, 10  # jobs read (finished ones are pruned after 30 days), jobs listed
FOLDER = "folder"
REPLACING = "retrain-replacing"  # (folder, settings) of a start that would replace a kept run: asked first


def training_source() -> Path | None:
    """A class folder inside a data root or a shipped manifest, and what it would train (task, classes, films
    per class and per source), shown before anything starts; None when there is nothing to train on."""
    manifests = shipped_manifests()
    kind = st.radio("Training films", [FOLDER, *manifests], key="retrain-source", horizontal=True,
                    format_func=lambda k: "A class folder" if k == FOLDER else f"{k} (manifest)",
                    help="A class folder (one sub-folder of films per class), or a shipped manifest that gathers "
                         "class folders of the data roots into one task.")
    if kind == FOLDER:
        source = folder_choice("Dataset folder", key="retrain-data", default=default_data_dir(),
                               help="A folder with one sub-folder of films per class, e.g. NORMAL/ and PNEUMONIA/ "
                                    "(COVID-19, VIRAL PNEUMONIA and TUBERCULOSIS folders too, in their usual "
                                    "spellings). A patient-disjoint fifth is held out for validation.")
    else:
        source = manifests[kind]
    if source is not None:
        _what_it_trains(source)
    return source


def _what_it_trains(source: Path) -> None:
    stamp = source_stamp(source)  # once a run: it walks the whole source (a resource review)
    try:
        films = training_preview(str(source), stamp)
    except TriageError as exc:
        st.warning(f"This cannot train a model: {escape_markdown(without_server_paths(str(exc), source))}",
                   icon=":material/warning:")
        return
    counts = ", ".join(f"{name} {n}" for name, n in zip(films.classes, films.class_counts))
    st.markdown(f"**Task: {title_of(films.task)}** ({len(films.classes)} classes; films per class: {counts})."
                + (f" Its val/ folder's {films.validation_only} films join validation." if films.validation_only
                   else ""))
    warning = sample_warning(sample_check(str(source), stamp))
    if warning:
        st.warning(warning, icon=":material/image_not_supported:")
    if len(films.by_source) > 1:
        st.caption("Films per class and source. Figures per source are reported after training, so a source "
                   "that stands for a class (a shortcut) shows.")
        st.table(pd.DataFrame(films.by_source).T.rename(index=escape_markdown).rename_axis("Source"))  # folder names
    if films.task != FIRST_TASK:
        st.caption(f"The new version joins the {title_of(films.task)} task; the other tasks' models and defaults "
                   "stay as they are.")


def training_form() -> tuple[bool, object, TrainConfig | None]:
    """The new-job form: (submitted, the chosen training folder or manifest or None, the training settings).
    Start is not offered while a job runs (it listed the whole folder only to be told so: a review)."""
    st.subheader("New training job")
    data_dir = training_source()
    floor = settings().promotion_min_sensitivity
    try:
        busy = active_job() is not None
    except (TriageError, OSError):  # the jobs folder cannot be read: the job panel says so below
        busy = False
    with st.form("retrain"):
        arch = st.selectbox("Architecture", list(CATALOG), format_func=lambda a: f"{a}: {CATALOG[a].title}",
                            index=list(CATALOG).index("cnn5"))
        epochs = st.number_input("Epochs", min_value=int(limits.EPOCHS.low), max_value=int(limits.EPOCHS.high),
                                 value=5, step=1,
                                 help="Training stops early when validation AUC has not improved for "
                                      f"{limits.DEFAULT_PATIENCE} epochs.")
        image_size = st.selectbox("Image size", IMAGE_SIZES,
                                  format_func=lambda s: "Architecture default" if s is None else f"{s} × {s} px",
                                  help="Films are resized to this square. Larger is slower and needs more memory.")
        augment = st.toggle("Augmentation", value=True,
                            help="Small random rotations, shifts, zoom, brightness and contrast changes while "
                                 "training. No left-right flips: they would move the heart.")
        target = st.number_input("Sensitivity target on validation (%)",
                                 min_value=round(limits.TARGET_SENSITIVITY.low * 100, 1),
                                 max_value=round(limits.TARGET_SENSITIVITY.high * 100, 1),
                                 value=round(limits.DEFAULT_TARGET_SENSITIVITY * 100, 1), step=0.5, format="%.1f",
                                 help="The triage threshold is the highest one that still finds this share of the "
                                      "abnormal validation films. Leave a margin above what you need on new films: "
                                      "the shipped default aims at 96 % so that new films keep 95 % (not yet "
                                      "measured at a new site). Below the promotion floor "
                                      f"({floor:.1%}) the version cannot become a default.")
        max_films = st.number_input("Use at most this many films (0 = all)", min_value=0, value=0, step=100,
                                    help="A random subset that keeps each class's share of the folder (not equal "
                                         "numbers), for a quick trial run. Then a fifth or so is held out for "
                                         "validation, and a class with few films there may leave the version "
                                         "below the promotion floor.")
        found = found_devices()
        device = st.selectbox("Device", found.choices,
                              format_func=lambda d: f"Automatic (here: {found.auto.upper()})" if d == "auto"
                              else {"cpu": "CPU", "cuda": "CUDA GPU"}[d],
                              help="Where the job trains. Automatic uses a CUDA GPU when there is one.")
        bf16 = ("bf16 (faster where the hardware computes it natively)" if found.cpu_bf16 or found.gpus else
                "bf16 (emulated on this CPU: probably slower)")  # it said "faster" on every CPU (a review)
        precision = st.selectbox("Training precision", limits.PRECISIONS,
                                 format_func=lambda p: {"auto": "Automatic (bf16 where the hardware has it)",
                                                        "bf16": bf16, "fp32": "fp32"}[p],
                                 help="bf16 speeds up training where the hardware computes it natively; the triage "
                                      "threshold and report are always computed in fp32, as the model is served.")
        st.caption(f"Found: {found.describe()}." + (" A training job is running: Start is offered again when it "
                                                    "ends." if busy else ""))
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:",
                                          disabled=busy)
    config = TrainConfig(arch=arch, epochs=int(epochs), image_size=image_size, augment=augment,
                         max_films=int(max_films) or None, target_sensitivity=round(float(target) / 100, 4),
                         device=device, precision=precision)
    return submitted, data_dir, config


def start(data_dir: Path, config: TrainConfig, user) -> None:
    try:
        start_job(data_dir, config, who=user.who)
    except JobAlreadyRunning as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
    except TriageError as exc:
        st.error(f"Training was not started. {escape_markdown(without_server_paths(str(exc), data_dir))}",
                 icon=":material/error:")


def kept_run(data_dir: Path, config: TrainConfig):
    """The interrupted run a start of ``config`` would replace after its first epoch, while no job runs (a running
    job of the same settings is not an interrupted one; Start says a job runs), else None."""
    try:
        return None if active_job() is not None else saved_run_like(data_dir, config)
    except (TriageError, ValueError, OSError):  # start_job says what is wrong with the request, in its words
        return None


def start_unless_it_replaces(data_dir: Path, config: TrainConfig, user) -> None:
    """Start, unless an interrupted run of the same settings on the same folder is kept: a new run replaces it after
    its first epoch, so its Resume went with no word (a review). Then the page asks first."""
    st.session_state.pop(REPLACING, None)  # a question asked for an earlier press is not this one's
    if kept_run(data_dir, config) is None:
        start(data_dir, config, user)
        return
    st.session_state[REPLACING] = (data_dir, config)
    start_anyway(user, data_dir)


def start_anyway(user, chosen: Path | None) -> None:
    """The question, for as long as it holds: once the run is resumed, shipped or pruned, or a job runs, it goes
    (it stayed, offering to replace a run no longer there: a review of the day's diff), and so it does once another
    folder or manifest is chosen (a review: the button then started the run on the folder asked about)."""
    data_dir, config = st.session_state[REPLACING]
    kept = kept_run(data_dir, config) if chosen == data_dir else None
    if kept is None:
        del st.session_state[REPLACING]
        return
    question = st.empty()  # gone once answered: it stayed above the job it had just started (a browser check)
    question.warning(f"An interrupted run of these settings ({config.arch}, {config.epochs} epochs) on "
                     f"{escape_markdown(source_label(data_dir))} is kept ({kept.where}). A new run starts again from "
                     "the first epoch and replaces it once that epoch ends; where its job offers Resume, resuming "
                     "continues it instead.", icon=":material/warning:")
    if st.button("Start anyway, replacing it", key="start-anyway", icon=":material/restart_alt:"):
        del st.session_state[REPLACING]
        question.empty()
        start(data_dir, config, user)


user = current_user()
st.title("Retrain")
st.caption("Train a new model version in the background. It keeps running if you reload the page or close "
           "the tab; existing models and defaults stay as they are until you choose otherwise (a task with no "
           "default yet takes its first version that clears the promotion floor).")

submitted, data_dir, train_config = False, None, None
if user.is_admin:
    form_column, job_column = st.columns([2, 3], gap="large")
    with form_column:
        submitted, data_dir, train_config = training_form()
else:
    admin_only("Starting, cancelling and promoting training jobs")
    job_column = st.container()

with job_column:
    if submitted and data_dir is None:
        st.error("Training was not started. Choose a dataset folder inside a data root, or a manifest.",
                 icon=":material/error:")
    elif submitted:
        if train_config.target_sensitivity < settings().promotion_min_sensitivity:
            st.warning(f"A sensitivity target of {train_config.target_sensitivity:.1%} is below the promotion floor "
                       f"({settings().promotion_min_sensitivity:.1%}): the new version cannot become a default.",
                       icon=":material/warning:")
        start_unless_it_replaces(data_dir, train_config, user)
    elif user.is_admin and st.session_state.get(REPLACING):
        start_anyway(user, data_dir)
    try:
        jobs = list_jobs(limit=JOBS_READ)  # more than the history shows: an older interrupted run keeps its Resume
    except (TriageError, OSError):
        st.error("The job folder cannot be read; ask an administrator to check the jobs setting (CXR_JOBS).",
                 icon=":material/error:")
        jobs = []
    if jobs:
        job_panel(jobs[0])
        interrupted_runs(jobs, user)
    else:
        st.info("No training job yet." + (" Fill in the form and press Start training." if user.is_admin else ""),
                icon=":material/info:")

if len(jobs) > 1:
    with st.expander("Earlier jobs", icon=":material/history:"):
        st.dataframe(job_history(jobs[1:HISTORY_ROWS], user), hide_index=True, key="job-history")

if user.is_admin:
    with st.container(border=True):
        default_section(user)
    with st.container(border=True):
        calibrate_section(user)
    with st.expander("Audit log: administrative actions", icon=":material/policy:"):
        try:
            st.dataframe(audit_table(read_actions(AUDIT_ROWS, refused_sign_ins=False)), hide_index=True,
                         key="audit-log")
            # apart, so guessing cannot hide the changes; the recent ones only: on every run, a log of few refusals
            # was otherwise read 20,000 lines back for them
            refused = read_actions(AUDIT_ROWS, refused_sign_ins=True, within=1_000)
            if refused:
                st.caption(f"Refused admin sign-ins (a wrong passphrase), the last {len(refused)}:")
                st.dataframe(audit_table(refused), hide_index=True, key="audit-log-refused")
        except TriageError as exc:
            st.error(str(exc), icon=":material/error:")
