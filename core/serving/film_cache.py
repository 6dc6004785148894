"""Per-session caches, capped in bytes, least recently used first out: decoded films (Grad-CAM reuses the
decode prediction made), a session's results and its heat maps.

One cache belongs to one browser session: films, their names and what was computed from them are patient
data and are never shared between sessions; they go when the session goes (or sooner, by :meth:`keep_only`).
Only their sizes are shared: every session's caches count against one :class:`SharedBudget`, so the memory
a server keeps for its sessions is bounded however many sessions there are (a cache over it keeps less, and
its session computes again what it did not keep). A cache unused for :data:`IDLE_S` gives its room up to a
session that needs it: first come kept the budget for ever, so four tabs left open made every other session
decode, predict and draw its whole batch again on each click (found by a review). Short of room in the budget, a
cache first empties the caches it ``takes_room_from`` (a session's decoded films, only needed for Grad-CAM, for
its results); a page that says which entries its run needs (``wanted``) then loses the others first, and the
newcomer rather than one of them: evicting the oldest for each new entry made a batch a little larger than the
room read all its films again on every run (found by a review).
"""
from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

from core.films.film import Film

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
IDLE_S = 300.0  # a cache unused this long (its session gone quiet) is emptied for a session short of room


class SharedBudget:
    """Bytes that several caches may hold together. Each cache evicts only its own entries to stay within it
    (sessions never touch each other's data); a cache that is garbage-collected frees its share."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.lock = threading.Lock()  # taken after a cache's own lock, never before it
        self._caches: weakref.WeakSet[BoundedCache] = weakref.WeakSet()

    def join(self, cache: "BoundedCache") -> None:
        with self.lock:
            self._caches.add(cache)

    def held_by_others(self, cache: "BoundedCache") -> int:
        """Bytes the other caches hold (call with :attr:`lock` held)."""
        return sum(other.held for other in list(self._caches) if other is not cache)

    def reclaim_idle(self, cache: "BoundedCache", needed: int) -> None:
        """Empty other caches unused for IDLE_S, longest unused first, until ``needed`` bytes are free (call with
        :attr:`lock` held). A cache whose lock is taken is in use: skipped, never waited for (its owner may be
        waiting for this budget's lock)."""
        now = time.monotonic()
        for other in sorted((c for c in list(self._caches) if c is not cache), key=lambda c: c.used):
            if needed <= 0 or now - other.used < IDLE_S:
                return
            if other.held and other._lock.acquire(blocking=False):
                try:
                    needed -= other.held
                    other._items.clear()
                    other.held = 0
                finally:
                    other._lock.release()

    @property
    def held(self) -> int:
        with self.lock:
            return sum(cache.held for cache in list(self._caches))


class BoundedCache(Generic[K, V]):
    """A least-recently-used mapping whose values' sizes (``size_of``, in bytes) add up to at most
    ``max_bytes``, and, with a ``budget``, to at most what the budget's other caches leave. Sizes are measured
    again on every insertion: a film grows when its reference form is made."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int], budget: SharedBudget | None = None,
                 takes_room_from: tuple["BoundedCache", ...] = ()):
        self.max_bytes = max_bytes
        self.takes_room_from = takes_room_from  # the same session's caches, emptied first when the budget is short
        self._size_of = size_of
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.held = 0  # bytes held as of the last change, for the budget (read without this cache's lock)
        self.used = time.monotonic()  # last read or written (SharedBudget.reclaim_idle)
        self.budget = budget
        if budget is not None:
            budget.join(self)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._total()

    def _total(self) -> int:
        return sum(self._size_of(value) for value in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def keys(self) -> list[K]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            self.used = time.monotonic()
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def get_or_compute(self, key: K, compute: Callable[[], V], wanted: Callable[[K], bool] | None = None) -> V:
        """The value stored under ``key``, computing (and keeping) it on a miss; errors propagate."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value, wanted)
        return value

    def put(self, key: K, value: V, wanted: Callable[[K], bool] | None = None) -> None:
        """Keep ``value`` unless it alone exceeds the cap; evict the least recently used to fit it. Past the
        shared budget: idle caches' room, then the room of the caches this one takes room from; then, given
        ``wanted`` (the keys this run of the page needs), the entries it does not need and ``value`` itself before
        any it needs; else the least recently used, ``value`` last (then it is not kept)."""
        with self._lock:
            self.used = time.monotonic()
            self._items.pop(key, None)
            if self._size_of(value) <= self.max_bytes:
                self._items[key] = value
            total = self._total()
            while total > self.max_bytes:
                self._items.popitem(last=False)
                total = self._total()
            if self.budget is None:
                self.held = total
                return
            with self.budget.lock:
                room = self.budget.max_bytes - self.budget.held_by_others(self)
                if total > room:
                    self.budget.reclaim_idle(self, total - room)
                    for other in self.takes_room_from:
                        other.give_up(total - (self.budget.max_bytes - self.budget.held_by_others(self)))
                    room = self.budget.max_bytes - self.budget.held_by_others(self)
                if total > room and wanted is not None:
                    for old in [k for k in self._items if k != key and not wanted(k)] + [key]:
                        if total <= room:
                            break
                        self._items.pop(old, None)
                        total = self._total()
                while total > room:
                    self._items.popitem(last=False)
                    total = self._total()
                self.held = total

    def give_up(self, needed: int) -> None:
        """Evict the least recently used until ``needed`` bytes are freed or none is left (call with the budget's
        lock held: by a cache of the same session). Skipped, never waited for, while another thread holds it."""
        if needed <= 0 or not self._lock.acquire(blocking=False):
            return
        try:
            while needed > 0 and self._items:
                needed -= self._size_of(self._items.popitem(last=False)[1])
            self.held = self._total()
        finally:
            self._lock.release()

    def keep_only(self, wanted: Callable[[K], bool]) -> None:
        """Drop every entry whose key is not ``wanted`` (e.g. films no longer in the upload box)."""
        with self._lock:
            for key in [k for k in self._items if not wanted(k)]:
                del self._items[key]
            self.held = self._total()  # less than before: always within any budget


class FilmCache(BoundedCache[str, Film]):
    """Decoded films keyed by their content digest."""

    def __init__(self, max_bytes: int, budget: SharedBudget | None = None):
        super().__init__(max_bytes, lambda film: film.nbytes, budget)

    def get_or_decode(self, key: str, decode: Callable[[], Film]) -> Film:
        """The film stored under ``key``, decoding (and keeping) it on a miss; decode errors propagate."""
        return self.get_or_compute(key, decode)
