"""Uploads held in the server's memory, bounded per browser session and for all sessions together.

Streamlit receives every uploaded file into memory and keeps it until its browser session ends, checking only
each file's size (``server.maxUploadSize``): a client that keeps uploading, or a modified one that never
removes a file, could fill the server's memory 200 MB at a time, before any page runs. :func:`install`
(called by ``python -m dashboard.serve``, i.e. ``make run``, before the server starts) replaces Streamlit's
in-memory store with :class:`BoundedUploads`, which refuses a file

- with HTTP 413 when its session already holds more than a batch may (:func:`core.serving.batch_limits.
  session_upload_limits`): the page then refuses the whole batch and says so, so nothing goes missing quietly;
- with HTTP 503 when all sessions together would hold more than ``CXR_UPLOADS_MAX_MB``: the rest of that
  batch is triaged, and its worklist would look complete if the page did not say what is missing.

Either way the page names the films it did not receive, and why (:func:`refused_uploads`).

Plain ``streamlit run dashboard/app.py`` keeps Streamlit's unbounded store; the README says so.
"""
from __future__ import annotations

import logging
import threading
from typing import NamedTuple

import streamlit as st
from starlette.exceptions import HTTPException
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from core.serving.batch_limits import MEGABYTE, server_upload_limit, session_upload_limits
from dashboard.session_store import ended, reap

_log = logging.getLogger(__name__)

SESSION_FULL = ("This upload was refused: this page already holds more films than one batch may. Remove films "
                "from the upload box, or triage them in smaller batches.")
SERVER_FULL = ("This upload was refused: the server is holding as many uploaded films as it may for all its "
               "users at once. Try again in a few minutes.")
SESSION_GONE = "This upload arrived after its page had closed. Reload the page and upload the film again."
REFUSED_NAMES_KEPT = 100  # per session; refusals past them are counted, not named
SESSION, SERVER = "session", "server"  # why a film was refused: its session's limit, or the whole server's
_SESSION_REFUSED = "refused-uploads"  # st.session_state key of what the page shows


class Refusals(NamedTuple):
    """Films the server did not receive: (why, name) of at most ``REFUSED_NAMES_KEPT``, oldest first, and how many
    more were refused besides (a resource review: a client refused again and again under new names grew the list,
    and the page's message, without end)."""

    named: list[tuple[str, str]]
    more: dict[str, int]  # why -> how many refused besides, for that reason


class BoundedUploads(MemoryUploadedFileManager):
    """Streamlit's in-memory upload store with a cap per browser session and one for the whole server."""

    def __init__(self, upload_endpoint: str, max_file_mb: float | None = None) -> None:
        super().__init__(upload_endpoint)
        if max_file_mb is None:
            from streamlit import config

            max_file_mb = float(config.get_option("server.maxUploadSize"))
        self.session_films, self.session_bytes = session_upload_limits(max_file_mb)
        self.server_bytes = server_upload_limit()
        self._adding = threading.Lock()  # one check-then-add at a time; removals only ever free room
        self._refused: dict[str, Refusals] = {}  # session -> its refusals its page has not taken yet

    def add_file(self, session_id: str, file: UploadedFileRec) -> None:
        reap()  # sessions that can no longer reconnect give their films back before any is counted
        if ended(session_id):  # let go while this film was on its way (Streamlit checks the session before the body
            # arrives): stored, it would be held for a session nobody can shut down, for the life of the server
            _log.warning("an upload was refused: its session ended while it arrived")
            raise HTTPException(status_code=410, detail=SESSION_GONE)
        with self._adding:
            films, session_bytes, server_bytes = self._held(session_id, replacing=file.file_id)
            size = len(file.data)
            if films + 1 > self.session_films or session_bytes + size > self.session_bytes:
                _log.warning("an upload was refused: its session holds %d films, %.0f MB (at most %d, %.0f MB)",
                             films, session_bytes / MEGABYTE, self.session_films, self.session_bytes / MEGABYTE)
                self._note_refusal(session_id, SESSION, file.name)
                raise HTTPException(status_code=413, detail=SESSION_FULL)
            if server_bytes + size > self.server_bytes:
                _log.warning("an upload was refused: the server holds %.0f MB of uploads (at most %.0f MB)",
                             server_bytes / MEGABYTE, self.server_bytes / MEGABYTE)
                self._note_refusal(session_id, SERVER, file.name)
                raise HTTPException(status_code=503, detail=SERVER_FULL)
            super().add_file(session_id, file)

    def _note_refusal(self, session_id: str, why: str, name: str) -> None:
        from core.films.read import shown_name  # as messages give it: a name may be 4 kB long

        with self._lock:
            refused = self._refused.setdefault(session_id, Refusals([], {}))
            if len(refused.named) < REFUSED_NAMES_KEPT:
                refused.named.append((why, shown_name(name)))
            else:
                refused.more[why] = refused.more.get(why, 0) + 1

    def _held(self, session_id: str, replacing: str) -> tuple[int, int, int]:
        """Films and bytes the session holds, and bytes all sessions hold, not counting a file it replaces."""
        with self._lock:  # Streamlit's own lock over its storage
            session = {key: rec for key, rec in self.file_storage.get(session_id, {}).items() if key != replacing}
            replaced = self.file_storage.get(session_id, {}).get(replacing)
            server = sum(len(rec.data) for files in self.file_storage.values() for rec in files.values())
        return (len(session), sum(len(rec.data) for rec in session.values()),
                server - (len(replaced.data) if replaced is not None else 0))

    def take_refused(self, session_id: str) -> Refusals:
        """The films refused since the session last asked (then forgotten)."""
        with self._lock:
            return self._refused.pop(session_id, Refusals([], {}))

    def remove_session_files(self, session_id: str) -> None:
        super().remove_session_files(session_id)
        with self._lock:
            self._refused.pop(session_id, None)


