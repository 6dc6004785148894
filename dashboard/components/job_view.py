"""Drawing a training job: its progress while it runs (polled, never blocking) and its outcome after.

Cancel, Resume and "Make … the default" are drawn for administrators only (asked again on every redraw, so an
expired sign-in takes them away); everyone else sees progress and outcome without server paths or the log.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import clock
from core.access.policy import User
from core.admin.audit import AuditEntry
from core.errors import PromotionRefused, TriageError
from core.jobs.jobs import (CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobAlreadyRunning, JobSummary,
                            cancel_job, read_job)
from core.jobs.progress import JobProgress, job_progress
from core.jobs.resume import resumable_run, resume_job
from core.store.manifest import REGISTRY_FILE
from core.store.promotion import promote, refusal
from dashboard.components.access import current_user
from dashboard.components.charts import live_training
from dashboard.components.model_card import validation_caveat
from core.wording import fixed, interval_text
from dashboard.components.reports import code_span, duration, escape_markdown, with_interval
from dashboard.components.task_choice import title_of
from dashboard.labels import source_label, without_server_paths
from dashboard.state import registered_models

POLL_SECONDS = 2
LOG_LINES = 14
_STATE_BADGES = {QUEUED: ("Starting", "blue", ":material/hourglass_top:"),
                 RUNNING: ("Running", "blue", ":material/autorenew:"),
                 SUCCEEDED: ("Finished", "green", ":material/check_circle:"),
                 FAILED: ("Failed", "red", ":material/error:"),
                 CANCELLED: ("Cancelled", "gray", ":material/cancel:")}


def job_panel(job: Job) -> None:
    """A running job is redrawn every few seconds on its own; a finished one is drawn once."""
    if job.is_active:
        _live_job(job.job_id, str(job.folder))
    else:
        _draw(job)


@st.fragment(run_every=POLL_SECONDS)
def _live_job(job_id: str, folder: str) -> None:
    try:
        job = read_job(Path(folder))
    except TriageError as exc:
        st.error(f"Job {job_id} cannot be shown: {exc} This page tries again every few seconds; if the job's "
                 "folder was removed, start a new job.", icon=":material/error:")
        return
    if not job.is_active:
        st.rerun(scope="app")  # the job ended: the whole page draws the outcome (and refreshes model lists)
    _draw(job)


def _draw(job: Job) -> None:
    user = current_user()
    config = job.config
    label, color, icon = _STATE_BADGES.get(job.state, ("Unknown", "gray", ":material/help:"))
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**Job {job.job_id}**")
        st.badge(label, color=color, icon=icon)
    films = f"at most {config.max_films} films" if config.max_films else "all films"
    source = f" of {_dataset(job)}" if user.is_admin else ""
    st.caption(f"{config.arch} · {config.epochs} epoch(s) · {config.image_size} px · "
               f"augmentation {'on' if config.augment else 'off'} · {films}{source}"
               + (f" · threshold for {config.target_sensitivity:.1%} sensitivity" if config.target_sensitivity
                  else ""))
    progress = job_progress(job.events())
    if job.is_active:
        _progress(job, progress, user)
    else:
        _outcome(job, user)
    if progress.step_losses or progress.epochs:
        st.plotly_chart(live_training(progress.step_losses, progress.epochs, config.epochs),
                        key=f"live-{job.job_id}", config={"displayModeBar": False})
    if user.is_admin:  # the log file names server folders; the page shows them by their data-root labels
        with st.expander("Log", expanded=job.is_active, icon=":material/article:"):
            lines = [without_server_paths(line, job.settings.data_dir) for line in job.log_tail(LOG_LINES)]
            st.code("\n".join(lines) or "(nothing yet)", language=None, wrap_lines=True)


def _dataset(job: Job) -> str:
    """The job's dataset as its data-root label or manifest name ("a folder outside the data roots" for an
    older job)."""
    return source_label(job.settings.data_dir)


def _progress(job: Job, progress: JobProgress, user: User) -> None:
    started = clock.parse(job.status.started_at) if job.status.started_at else None
    elapsed = (clock.now() - started).total_seconds() if started else None
    eta = f" · about {duration(progress.eta_seconds)} left" if progress.eta_seconds is not None else ""
    st.progress(min(1.0, progress.fraction), text=f"{progress.text}{eta}")
    with st.container(horizontal=True):
        last = progress.epochs[-1] if progress.epochs else None
        st.metric("Elapsed", duration(elapsed), border=True)
        # the last epoch's number, not a count: a long run's early epochs fall out of the events read (a review)
        st.metric("Epochs done", f"{last.epoch if last else 0} of {job.config.epochs}", border=True)
        st.metric("Validation AUC", fixed(last.val_auc, 3) if last else "—", border=True)  # 0.9997 is not 1.000
    if not user.is_admin:
        return
    if progress.phase == "finishing":  # training is over: a cancel would not be heard; the button's going is said
        st.caption("Training is over: the new version is being registered, which can no longer be cancelled.")
        # (a browser review: the Cancel button went, without a word, for the last 20 s of a run)
        return
    if st.button("Cancel training", icon=":material/stop_circle:", key=f"cancel-{job.job_id}",
                 help="Stops between training steps; nothing is registered. The epochs already finished are "
                      "kept, so the run can be resumed. A run that has not stopped 30 s later is ended (5 minutes "
                      "while an epoch's validation and saved state are written)."):
        try:
            cancel_job(job.job_id, job.folder.parent, who=user.who)
        except TriageError as exc:
            st.warning(str(exc), icon=":material/warning:")
        else:
            st.toast("Cancelling the training job…", icon=":material/stop_circle:")


def _outcome(job: Job, user: User) -> None:
    if job.state == SUCCEEDED:
        st.success(job.message, icon=":material/check_circle:")
        _new_model(job, user)
    elif job.state == CANCELLED:
        st.info(job.message, icon=":material/cancel:")
    elif user.is_admin:
        st.error(escape_markdown(without_server_paths(job.message or "The job failed.", job.settings.data_dir)),
                 icon=":material/error:")  # a folder's own names, plain (a review: one named like a link was one)
    else:  # the reason may name server folders
        st.error("The job failed; an administrator can see why on this page.", icon=":material/error:")
    if user.is_admin and job.state != SUCCEEDED:
        _resume(job, user)


def _resume(job: Job, user: User) -> None:
    """Resume for a job that ended unfinished with a saved run: a new job continues from its last epoch. None
    after a resume refused because the folder's films or the settings differ from the run's: each click started a
    job refused the same way (a review)."""
    if job.status.resume_refused:
        return
    try:
        run = resumable_run(job)
    except TriageError:
        return
    if run is None or not st.button("Resume training", icon=":material/resume:", key=f"resume-{job.job_id}",
                                    help=f"Starts a new job with the same settings that continues this run "
                                         f"{run.where}."):
        return
    try:
        resume_job(job.job_id, job.folder.parent, who=user.who)
    except JobAlreadyRunning as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
    except TriageError as exc:
        st.error(f"Training was not resumed. {escape_markdown(without_server_paths(str(exc), job.settings.data_dir))}",
                 icon=":material/error:")
    else:
        st.toast("Resuming the training job…", icon=":material/resume:")
        st.rerun()


def interrupted_runs(jobs: list[Job], user: User) -> None:
    """Earlier jobs (newest first after the one the panel shows) that ended unfinished with a saved run no later
    job has taken over: each keeps its Resume, so a run is not stranded once another job has started. Nothing
    while a job runs (it may be resuming one of them)."""
    if not user.is_admin or len(jobs) < 2 or jobs[0].is_active:
        return
    seen = {run.key for run in [_saved_run(jobs[0])] if run is not None}
    for job in jobs[1:]:
        run = _saved_run(job)
        if run is None or run.key in seen:
            continue
        seen.add(run.key)
        if job.status.resume_refused:
            continue
        with st.container(border=True):
            st.markdown(f"**Interrupted run** of job {job.job_id}: {job.config.arch}, {job.config.epochs} epoch(s), "
                        f"{job.config.image_size} px, on {code_span(_dataset(job))}; stopped {run.where}.")
            _resume(job, user)


def _saved_run(job: Job):
    try:
        return resumable_run(job)
    except TriageError:
        return None


def _new_model(job: Job, user: User) -> None:
    summary = job.status.summary or JobSummary()
    figures = (("Validation AUC", summary.auc, summary.auc_ci, False),
               ("Sensitivity", summary.sensitivity, summary.sensitivity_ci, True),
               ("Specificity", summary.specificity, summary.specificity_ci, True))
    columns = [column for _ in range(2) for column in st.columns(2)]  # a 2 x 2 grid: values stay whole
    for column, (title, value, interval, as_percent) in zip(columns, figures):
        column.metric(title, with_interval(value, None, as_percent), border=True,
                      help=f"95 % interval {interval_text(interval, as_percent)}")
    columns[3].metric("Training time", duration(summary.seconds), border=True)
    if not job.model:  # a status edited or damaged by hand: nothing to look up
        st.warning("This job's record names no model; the models it may have registered are listed on Compare.",
                   icon=":material/warning:")
        return
    entries, problems = registered_models()
    entry = next((e for e in entries if e.name == job.model), None)
    if entry is None:  # removed, or unreadable (its files, or the registry itself): say which
        why = next((p for p in problems if job.model in p or REGISTRY_FILE in p), None)
        st.warning(f"{job.model} cannot be shown: {why}" if why else f"{job.model} is no longer in the registry.",
                   icon=":material/warning:")
        return
    st.caption(f"On this run's validation films, with their 95 % intervals: AUC "
               f"{with_interval(summary.auc, summary.auc_ci, False)}, sensitivity "
               f"{with_interval(summary.sensitivity, summary.sensitivity_ci)}, specificity "
               f"{with_interval(summary.specificity, summary.specificity_ci)}.{validation_caveat(entry.record)} "
               "Another batch and a new site see less: read its card on Compare before making it the default.")
    reasons, advice = ([], "") if entry.is_default or not user.is_admin else refusal(entry)
    with st.container(horizontal=True, vertical_alignment="center"):
        if entry.is_default:
            st.badge(f"{entry.name} is the default model", color="green", icon=":material/star:")
        elif user.is_admin and not reasons and st.button(f"Make {entry.name} the default", type="primary",
                                                         icon=":material/star:", key=f"default-{job.job_id}",
                                                         help=f"The default of the {title_of(entry.task)} task; "
                                                              "the other tasks keep theirs."):
            promote_from_page(entry.name, user)
        st.page_link("views/compare.py", label="Compare it with the other models", icon=":material/compare_arrows:")
    if reasons:
        st.warning(f"{entry.name} cannot become the default: " + "; ".join(reasons) + f". {advice}",
                   icon=":material/block:")


def promote_from_page(name: str, user: User) -> None:
    """Make ``name`` its task's default, as ``user``; refusals said on the page, success in a toast."""
    try:
        promote(name, who=user.who)
    except PromotionRefused as exc:
        st.error(str(exc), icon=":material/block:")
    except TriageError as exc:
        st.error(f"Could not change the default: {exc}", icon=":material/error:")
    else:
        st.toast(f"{name} is now the default model.", icon=":material/star:")
        st.rerun()


