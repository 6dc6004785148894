"""Films being read and run through a model at once in this server process, for every browser session together.

The caches (core.serving.film_cache) count what sessions keep; a film being decoded, and held at full size while
it waits for the model's turn, was counted nowhere: a 21 kB flat 4000 x 4000 PNG is a 61 MB float32 film, and a
client that opened a hundred sessions, each uploading it, held about 6 GB (found by a review). At most
:data:`MAX_FILMS_IN_FLIGHT` films are in flight at once (the model takes one at a time anyway); a film that
waits longer than :data:`WAIT_S` for its turn is refused with :class:`~core.errors.ServerBusy`, a TryAgainLater:
the app keeps no result of it, so its next run tries again. The films of one page run share a :class:`Patience`:
once one of them has waited its time out, the rest try once without waiting (a review: each film of a batch of
50, and each overlay, waited its own 120 s, so the page showed nothing for up to 100 minutes).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from core.errors import ServerBusy

MAX_FILMS_IN_FLIGHT = 4
WAIT_S = 120.0
BUSY = ("The server is busy reading other users' films, so this film was not read. It will be read at the page's "
        "next run: press R, or change anything on the page, in a moment.")

_slots = threading.BoundedSemaphore(MAX_FILMS_IN_FLIGHT)


class Patience:
    """How long the films of one run wait for a slot: :data:`WAIT_S`, until one of them found the server busy."""

    def __init__(self) -> None:
        self.spent = False

    @property
    def wait_s(self) -> float | None:
        """None (the server's limit), or 0.0 once a wait has run out."""
        return 0.0 if self.spent else None


@contextmanager
def film_in_flight(patience: Patience | None = None) -> Iterator[None]:
    """``with film_in_flight(): decode, predict``: one of the process's slots, held for the block."""
    wait_s = patience.wait_s if patience is not None else None
    if not _slots.acquire(timeout=WAIT_S if wait_s is None else wait_s):
        if patience is not None:
            patience.spent = True
        raise ServerBusy(BUSY)
    try:
        yield
    finally:
        _slots.release()
