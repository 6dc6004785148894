"""A browser's ``clear_cache`` message clears only its own session's state, never the caches every session shares
(a security review: Streamlit cleared them for every user at any client's asking)."""
from __future__ import annotations

import streamlit as st
from streamlit.runtime.app_session import AppSession

from dashboard import cache_guard


def test_a_clear_cache_message_keeps_the_shared_caches(monkeypatch):
    monkeypatch.setattr(AppSession, "_handle_clear_cache_request", AppSession._handle_clear_cache_request)
    runs: list[int] = []

    @st.cache_data
    def shared(x: int) -> int:
        runs.append(x)
        return x

    class Session:  # the one attribute the handler touches
        def __init__(self):
            self._session_state = {"page": "compare"}

    session = Session()
    shared(1)
    cache_guard.install()
    AppSession._handle_clear_cache_request(session)
    assert session._session_state == {}  # its own state goes, as Streamlit's handler does
    shared(1)
    assert runs == [1]  # the shared cache stayed
    shared.clear()
