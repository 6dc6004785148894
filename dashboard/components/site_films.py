"""How Compare titles a version's site films: by their folder and a digest of the films, so two versions calibrated
on two sites' films, or on one folder before and after its films changed, never share a row or a chart series
(two reviews: every site report had one title, and then one per folder name)."""
from __future__ import annotations

from core.store.records import ModelRecord


def site_films_title(record: ModelRecord, title: str) -> str:
    """``title`` with the site folder (a data-root label) and the first characters of its films' digest."""
    calibration = record.calibration
    if calibration is None or calibration.folder is None:
        return title
    films = f" ({calibration.films.sha256[:8]})" if calibration.films is not None else ""
    return f"{title}: {calibration.folder}{films}"
