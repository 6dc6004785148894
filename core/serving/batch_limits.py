"""How much one upload batch may hold: films and megabytes (core.config ``batch_max_films``/``batch_max_mb``).

Past a limit no film of the batch is triaged, rather than the first few: a worklist that quietly leaves
films out could be read as complete. The message says what the batch holds, what is allowed and what to do.
"""
from __future__ import annotations

from typing import Sequence

from core.config import settings
from core.errors import BatchTooLarge
from core.wording import megabytes_over

MEGABYTE = 2**20  # as Streamlit's server.maxUploadSize counts


def check_batch(sizes: Sequence[int], not_received: int = 0) -> None:
    """``sizes``: the bytes of each film in the batch received; ``not_received``: films of the same batch the server
    refused to take in (they count: a browser review chose 121 films and was told the batch held 100, the number the
    server took). BatchTooLarge when it holds too many or too much."""
    limits = settings()
    films, megabytes = len(sizes) + not_received, sum(sizes) / MEGABYTE
    over = []
    if films > limits.batch_max_films:
        over.append(f"{films} films (at most {limits.batch_max_films})")
    if megabytes > limits.batch_max_mb:  # of the films received: the others' sizes never reached the server
        over.append(f"{'at least ' if not_received else ''}{megabytes_over(megabytes, limits.batch_max_mb)} MB (at "
                    f"most {limits.batch_max_mb:,} MB)")
    if over:
        raise BatchTooLarge(
            f"This batch is too large: {' and '.join(over)}. None of its films was triaged, so that no film is "
            "left off the worklist unnoticed. Remove some films from the upload box, or triage them in smaller "
            "batches one after the other.")


def session_upload_limits(max_file_mb: float) -> tuple[int, int]:
    """Films and bytes the server holds for one browser session before it refuses further uploads, given the
    largest single upload (Streamlit's ``server.maxUploadSize``, in MB).

    Twice a batch's own limits, plus one largest file: an upload is refused only when the session already
    holds more than a batch may, so the page then refuses the whole batch and says so (no worklist is drawn
    with the refused films quietly missing); up to twice a batch, the films it counts are all those sent."""
    limits = settings()
    return 2 * limits.batch_max_films, int((2 * limits.batch_max_mb + max_file_mb) * MEGABYTE)


def server_upload_limit() -> int:
    """Bytes of uploads the server holds for all browser sessions together (``CXR_UPLOADS_MAX_MB``)."""
    return settings().uploads_max_mb * MEGABYTE