def job_history(jobs: list[Job], user: User) -> pd.DataFrame:
    """Earlier jobs; their messages (which may name server folders) for administrators only."""
    return pd.DataFrame.from_records([
        {"Job": job.job_id, "State": job.state, "Model": job.model or "", "Architecture": job.config.arch,
         "Epochs": job.config.epochs,
         **({"Message": without_server_paths(job.message or "", job.settings.data_dir)} if user.is_admin else {})}
        for job in jobs
    ])


def audit_table(entries: list[AuditEntry]) -> pd.DataFrame:
    """The audit log, newest first: UTC time, who, what, which model, and the figures recorded with it."""
    return pd.DataFrame.from_records(
        [{"Time (UTC)": e.time, "Who": e.who, "Action": e.action, "Model": e.model or "",
          "Details": ", ".join(f"{k}: {_detail(v)}" for k, v in e.details.items() if v is not None)} for e in entries],
        columns=["Time (UTC)", "Who", "Action", "Model", "Details"])


def _detail(value) -> str:
    """A recorded value as a person reads it (a review: "auc: 0.9973684210526316", "site: None", "['a', 'b']");
    the log itself keeps every digit."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):  # 6 digits: at 4, thresholds 0.47098 and 0.47104 both read 0.471 (a re-read)
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(_detail(item) for item in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k} {_detail(v)}" for k, v in value.items() if v is not None) or "none"
    return str(value)
