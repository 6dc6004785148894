"""Disconnected browser sessions are shut down once they can no longer reconnect (dashboard.session_store), so
their uploaded films leave the server's memory and the server-wide upload cap.

Streamlit 1.67 drops a disconnected session from its store after ``server.disconnectedSessionTTL`` without shutting
it down (a review): three closed tabs of 40 MB each kept 120 MB held and the next user's upload was refused.
"""
from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from streamlit.runtime.session_manager import SessionInfo
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from core.serving.batch_limits import MEGABYTE
from dashboard.session_store import ClosingSessionStorage
from dashboard.upload_store import BoundedUploads


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Session:
    """What the store calls on a session: its id and shutdown (which frees its uploads, as AppSession's does)."""

    def __init__(self, session_id: str, uploads: BoundedUploads | None = None) -> None:
        self.id, self.uploads, self.shut = session_id, uploads, False

    def shutdown(self) -> None:
        self.shut = True
        if self.uploads is not None:
            self.uploads.remove_session_files(self.id)


def _save(storage: ClosingSessionStorage, session: _Session) -> _Session:
    storage.save(SessionInfo(client=None, session=session, script_run_count=1))  # as a disconnect stores it
    return session


@pytest.fixture
def storage():
    clock = _Clock()
    store = ClosingSessionStorage(maxsize=2, ttl_seconds=120, timer=clock)
    store.clock = clock
    yield store


def test_a_session_past_its_time_to_reconnect_is_shut_down_and_one_that_reconnects_is_not(storage):
    gone, back = _save(storage, _Session("gone")), _Session("back")
    storage.clock.now = 60
    _save(storage, back)
    assert storage.get("back").session is back
    storage.delete("back")  # reconnected: Streamlit takes it out of the store and goes on with it
    storage.reap()
    assert not gone.shut and not back.shut  # 60 s: both could still come back
    storage.clock.now = 121
    assert storage.get("gone") is None  # Streamlit no longer offers it for reconnecting ...
    storage.reap()
    assert gone.shut and not back.shut  # ... and now it is shut down: its films are freed


def test_a_session_pushed_out_of_a_full_store_is_shut_down(storage):
    first, second = _save(storage, _Session("first")), _save(storage, _Session("second"))
    third = _save(storage, _Session("third"))  # the store holds two: the least recently used goes
    assert first.shut and not second.shut and not third.shut
    assert [info.session.id for info in storage.list()] == ["second", "third"]


def test_a_disconnect_also_settles_sessions_whose_time_ran_out(storage):
    old = _save(storage, _Session("old"))
    storage.clock.now = 200
    _save(storage, _Session("new"))
    assert old.shut


def test_closed_tabs_films_leave_the_server_cap_before_the_next_upload_is_counted(settings_env):
    settings_env(CXR_UPLOADS_MAX_MB="3")
    clock = _Clock()
    storage = ClosingSessionStorage(timer=clock)  # Streamlit's size: 128 sessions
    uploads = BoundedUploads("/_stcore/upload_file", max_file_mb=2)
    for tab in ("tab-0", "tab-1", "tab-2"):
        uploads.add_file(tab, UploadedFileRec(file_id="f", name="film.png", type="image/png", data=b"x" * MEGABYTE))
        _save(storage, _Session(tab, uploads))  # the tab is closed with its film in the upload box
    clock.now = 119
    with pytest.raises(HTTPException) as refused:  # within their time to reconnect, their films stay
        uploads.add_file("new", UploadedFileRec(file_id="g", name="g.png", type="image/png", data=b"x" * 10))
    assert refused.value.status_code == 503
    clock.now = 121
    uploads.add_file("new", UploadedFileRec(file_id="g", name="g.png", type="image/png", data=b"x" * 10))
    assert sorted(uploads.file_storage) == ["new"]


def test_a_film_arriving_after_its_session_was_let_go_is_refused_not_held_for_ever(storage, settings_env,
                                                                                   monkeypatch):
    """Streamlit checks the session before an upload's body arrives: one that ended meanwhile (its time to reconnect
    ran out) had its film stored under a session nobody could shut down, held for the life of the server."""
    import dashboard.session_store as sessions

    connected = {"live"}
    monkeypatch.setattr(sessions, "_connected", lambda session_id: session_id in connected)
    uploads = BoundedUploads("/_stcore/upload_file", max_file_mb=2)
    _save(storage, _Session("away", uploads))  # disconnected, and may still come back
    for session in ("live", "away"):
        uploads.add_file(session, UploadedFileRec(file_id="f", name="film.png", type="image/png", data=b"x"))
    storage.clock.now = 121  # "away" can no longer come back
    with pytest.raises(HTTPException) as refused:
        uploads.add_file("away", UploadedFileRec(file_id="g", name="late.png", type="image/png", data=b"x"))
    assert refused.value.status_code == 410 and "after its page had closed" in refused.value.detail
    assert sorted(uploads.file_storage) == ["live"]  # its earlier film freed as it was shut down, the late one kept out
    monkeypatch.setattr(sessions, "_connected", lambda session_id: None)  # no server: nothing is known, nothing refused
    uploads.add_file("away", UploadedFileRec(file_id="h", name="h.png", type="image/png", data=b"x"))