def install() -> None:
    """Make the Streamlit server about to start in this process keep its uploads in :class:`BoundedUploads`."""
    from streamlit.web.server import server

    server.MemoryUploadedFileManager = BoundedUploads


def refused_here() -> Refusals:
    """The current page's films the server refused since the page last ran; none under plain ``streamlit run`` and
    in tests without a server."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    if context is None or not Runtime.exists():
        return Refusals([], {})
    store = Runtime.instance().uploaded_file_mgr
    return store.take_refused(context.session_id) if isinstance(store, BoundedUploads) else Refusals([], {})


def release_left_uploads() -> None:
    """Free the server memory of the films this browser session uploaded, on a change of page.

    Streamlit frees a stored upload only when its user takes it out of the box, or when the session ends: the box
    of a page that is left empties, but its films stayed in the store and counted against the session's cap
    (twice a batch) and the server's, so a clinician who went to another page and came back twice was refused every
    upload, with nothing in the box to remove (found in review). Triage's upload box is the only one, and on a page
    change it is either gone or not drawn yet (this runs before the page), so nothing it shows is freed: the batch
    shown again after a visit is a copy (dashboard.kept_batch)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    if context is not None and Runtime.exists():
        Runtime.instance().uploaded_file_mgr.remove_session_files(context.session_id)


def refused_uploads(names_now: list[str]) -> Refusals:
    """The films the server refused this page, to name above the worklist until the upload box
    changes: a refusal that came after the page last ran is shown at its next run, and stays while the box
    holds what it held then.

    Refusals taken while the box was still empty belong to the drop whose accepted films have not reached the
    page yet: a run that started before the drop (e.g. waiting for the model) can take them before the box's new
    value arrives. They stay when those films arrive, and go at the box's next change after that (seen in CI: the
    refused films' names were gone by the run that showed the batch)."""
    held = st.session_state.get(_SESSION_REFUSED)  # (the box's names when refused, the refusals)
    new = refused_here()
    if held and not held[0] and names_now:  # the films of the drop those refusals came from have arrived
        held = (tuple(names_now), held[1])
    if new.named or new.more:
        earlier = held[1] if held and held[0] == tuple(names_now) else Refusals([], {})
        named = list(dict.fromkeys(earlier.named + new.named))
        more = {why: earlier.more.get(why, 0) + new.more.get(why, 0) + sum(kind == why for kind, _ in
                                                                           named[REFUSED_NAMES_KEPT:])
                for why in (SESSION, SERVER)}
        held = (tuple(names_now), Refusals(named[:REFUSED_NAMES_KEPT], {why: n for why, n in more.items() if n}))
    elif held and held[0] != tuple(names_now):
        held = None
    st.session_state[_SESSION_REFUSED] = held
    return held[1] if held else Refusals([], {})
