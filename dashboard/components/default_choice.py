"""Retrain's "Default model" section: any registered version can be made its task's default, through the
promotion floor, by an administrator.

Only the newest job's new version had a "Make ... the default" button: a recalibrated version, or one trained
before a later job, could not be promoted in the app at all, while the Triage and Compare pages sent people to
this page to do it (found by a review).
"""
from __future__ import annotations

import streamlit as st

from core.access.policy import User
from core.store.promotion import refusal
from dashboard.components.job_view import promote_from_page
from dashboard.components.no_models import no_models
from dashboard.components.task_choice import title_of
from dashboard.state import registered_models

MODEL_KEY = "default-choice"


def default_section(user: User) -> None:
    """For administrators only (the page asks): a model box and its button, or why it cannot be the default."""
    st.subheader("Default model")
    st.caption("Triage uses each task's default unless a clinician picks another model. A version becomes the "
               "default only if it clears the promotion floor; the change is in the audit log.")
    entries, problems = registered_models()
    if not entries:
        st.info(no_models(problems, "No model is registered yet.", True, "Train one above.", said=False),
                icon=":material/info:")
        return
    by_name = {e.name: e for e in entries}
    name = st.selectbox("Model to make the default", list(by_name), key=MODEL_KEY,
                        format_func=lambda n: f"{n} ({title_of(by_name[n].task)}"
                                              + (", default)" if by_name[n].is_default else ")"))
    entry = by_name[name]
    if entry.is_default:
        st.badge(f"{entry.name} is the default of the {title_of(entry.task)} task", color="green",
                 icon=":material/star:")
        return
    reasons, advice = refusal(entry)
    if reasons:
        st.warning(f"{entry.name} cannot become the default: " + "; ".join(reasons) + f". {advice}",
                   icon=":material/block:")
    elif st.button(f"Make {entry.name} the default", type="primary", icon=":material/star:", key="default-make",
                   help=f"The default of the {title_of(entry.task)} task; the other tasks keep theirs."):
        promote_from_page(entry.name, user)
