"""The batch a Triage page showed, kept for the browser session while its user looks at another page.

Streamlit empties an upload box whose page is left, so a clinician who checked a model on Compare came back to
no films and no worklist (found in a browser audit). The uploads' bytes are kept here, at most one batch, under
the budget every session's caches share (dashboard.state.SESSION_CACHES; past it, or taken back for another
session while this one was away, they are not kept, and the page says so on return), and shown again on return
until new films are uploaded or the batch is cleared. Films taken out of the upload
box on the Triage page itself are gone, as before.
"""
from __future__ import annotations

import streamlit as st

from core.config import settings
from core.serving.film_cache import BoundedCache
from dashboard.state import SESSION_CACHES, Upload

_KEPT, _SHOWING = "kept-batch", "showing-kept-batch"
_HELD, _LOST = "kept-batch-films", "kept-batch-lost"  # films in the batch last kept; films found gone on return
_IN_THE_BOX = "kept-batch-in-the-box"  # the batch while Streamlit's upload store still holds its very bytes
PAGE, PREVIOUS_PAGE = "page", "previous-page"  # set by dashboard/app.py on every run
TRIAGE = "Triage"


def _store() -> BoundedCache:
    if _KEPT not in st.session_state:
        st.session_state[_KEPT] = BoundedCache(settings().batch_max_mb * 2**20,
                                               lambda uploads: sum(len(u.data) for u in uploads),
                                               budget=SESSION_CACHES)
    return st.session_state[_KEPT]


def keep(uploads: list[Upload]) -> None:
    """The batch now on the page: shown again if its user leaves the page and comes back. While the upload box
    holds it, its bytes are the upload store's own (capped there), so it takes none of the caches' budget: it did,
    and with a few full batches open the next session's results found no room and every slider move read all its
    films again (a review). :func:`charge_left_batch` puts it under the budget once the store lets go."""
    st.session_state.pop(_SHOWING, None)
    st.session_state[_HELD] = len(uploads)
    _store().keep_only(lambda key: False)  # in place of the batch kept before
    st.session_state[_IN_THE_BOX] = list(uploads)


def charge_left_batch() -> None:
    """On leaving a page, once its uploads are released (dashboard.upload_store.release_left_uploads): the batch
    the Triage page showed is now held here alone, so it is kept under the budget every session's caches share,
    or not at all (the page says so on return)."""
    uploads = st.session_state.pop(_IN_THE_BOX, None)
    if uploads is not None:
        _store().put("batch", uploads)


def kept_on_return() -> list[Upload] | None:
    """With an empty upload box: the batch kept from before the user left the page (and, once shown, on every
    run of the page until it is replaced or cleared); None, and the kept batch dropped, otherwise."""
    wanted = st.session_state.get(PREVIOUS_PAGE) not in (None, TRIAGE) or st.session_state.get(_SHOWING)
    kept = _store().get("batch") if wanted else None
    if not kept:
        lost = st.session_state.get(_HELD, 0) if wanted else 0
        clear()
        st.session_state[_LOST] = lost
        return None
    st.session_state[_SHOWING] = True
    return kept


def lost_on_return() -> int:
    """How many films the batch held when ``kept_on_return`` wanted it back and found it gone (its room taken back
    for other sessions, or never found: the budget was full), once; 0 otherwise. Its user must be told."""
    return st.session_state.pop(_LOST, 0)


def clear() -> None:
    st.session_state.pop(_SHOWING, None)
    st.session_state.pop(_HELD, None)
    st.session_state.pop(_IN_THE_BOX, None)
    _store().keep_only(lambda key: False)
