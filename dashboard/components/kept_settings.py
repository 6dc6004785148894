"""Page settings that outlive a visit to another page.

Streamlit drops a keyed widget's value when a run does not draw it (the user is on another page), so the
widget comes back at its default. :func:`restore` puts the session's last value back before the widget is
drawn; :func:`keep` records the value it returned. Values are the user's choices (a method, an opacity, a
class), never a film or a name from one.
"""
from __future__ import annotations

from typing import Any, Collection

import streamlit as st

KEPT = "kept_settings"  # widget key -> its last value, for this browser session
KEEP_AT_MOST = 256  # settings per session (each film's class is one): the least recently drawn go first


def restore(key: str, default: Any, allowed: Collection | None = None) -> str:
    """``key``, its widget's value set to the session's last one (``default`` the first time, or when the last
    one is no longer ``allowed``). Draw the widget with this key and without a value of its own."""
    if key not in st.session_state:
        value = st.session_state.setdefault(KEPT, {}).get(key, default)
        st.session_state[key] = value if allowed is None or value in allowed else default
    return key


def last_value(key: str, default: Any, allowed: Collection | None = None) -> Any:
    """The session's last value of ``key`` (``default`` the first time, or when it is no longer ``allowed``), for
    a widget that takes it as its own default: ``st.pagination`` always has one, and a value also set through the
    Session State API (:func:`restore`) logged Streamlit's warning with a stack at every return to the page."""
    value = st.session_state.setdefault(KEPT, {}).get(key, default)
    return value if allowed is None or value in allowed else default


def keep(key: str, value: Any) -> Any:
    """Record ``value`` as the widget's last one; returns it."""
    kept = st.session_state.setdefault(KEPT, {})
    kept.pop(key, None)  # to the end: the most recently drawn
    kept[key] = value
    while len(kept) > KEEP_AT_MOST:
        del kept[next(iter(kept))]
    return value
