"""Per-session caches, capped in bytes, least recently used first out: decoded films (Grad-CAM reuses the
decode prediction made), a session's results and its heat maps.

One cache belongs to one browser session: films, their names and what was computed from them are patient
data and are never shared between sessions; they go when the session goes (or sooner, by :meth:`keep_only`).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

from core.films.film import Film

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A least-recently-used mapping whose values' sizes (``size_of``, in bytes) add up to at most
    ``max_bytes``. Sizes are measured again on every insertion: a film grows when its reference form is made."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]):
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

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
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The value stored under ``key``, computing (and keeping) it on a miss; errors propagate."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` unless it alone exceeds the cap; evict the least recently used to fit it."""
        with self._lock:
            self._items.pop(key, None)
            if self._size_of(value) > self.max_bytes:
                return
            self._items[key] = value
            while self._total() > self.max_bytes:
                self._items.popitem(last=False)

    def keep_only(self, wanted: Callable[[K], bool]) -> None:
        """Drop every entry whose key is not ``wanted`` (e.g. films no longer in the upload box)."""
        with self._lock:
            for key in [k for k in self._items if not wanted(k)]:
                del self._items[key]


class FilmCache(BoundedCache[str, Film]):
    """Decoded films keyed by their content digest."""

    def __init__(self, max_bytes: int):
        super().__init__(max_bytes, lambda film: film.nbytes)

    def get_or_decode(self, key: str, decode: Callable[[], Film]) -> Film:
        """The film stored under ``key``, decoding (and keeping) it on a miss; decode errors propagate."""
        return self.get_or_compute(key, decode)
