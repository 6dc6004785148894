"""Whether films the split's rule calls one film are one film in detail, where a false match costs a site its films.

The split's rule (core.training.data: a perceptual hash proposes, 32-px thumbnails correlating >= 0.96 decide)
groups generously, which costs a split nothing. It cannot tell every two children's films apart: a review found
153 pairs of films of different children in kermany-224/train that pass it (up to 0.975), 10 across NORMAL and
PNEUMONIA. Refusing a site's folder as the model's own films, or dropping its films as repeats, on such a pair
refused unseen films (a random 200 of the validation part's films were refused 20 times in 20). So those checks
confirm each pair on fine detail: 64-px thumbnails less their Gaussian blur (sigma 3 px), correlated. Measured
2026-12-06: the 153 pairs of different children 0.84 at most (median 0.61); true copies (the COVID set's five
copies within itself and its five copies of Kermany films, at another contrast and crop) 0.916 at least.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from core.films.folders import FilmSet
from core.training.data import film_grey, film_signatures, near_duplicates, same_films

DETAIL_SIZE, DETAIL_SIGMA, DETAIL_CORRELATION = 64, 3.0, 0.88
_BLOCK = 512  # films compared with every original at once


def copies_in_detail(films: FilmSet, originals: FilmSet) -> np.ndarray:
    """Which of ``films`` copy one of ``originals``: the split's rule, each pair confirmed in detail."""
    hashes, thumbs, readable = film_signatures(films.paths)
    known = film_signatures(originals.paths)
    found, details = np.zeros(len(films), dtype=bool), {}
    for start in range(0, len(films), _BLOCK):
        rows = slice(start, start + _BLOCK)
        candidates = same_films(hashes[rows], thumbs[rows], *known) & readable[rows, None]
        for i, j in zip(*np.nonzero(candidates)):
            found[start + i] = found[start + i] or _one_film(films.paths[start + i], originals.paths[j], details)
    return found


def repeats_in_detail(films: FilmSet) -> np.ndarray:
    """Pairs (k x 2 indices) of ``films`` that are one film: the split's rule, each pair confirmed in detail."""
    pairs, details = near_duplicates(films, np.ones(len(films), dtype=bool)).pairs, {}
    return pairs[[_one_film(films.paths[i], films.paths[j], details) for i, j in pairs]] if len(pairs) else pairs


def _one_film(first: Path, second: Path, details: dict) -> bool:
    """Whether the two films' fine detail correlates as a copy's does (a film whose detail cannot be read keeps
    the split's rule's answer: one film)."""
    a, b = (details[p] if p in details else details.setdefault(p, _detail(p)) for p in (first, second))
    return a is None or b is None or float(a @ b) >= DETAIL_CORRELATION


def _detail(path: Path) -> np.ndarray | None:
    """The film's 64-px thumbnail less its blur, mean-free and of unit norm; None when it cannot be read."""
    grey = film_grey(path)
    if grey is None:
        return None
    small = np.asarray(grey.resize((DETAIL_SIZE, DETAIL_SIZE), Image.Resampling.BOX), dtype=np.float32)
    fine = small - gaussian_filter(small, DETAIL_SIGMA)
    fine -= fine.mean()
    norm = float(np.linalg.norm(fine))
    return (fine / norm).ravel() if norm > 0 else None
