"""Decoded films kept for reuse (Grad-CAM after prediction), least recently used first out, capped in bytes.

One cache belongs to one browser session: films are patient data and are never shared between sessions.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from core.films.film import Film


class FilmCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._films: OrderedDict[str, Film] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(film.nbytes for film in self._films.values())

    def __len__(self) -> int:
        return len(self._films)

    def __contains__(self, key: str) -> bool:
        return key in self._films

    def get_or_decode(self, key: str, decode: Callable[[], Film]) -> Film:
        """The film stored under ``key``, decoding (and keeping) it on a miss; decode errors propagate."""
        with self._lock:
            film = self._films.get(key)
            if film is not None:
                self._films.move_to_end(key)
                return film
        film = decode()
        self.put(key, film)
        return film

    def put(self, key: str, film: Film) -> None:
        """Keep ``film`` unless it alone exceeds the cap; evict the least recently used to fit it."""
        with self._lock:
            self._films.pop(key, None)
            if film.nbytes > self.max_bytes:
                return
            self._films[key] = film
            while sum(f.nbytes for f in self._films.values()) > self.max_bytes:
                self._films.popitem(last=False)
