"""How much one upload batch may hold: films and megabytes (core.config ``batch_max_films``/``batch_max_mb``).

Past a limit no film of the batch is triaged, rather than the first few: a worklist that quietly leaves
films out could be read as complete. The message says what the batch holds, what is allowed and what to do.
"""
from __future__ import annotations

from typing import Sequence

from core.config import settings
from core.errors import BatchTooLarge

MEGABYTE = 2**20  # as Streamlit's server.maxUploadSize counts


def check_batch(sizes: Sequence[int]) -> None:
    """``sizes``: the bytes of each film in the batch; BatchTooLarge when it holds too many or too much."""
    limits = settings()
    films, megabytes = len(sizes), sum(sizes) / MEGABYTE
    over = []
    if films > limits.batch_max_films:
        over.append(f"{films} films (at most {limits.batch_max_films})")
    if megabytes > limits.batch_max_mb:
        over.append(f"{megabytes:,.0f} MB (at most {limits.batch_max_mb:,} MB)")
    if over:
        raise BatchTooLarge(
            f"This batch is too large: {' and '.join(over)}. None of its films was triaged, so that no film is "
            "left off the worklist unnoticed. Remove some films from the upload box, or triage them in smaller "
            "batches one after the other.")
