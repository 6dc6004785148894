"""Rate limiting of admin sign-in, in this process: per client and for the whole server.

Every attempt counts from the moment it starts (so many attempts at once cannot all slip in before the first
failure is written down); a successful sign-in forgets that client's attempts. Once a limit is reached,
attempts are refused before any passphrase is checked, until the oldest attempt in the window ages out.
The server-wide limit stops a guess spread over many addresses, but anyone can exhaust it: a client that
signed in here within :data:`TRUSTED_FOR` is held to its own limit only, so such a flood cannot lock out the
administrators who use this server. One instance is shared by every session of the server (the dashboard
keeps it in a module, not in Streamlit's caches).
"""
from __future__ import annotations

import math
import threading
from collections import deque
from datetime import datetime, timedelta
from typing import Callable

from core import clock
from core.access.errors import SignInRefused

PER_CLIENT = 5
OVERALL = 30
WINDOW = timedelta(minutes=15)
TRUSTED_FOR = timedelta(days=30)


class SignInThrottle:
    """``attempt(client)`` before checking a passphrase; ``succeeded(client)`` after a right one."""

    def __init__(self, per_client: int = PER_CLIENT, overall: int = OVERALL, window: timedelta = WINDOW,
                 now: Callable[[], datetime] = clock.now):
        self.per_client, self.overall, self.window, self._now = per_client, overall, window, now
        self._clients: dict[str, deque[datetime]] = {}
        self._all: deque[datetime] = deque()
        self._signed_in: dict[str, datetime] = {}  # client -> its last right passphrase
        self._lock = threading.Lock()

    def attempt(self, client: str) -> None:
        """Count one attempt from ``client``, or raise SignInRefused saying how long to wait."""
        with self._lock:
            now = self._now()
            self._forget_before(now - self.window)
            mine = self._clients.setdefault(client, deque())
            if len(mine) >= self.per_client:
                raise SignInRefused(f"Too many sign-in attempts from here; try again in {self._wait(mine, now)}.")
            if len(self._all) >= self.overall and not self._trusted(client, now):
                raise SignInRefused("Too many sign-in attempts on this server; try again in "
                                    f"{self._wait(self._all, now)}.")
            mine.append(now)
            self._all.append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)
            self._signed_in[client] = self._now()

    def _trusted(self, client: str, now: datetime) -> bool:
        for known in [c for c, when in self._signed_in.items() if when <= now - TRUSTED_FOR]:
            del self._signed_in[known]
        return client in self._signed_in

    def _forget_before(self, oldest: datetime) -> None:
        while self._all and self._all[0] <= oldest:
            self._all.popleft()
        for client in list(self._clients):
            times = self._clients[client]
            while times and times[0] <= oldest:
                times.popleft()
            if not times:
                del self._clients[client]

    def _wait(self, times: deque[datetime], now: datetime) -> str:
        minutes = max(1, math.ceil((times[0] + self.window - now).total_seconds() / 60))
        return f"{minutes} minute{'s' if minutes > 1 else ''}"
