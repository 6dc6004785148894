"""Choosing the task (pneumonia, COVID-19, four classes, ...): a sidebar choice remembered for the browser
session, shared by the Triage and Compare pages, and the models of the chosen task.

Only tasks with at least one registered model can be chosen; the known tasks without one are named under
the choice, with how to get a model. A fresh session starts on pneumonia when it has a model.
"""
from __future__ import annotations

import streamlit as st

from core.store.registry import ModelEntry
from core.tasks import TASKS, task_title

CHOSEN_TASK = "chosen_task"  # survives page switches, unlike the widget's own state
TASK_WIDGET = "task-choice"
FIRST_TASK = "pneumonia"


def title_of(task: str) -> str:
    """The task's title (core.tasks; a task core does not name reads as its name in words)."""
    return task_title(task) or task


def tasks_with_models(entries: list[ModelEntry]) -> list[str]:
    """Tasks with at least one model: the known ones in core's order (pneumonia first), then others by name."""
    present = {entry.task for entry in entries}
    known = [task for task in TASKS if task in present]
    return known + sorted(present - set(known))


def with_defaults(entries: list[ModelEntry]) -> tuple[list[ModelEntry], list[str]]:
    """The models of the tasks that have a usable default (what Triage offers), and the tasks left out: they
    have models, but none has cleared the promotion floor to become the default (or the default cannot be
    read), so no film is triaged with them unless someone names one on the command line."""
    served = {entry.task for entry in entries if entry.is_default}
    return ([entry for entry in entries if entry.task in served],
            [task for task in tasks_with_models(entries) if task not in served])


def tasks_without_models(entries: list[ModelEntry]) -> list[str]:
    """The known tasks no registered model serves yet."""
    present = {entry.task for entry in entries}
    return [task for task in TASKS if task not in present]


def remembered_task(entries: list[ModelEntry]) -> str | None:
    """The session's task while it still has a model, else pneumonia, else the first task with a model; None
    without models. Draws nothing: a page may ask before the sidebar is drawn (to warm the right model up)."""
    tasks = tasks_with_models(entries)
    for candidate in (st.session_state.get(TASK_WIDGET), st.session_state.get(CHOSEN_TASK), FIRST_TASK):
        if candidate in tasks:
            return candidate
    return tasks[0] if tasks else None


def models_of(entries: list[ModelEntry], task: str | None) -> list[ModelEntry]:
    """The task's models, its default first, the rest in the registry's order."""
    return sorted((entry for entry in entries if entry.task == task), key=lambda entry: not entry.is_default)


def pick_task(entries: list[ModelEntry], without_default: list[str] | None = None) -> str | None:
    """Sidebar task choice, remembered for the session; None (and nothing drawn) when no model exists.
    ``without_default``: tasks whose models are left out (:func:`with_defaults`), named under the choice."""
    if without_default:
        st.sidebar.caption(f"Not offered for triage: {' and '.join(title_of(t) for t in without_default)}, whose "
                           "models include no usable default (none has cleared the promotion floor, or the default "
                           "cannot be read). An administrator makes one the default on the Retrain page; Compare "
                           "shows them.")
    task = remembered_task(entries)
    if task is None:
        return None
    st.session_state[TASK_WIDGET] = task  # a task whose last model went away falls back, never fails
    chosen = st.sidebar.radio("Task", tasks_with_models(entries), key=TASK_WIDGET, format_func=title_of,
                              help="Which question the models answer. Each task has its own models and its "
                                   "own default model.")
    st.session_state[CHOSEN_TASK] = chosen
    missing = [task for task in tasks_without_models(entries) if task not in (without_default or [])]
    if missing:
        st.sidebar.caption(f"No model yet for {' or '.join(title_of(t) for t in missing)}. An administrator "
                           "trains one on the Retrain page (a class folder, or a shipped manifest).")
    return chosen
