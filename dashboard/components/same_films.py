"""Whether the models on the Compare page were read on the same films: a table of figures from different films
is not a like-for-like comparison, and says so."""
from __future__ import annotations

from core.store.registry import ModelEntry
from core.store.reports import Report


def films_apart(rows: list[tuple[ModelEntry, Report]]) -> str | None:
    """Words for a table whose models were read on different films (a stored validation report by its films'
    fingerprint, any other report by its films' count, classes and description), else None. A review: a model
    validated on 850 films with another batch held out stood beside eight validated on 1,038, unflagged."""
    def films_of(entry: ModelEntry, report: Report) -> tuple:
        data = entry.record.data
        if report == entry.record.report and data is not None:  # equal, not the same object: a copy counts
            return ("validation", data.validation.sha256)
        return (report.n, tuple(report.class_counts), report.split)

    sets: dict[tuple, list[str]] = {}
    counts: dict[tuple, int] = {}
    for entry, report in rows:
        key = films_of(entry, report)
        sets.setdefault(key, []).append(entry.name)
        counts[key] = report.n
    if len(sets) < 2:
        return None
    groups = "; ".join(f"{', '.join(names)}: {counts[key]:,} films" for key, names in sets.items())
    stored = any(report == entry.record.report for entry, report in rows)
    return (f"These models were not read on the same films ({groups}): each row and curve is a model on its own "
            "films, not a like-for-like comparison."
            + (" Evaluating them on one folder (Evaluate on a folder, for administrators) reads them on the same "
               "films." if stored else ""))
