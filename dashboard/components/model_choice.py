"""The Triage page's model box: one task's models, its default preselected, each task's last choice remembered for
the session; a version below the promotion floor marked as such, and said so when chosen."""
from __future__ import annotations

import streamlit as st

from core.store.promotion import check_promotion
from core.store.registry import ModelEntry

CHOSEN_MODELS = "chosen_models"  # task -> the model its user chose; survives page switches, unlike the widget's state
MODEL_WIDGET = "model-choice"
REPLACED_MODELS = "replaced_models"
FOLLOWED_DEFAULTS = "followed_defaults"  # task -> (the default the box showed, the default it shows since)
SHOWN_MODELS = "shown_models"  # task -> the model the box last showed; survives page switches, unlike the widget's
BELOW_FLOOR = "below the promotion floor"  # how the box marks a version that may not become a default


def pick_model(entries: list[ModelEntry], problems: list[str], task: str | None = None) -> ModelEntry | None:
    """Sidebar model choice among ``entries`` (one task's models), the task's default preselected and each
    task's last choice remembered for the session; broken models are listed, not fatal. Until its user chooses,
    the box follows the default: a session opened before another version was made the default went on with the
    old one, now labelled as no more than one of the list (found by a review)."""
    for problem in problems:
        st.sidebar.warning(problem, icon=":material/warning:")
    if not entries:
        return None
    names = [e.name for e in entries]
    default = next((e.name for e in entries if e.is_default), names[0])
    chosen = st.session_state.setdefault(CHOSEN_MODELS, {})
    replaced = st.session_state.setdefault(REPLACED_MODELS, {})  # task -> (the chosen model that went, its stand-in)
    followed = st.session_state.setdefault(FOLLOWED_DEFAULTS, {})
    last_shown = st.session_state.setdefault(SHOWN_MODELS, {})
    shown = st.session_state.get(MODEL_WIDGET)
    if shown not in names:  # a first visit, another task, or back from another page (the widget's value is gone)
        remembered = chosen.get(task)
        if remembered is not None and remembered not in names:  # removed, or unreadable, since it was chosen
            replaced[task] = (remembered, default)
        elif remembered is None and last_shown.get(task) not in (None, default):  # the default changed while its
            followed[task] = (last_shown[task], default)  # user was away (a concurrency review: said nothing)
        st.session_state[MODEL_WIDGET] = remembered if remembered in names else default
    elif task not in chosen and shown != default:  # never chosen here: the default changed meanwhile
        followed[task] = (shown, default)
        st.session_state[MODEL_WIDGET] = default
    below = {e.name: reasons for e in entries if not e.is_default and (reasons := check_promotion(e))}
    name = st.sidebar.selectbox(
        "Model", names, key=MODEL_WIDGET, on_change=_remember_choice, args=(task,),
        format_func=lambda n: f"{n}  (default)" if n == default else f"{n}  ({BELOW_FLOOR})" if n in below else n,
        help="This task's models, from the shipped and the site's models folders. The default is preselected; "
             "make another the default on the Retrain page. A version marked below the promotion floor could not "
             "be made the default: its validation does not support triage.",
    )
    if name in below:  # a review: a one-epoch version at AUC 0.000 on 4 films was a plain option, and flagged all
        st.sidebar.warning(f"{name} is {BELOW_FLOOR}: {'; '.join(below[name])}. Its priorities are not validated "
                           "for triage: use it to compare, not to decide, or choose the default.",
                           icon=":material/gpp_maybe:")
    gone, stand_in = replaced.get(task, (None, None))
    before, now = followed.get(task, (None, None))
    if gone is not None and name == stand_in:  # said until someone picks a model again
        st.sidebar.warning(f"{gone}, the model chosen before, is no longer available (removed, or it cannot be "
                           f"read), so films are triaged with {name}. Choose another model above if you prefer.",
                           icon=":material/warning:")
    else:
        replaced.pop(task, None)
    if before is not None and name == now and task not in chosen:
        st.sidebar.info(f"{name} has been made this task's default since this page was opened (before: {before}), "
                        "so films are now triaged with it. Choose another model above if you prefer.",
                        icon=":material/update:")
    else:
        followed.pop(task, None)
    last_shown[task] = name
    return entries[names.index(name)]


def _remember_choice(task: str | None) -> None:
    """The model box's ``on_change``: only a choice its user made is kept (see :func:`pick_model`)."""
    st.session_state.setdefault(CHOSEN_MODELS, {})[task] = st.session_state[MODEL_WIDGET]
