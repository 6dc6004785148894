"""Is this image usable as a chest film? Cheap image statistics, checked before any model is trusted.

Each failed check is a sentence for the clinician. A film with any failed check still gets
probabilities (they may help a reviewer) but no triage priority.
"""
from __future__ import annotations

import numpy as np

from core.films.film import Film

MIN_SIDE = 128
MAX_ASPECT = 2.5
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
