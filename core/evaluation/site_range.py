"""What a model's figures may be at a new site (#13): the range between two readings of real outside films.

The other collection (core.training.other_collection: Kermany-type films another dataset gathered, copies of
the training folder's films left out) is read twice by training: as collected, and framed 15 % tighter
(core.evaluation.framing), the one shift found to move every pneumonia model measured on the official Kermany
test the way it did. For each figure the range runs from the lower 95 % bound of the lower reading to the upper
bound of the higher one.

Why a range and not one interval: no single check's interval contained the project's official-test figures.
The collection as collected overstates specificity (its normals were easier) and understates sensitivity (its
pneumonias are all viral); framed tighter, it moves sensitivity up and specificity down, for the pixel models
past the official test. The official test's AUC, sensitivity and specificity lie inside this range for all five
shipped models the project measured (tests/test_other_collection.py). It is wide because a new site's films can
differ that much; it is a reason to check a site's own films (``calibrate --site-folder``), not a forecast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from core.store.base import Interval
from core.store.reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED, Report, shown_reports

READINGS = (OTHER_COLLECTION, OTHER_COLLECTION_FRAMED)  # the two reports the range spans


@dataclass(frozen=True)
class SiteRange:
    """Low and high of each figure; None where a reading lacks it (one class only, no normal class)."""

    auc: Interval | None
    sensitivity: Interval | None
    specificity: Interval | None


def site_range(as_collected: Report, framed: Report) -> SiteRange:
    """The range of AUC, sensitivity and specificity over the two readings, each with its 95 % interval."""
    def spanned(name: str) -> Interval | None:
        bounds = [getattr(report, f"{name}_ci") or _point(getattr(report, name)) for report in (as_collected, framed)]
        if any(b is None for b in bounds):
            return None
        return min(low for low, _ in bounds), max(high for _, high in bounds)

    return SiteRange(auc=spanned("auc"), sensitivity=spanned("sensitivity"), specificity=spanned("specificity"))


def stored_site_range(other_reports: Mapping[str, Report]) -> SiteRange | None:
    """The range of a version's stored reports (``ModelRecord.other_reports``); None without both readings."""
    shown = shown_reports(other_reports)
    if not all(key in shown for key in READINGS):
        return None
    return site_range(*(shown[key] for key in READINGS))


def site_range_json(other_reports: Mapping[str, Report]) -> dict[str, list[float] | None] | None:
    """``{"auc": [low, high], "sensitivity": ..., "specificity": ...}`` of the stored reports, or None."""
    spans = stored_site_range(other_reports)
    if spans is None:
        return None
    return {name: None if span is None else list(span) for name, span in
            (("auc", spans.auc), ("sensitivity", spans.sensitivity), ("specificity", spans.specificity))}


def _point(value: float | None) -> Interval | None:
    """A figure stored without its interval (older reports) spans only itself."""
    return None if value is None else (value, value)
