"""The one clock: every time the product writes down is UTC, in ISO 8601 with a trailing ``Z``."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None = None) -> str:
    """``2026-11-30T03:02:57Z``: what JSON records, statuses and the registry store."""
    return (moment or now()).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime | None:
    """An ISO time written by :func:`iso` (or an older local one with an offset) -> aware datetime."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def stamp() -> str:
    """``20261130-030257``: sortable, for job ids."""
    return now().strftime("%Y%m%d-%H%M%S")


def time_of_day() -> str:
    """``03:02:57Z``: log lines."""
    return now().strftime("%H:%M:%SZ")


def seconds() -> float:
    """Seconds since the epoch (for progress events and elapsed times; no time zone involved)."""
    return time.time()
