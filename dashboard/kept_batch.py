"""The batch a Triage page showed, kept for the browser session while its user looks at another page.

Streamlit empties an upload box whose page is left, so a clinician who checked a model on Compare came back to
no films and no worklist (found in a browser audit). The uploads' bytes are kept here, at most one batch, under
the budget every session's caches share (dashboard.state.SESSION_CACHES; past it they are simply not kept),
and shown again on return until new films are uploaded or the batch is cleared. Films taken out of the upload
box on the Triage page itself are gone, as before.
"""
from __future__ import annotations

import streamlit as st

from core.config import settings
from core.serving.film_cache import BoundedCache
from dashboard.state import SESSION_CACHES, Upload

_KEPT, _SHOWING = "kept-batch", "showing-kept-batch"
PAGE, PREVIOUS_PAGE = "page", "previous-page"  # set by dashboard/app.py on every run
TRIAGE = "Triage"


def _store() -> BoundedCache:
    if _KEPT not in st.session_state:
        st.session_state[_KEPT] = BoundedCache(settings().batch_max_mb * 2**20,
                                               lambda uploads: sum(len(u.data) for u in uploads),
                                               budget=SESSION_CACHES)
    return st.session_state[_KEPT]


def keep(uploads: list[Upload]) -> None:
    """The batch now on the page: shown again if its user leaves the page and comes back."""
    st.session_state.pop(_SHOWING, None)
    _store().put("batch", list(uploads))  # in place of the batch kept before


def kept_on_return() -> list[Upload] | None:
    """With an empty upload box: the batch kept from before the user left the page (and, once shown, on every
    run of the page until it is replaced or cleared); None, and the kept batch dropped, otherwise."""
    came_back = st.session_state.get(PREVIOUS_PAGE) not in (None, TRIAGE)
    kept = _store().get("batch") if came_back or st.session_state.get(_SHOWING) else None
    if not kept:
        clear()
        return None
    st.session_state[_SHOWING] = True
    return kept


def clear() -> None:
    st.session_state.pop(_SHOWING, None)
    _store().keep_only(lambda key: False)
