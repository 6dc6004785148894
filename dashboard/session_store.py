"""Browser sessions that disconnect and never come back are shut down, freeing their uploads and media files.

Streamlit keeps a disconnected session for ``server.disconnectedSessionTTL`` (2 minutes) so that a network blip
can reconnect to it. Past that it drops the session from its store, a TTL cache, without shutting it down
(Streamlit 1.67) — and shutting down is what frees the session's uploaded films and its media files (display
copies, overlays, the worklist CSV, often named after patients). So a tab closed, or a laptop put to sleep, with
films in the upload box kept them in the server's memory for the life of the server; a few such batches filled
the server-wide upload cap (dashboard.upload_store) and every user's uploads were refused until a restart (a
review).

:class:`ClosingSessionStorage` shuts a session down when its time to reconnect runs out or when it is pushed out
of the store, never when it reconnects. :func:`install` (``python -m dashboard.serve``) makes the server use it;
:func:`reap` settles sessions whose time ran out, so the upload store counts only living sessions' films, and
:func:`ended` tells it a session it must no longer store films for.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from streamlit.runtime.caching.ttl_cache import TTLCache
from streamlit.runtime.memory_session_storage import MemorySessionStorage
from streamlit.runtime.session_manager import SessionInfo

_log = logging.getLogger(__name__)
_installed: list["ClosingSessionStorage"] = []  # the server's, once it has made one


class _DroppingCache(TTLCache):
    """A TTL cache that remembers the sessions it dropped on its own (expired, or least recently used when
    full), for its storage to shut down; sessions taken out by ``del`` (a reconnect, a close) are not."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float]) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self.dropped: list[SessionInfo] = []

    def expire(self, at_time: float | None = None) -> list:
        removed = super().expire(at_time)
        self.dropped += [info for _, info in removed]
        return removed

    def _evict_lru(self, reason):
        info = super()._evict_lru(reason)
        self.dropped.append(info)
        return info


class ClosingSessionStorage(MemorySessionStorage):
    """Streamlit's store of disconnected sessions, which shuts a session down once it can no longer reconnect."""

    def __init__(self, maxsize: int = 128, ttl_seconds: int = 2 * 60,
                 timer: Callable[[], float] = time.monotonic) -> None:
        super().__init__(maxsize=maxsize, ttl_seconds=ttl_seconds)
        self._cache = _DroppingCache(maxsize, ttl_seconds, timer)
        self._lock = threading.RLock()
        _installed[:] = [self]

    def get(self, session_id: str) -> SessionInfo | None:
        with self._lock:
            return super().get(session_id)

    def save(self, session_info: SessionInfo) -> None:
        with self._lock:
            super().save(session_info)  # reaps the expired first, perhaps evicts one
            self._shut_dropped()

    def delete(self, session_id: str) -> None:
        with self._lock:
            super().delete(session_id)

    def list(self) -> list[SessionInfo]:
        with self._lock:
            return super().list()

    def reap(self) -> None:
        """Shut down every stored session whose time to reconnect has run out."""
        with self._lock:
            self._cache.expire()
            self._shut_dropped()

    def _shut_dropped(self) -> None:
        dropped, self._cache.dropped = self._cache.dropped, []
        for info in dropped:
            try:
                info.session.shutdown()
            except Exception:  # noqa: BLE001 - one session's failure must not keep the others' films
                _log.warning("a disconnected session could not be shut down", exc_info=True)


def reap() -> None:
    """Shut down the sessions whose time to reconnect ran out; nothing under plain ``streamlit run``."""
    for storage in _installed:
        storage.reap()


def ended(session_id: str) -> bool:
    """Whether the server has let session ``session_id`` go: neither connected nor able to reconnect. False where
    nothing is known of its sessions (plain ``streamlit run``, or no server)."""
    connected = _connected(session_id)
    if connected is None or not _installed:
        return False
    return not connected and all(storage.get(session_id) is None for storage in _installed)


def _connected(session_id: str) -> bool | None:
    """Whether the session is connected now; None without a running server."""
    from streamlit.runtime import Runtime

    return Runtime.instance().is_active_session(session_id) if Runtime.exists() else None


def install() -> None:
    """Make the Streamlit server about to start in this process keep disconnected sessions in
    :class:`ClosingSessionStorage`."""
    from streamlit.web.server import server

    server.MemorySessionStorage = ClosingSessionStorage
