"""Is this image usable as a chest film? Cheap image statistics, checked before any model is trusted.

Each failed check is a sentence for the clinician. A film with any failed check still gets
probabilities (they may help a reviewer) but no triage priority.
"""
from __future__ import annotations

import numpy as np

from core.films.film import Film

MIN_SIDE = 128
MAX_ASPECT = 2.5
# Beyond it a warning: the widest real film here is 1.73 : 1, and a band cut across a chest (2.4 : 1) was triaged
# with no word (a review). The chest-film check cannot see proportions: it reads every film squeezed to a square.
WARN_ASPECT = 2.0
MIN_CONTRAST = 0.03
SATURATED_SHARE = 0.95


def usability_problems(film: Film) -> list[str]:
    width, height = film.size
    problems = []
    if min(width, height) < MIN_SIDE:
        problems.append(f"The image is only {width}x{height} pixels; a chest film needs at least {MIN_SIDE} px a side.")
    if max(width, height) / max(1, min(width, height)) > MAX_ASPECT:
        problems.append(f"The image is strip-shaped ({width}x{height}); a chest film is roughly square.")
    pixels = film.pixels[:: max(1, height // 256), :: max(1, width // 256)]
    if float(np.std(pixels)) < MIN_CONTRAST:
        problems.append("The image is almost uniform (blank); there is no film content to read.")
    elif float(np.mean((pixels < 0.02) | (pixels > 0.98))) > SATURATED_SHARE:
        problems.append("Almost every pixel is pure black or white (saturated); the exposure cannot be read.")
    return problems


REVERSED_MARGIN = -0.02  # middle minus lung fields, on the 0-1 grey scale; below it, the film reads as reversed


def reversed_grey_levels(film: Film) -> str | None:
    """A warning when the film's middle (spine and mediastinum, bright on a chest film) is darker than its lung
    fields, as on a film whose grey levels are reversed (bone dark: a MONOCHROME1 detector's values saved as a PNG).
    Measured 2026-12-05 on every real film here: 1 of the 5,216 Kermany training films and 1 of the 251 COVID-set
    films cross the margin (a white-out lung, a film shifted sideways); of the same films reversed, 99.85 % and
    98.8 % do. A warning beside an urgent call, which stands (the films it names wrongly are real ones, one a severe
    pneumonia); a routine call is withheld (core.serving.film_checks.REVERSED_NOT_ROUTINE)."""
    width, height = film.size
    pixels = film.pixels[:: max(1, height // 256), :: max(1, width // 256)]
    rows, cols = pixels.shape
    middle = pixels[rows // 4: 3 * rows // 4, int(0.42 * cols): int(0.58 * cols)]
    band = pixels[rows // 4: int(0.65 * rows)]
    lungs = np.concatenate([band[:, int(0.15 * cols): int(0.35 * cols)].ravel(),
                            band[:, int(0.65 * cols): int(0.85 * cols)].ravel()])
    if middle.size == 0 or lungs.size == 0 or float(middle.mean() - lungs.mean()) >= REVERSED_MARGIN:
        return None
    return ("The grey levels look reversed (bone dark, lungs bright): if the film shows so, it was exported with "
            "its grey scale inverted and this reading may be wrong; export it again as it is viewed, or as DICOM.")


def shape_warning(film: Film) -> str | None:
    """A warning for a film far from a chest film's proportions (yet not strip-shaped enough to refuse)."""
    width, height = film.size
    if not WARN_ASPECT < max(width, height) / max(1, min(width, height)) <= MAX_ASPECT:
        return None
    return (f"The film is {width}x{height} pixels, {'wider' if width > height else 'taller'} than a chest film "
            "usually is: it may be cut to part of the chest; read this result against the film itself.")
