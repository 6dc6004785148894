"""Which films are one film: copies of a film at another contrast, size or crop (the split's rule), and, where a
false match costs a site its films, each pair confirmed in fine detail. In core.films, not core.training, so that
evaluation counts a film once as training does (core.training.data groups them for the split).

The split's rule (a perceptual hash proposes, 32-px thumbnails correlating >= 0.96 decide, below) groups
generously, which costs a split nothing. It cannot tell every two children's films apart: a review found 153 pairs
of films of different children in kermany-224/train that pass it (up to 0.975), 10 across NORMAL and PNEUMONIA.
Refusing a site's folder as the model's own films, or dropping its films as repeats, on such a pair refused unseen
films (a random 200 of the validation part's films were refused 20 times in 20). So those checks confirm each pair
on fine detail: 64-px thumbnails less their Gaussian blur (sigma 3 px), correlated. Measured 2026-12-06: the 153
pairs of different children 0.84 at most (median 0.61); true copies (the COVID set's five copies within itself and
its five copies of Kermany films, at another contrast and crop) 0.916 at least.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from core.errors import TriageError, TryAgainLater
from core.films.bounds import RASTER_FORMATS, check_declared_size
from core.films.film import MAX_PIXELS, Film
from core.films.folders import FilmSet
from core.films.read import decode_place, read_film
from core.films.tensor import film_bytes

# Near-duplicates. A 64-bit dHash (grey film at 9x8) alone cannot tell copies of a chest film from other chest
# films: at 9x8 they all look alike. Measured on the shared sets (kermany-224, covid-3class, tb): 845 pairs of
# different Kermany films share a hash exactly and 7,280 lie within distance 1, the COVID set has 19 pairs
# within 1 of which 5 are copies, and the COVID set's copies of Kermany films (same film, other contrast and
# crop) lie at distances 2-5. So the hash proposes (distance <= 8: every pair whose thumbnails correlate
# >= 0.95 lies within 12, the copies within 6) and the correlation of 32-px thumbnails decides (>= 0.96):
# the copies correlate 0.970-1.000, and no pair across the sets lies between 0.95 and 0.97.
HASH_DISTANCE = 8
THUMB_SIZE = 32
THUMB_CORRELATION = 0.96
_BLOCK = 512  # rows of the distance matrix computed at once (512 x 6000 films: a few MB)


@dataclass(frozen=True)
class NearDuplicates:
    """Pairs of films (indices) found to be copies of one another, and what they joined."""

    pairs: np.ndarray  # k x 2
    films: int  # films with at least one copy
    groups: int  # groups those films form

    def note(self) -> str | None:
        if not self.films:
            return None
        return (f"near-duplicates: {self.films} films in {self.groups} groups kept on one side of the split "
                "(perceptual hash, confirmed by thumbnail correlation)")


NO_DUPLICATES = NearDuplicates(np.zeros((0, 2), dtype=np.int64), 0, 0)


def film_signatures(paths: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(64-bit dHash per film, its unit-norm mean-free 32-px thumbnail, whether the film could be read)."""
    with ThreadPoolExecutor(max_workers=4) as pool:  # Pillow decodes and resizes without the GIL
        return stacked(list(pool.map(_signature, paths)))


def stacked(found: list[tuple[int, np.ndarray] | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Films' signatures (:func:`grey_signature`, None: unreadable) as :func:`film_signatures` gives them."""
    readable = np.array([s is not None for s in found], dtype=bool)
    hashes = np.array([s[0] if s else 0 for s in found], dtype=np.uint64)
    thumbs = np.stack([s[1] if s else np.zeros(THUMB_SIZE ** 2, np.float32) for s in found]) if found else \
        np.zeros((0, THUMB_SIZE ** 2), np.float32)
    return hashes, thumbs, readable


def _signature(path: Path) -> tuple[int, np.ndarray] | None:
    return grey_signature(film_grey(path))


def decoded_signature(film: Film) -> tuple[int, np.ndarray] | None:
    """A film already decoded, signed as :func:`film_grey` reads what Pillow cannot (its training-copy form, which
    the decode made anyway): evaluation signs the films it reads without reading them twice."""
    return grey_signature(Image.fromarray(np.round(film.model_pixels * 255).astype(np.uint8)))


def grey_signature(grey: Image.Image | None) -> tuple[int, np.ndarray] | None:
    """(64-bit dHash, unit-norm mean-free 32-px thumbnail) of an 8-bit grey film; None for none, or a blank one."""
    if grey is None:
        return None
    small = np.asarray(grey.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    dhash = int(np.packbits(small[:, 1:] > small[:, :-1]).view(">u8")[0])
    thumb = np.asarray(grey.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX), dtype=np.float32).ravel()
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return (dhash, thumb / norm) if norm > 0 else None  # a blank image is nobody's copy


def film_grey(path: Path) -> Image.Image | None:
    """The film as 8-bit grey, small: JPEGs decode at a fraction of their size (``draft``); DICOM and
    anything Pillow refuses go through the app's reader; None when nothing can read it (training says so)."""
    try:
        data = film_bytes(path)  # a regular file, no link out, never over the size limit (UnreadableImage)
        size = check_declared_size(data, path.name, MAX_PIXELS)
        # a large film waits for a decoding place, as an upload does (a review: four at once took about 1 GB)
        with decode_place(size.pixels * size.components if size else 0), \
                Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as image:
            if image.format == "JPEG":
                image.draft("L", (2 * THUMB_SIZE, 2 * THUMB_SIZE))
            if image.mode.startswith(("I", "F")):  # 16-bit or float grey: convert("L") clips every value over 255
                raise ValueError("read through the app's reader")  # (a re-read: 12-bit PNGs read as one film)
            return image.convert("L")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, TriageError):
        pass
    try:
        return Image.fromarray(np.round(read_film(path).model_pixels * 255).astype(np.uint8))
    except TryAgainLater:  # says nothing of the film (a busy server): None would make every pair one film
        raise
    except (TriageError, ValueError):
        return None


def near_duplicates(films: FilmSet, among: np.ndarray, signatures: tuple | None = None,
                    in_detail: bool = False) -> NearDuplicates:
    """Copies of the films marked in ``among`` (a mask) anywhere in ``films`` (their film_signatures, if known), by
    the split's rule, each pair also confirmed in fine detail where ``in_detail``.

    The pairs kept are a spanning forest of those found: every group joined by pairs that were found, not every
    pair. A folder of 3,000 near-identical films holds 4.5 M pairs: kept and confirmed one by one they took 60 s and
    510 MB (bench/copies.py, 2026-12-07). Films are taken 512 at a time; a pair whose films earlier blocks joined is
    neither confirmed nor kept (within a block every pair is confirmed, by matrix products)."""
    hashes, thumbs, readable = signatures or film_signatures(films.paths)
    rows, n = np.flatnonzero(among & readable), len(films)
    forest, detail = np.zeros((0, 2), dtype=np.int64), _Detail()
    for start in range(0, len(rows), _BLOCK):
        block = rows[start:start + _BLOCK]
        close = same_films(hashes[block], thumbs[block], hashes, thumbs, readable)
        close &= (np.arange(n)[None, :] > block[:, None]) | ~among[None, :]  # each pair once, and never a film itself
        i, j = np.nonzero(close)
        pairs = np.stack([block[i], j], axis=1)
        if len(forest):
            _, joined = connected_components(pair_graph(n, forest), directed=False)
            pairs = pairs[joined[pairs[:, 0]] != joined[pairs[:, 1]]]
        if in_detail:
            pairs = pairs[detail.confirmed(pairs, films.paths, films.paths)]
        forest = spanning_forest(n, np.concatenate([forest, pairs]))
    if not len(forest):
        return NO_DUPLICATES
    members = np.unique(forest)
    _, component = connected_components(pair_graph(n, forest), directed=False)
    return NearDuplicates(forest, len(members), len(np.unique(component[members])))


def spanning_forest(n: int, pairs: np.ndarray) -> np.ndarray:
    """Of ``pairs`` (k x 2 indices of n films), as few as join the same groups: each sorted, in order."""
    if not len(pairs):
        return pairs
    tree = minimum_spanning_tree(pair_graph(n, pairs).tocsr()).tocoo()
    return np.unique(np.sort(np.stack([tree.row, tree.col], axis=1).astype(np.int64), axis=1), axis=0)


def groups_of(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    """The groups of two or more of n films that ``pairs`` join, each its films' indices in order, the groups in
    the order of their first films."""
    if not len(pairs):
        return []
    _, group = connected_components(pair_graph(n, pairs), directed=False)
    order = np.argsort(group, kind="stable")
    return sorted((g for g in np.split(order, np.flatnonzero(np.diff(group[order])) + 1) if len(g) > 1),
                  key=lambda g: g[0])


def first_of_each(n: int, pairs: np.ndarray) -> np.ndarray:
    """Of n films joined into groups by ``pairs``, the films to keep: every film in no pair, and the first of each
    group (a pair's later film alone would keep two of A~C, B~C)."""
    _, group = connected_components(pair_graph(n, pairs), directed=False)
    return np.sort(np.unique(group, return_index=True)[1])


def copies_of(films: FilmSet, originals: FilmSet, signatures: tuple | None = None) -> np.ndarray:
    """Which of ``films`` (their film_signatures, if known) are near-duplicates (the same film at another contrast
    or size, or a light crop) of one of ``originals``, by the rule above; a film nothing can read is nobody's copy."""
    hashes, thumbs, readable = signatures or film_signatures(films.paths)
    known_hashes, known_thumbs, known_readable = film_signatures(originals.paths)
    found = np.zeros(len(films), dtype=bool)
    for start in range(0, len(films), _BLOCK):
        rows = slice(start, start + _BLOCK)
        same = same_films(hashes[rows], thumbs[rows], known_hashes, known_thumbs, known_readable)
        found[rows] = same.any(axis=1) & readable[rows]
    return found

def same_films(hashes: np.ndarray, thumbs: np.ndarray, known_hashes: np.ndarray, known_thumbs: np.ndarray,
                known_readable: np.ndarray) -> np.ndarray:
    """films x known films: whether each pair is one film by the rule above (the hash proposes, the thumbnail
    correlation decides); a known film nothing could read matches nothing."""
    distance = np.bitwise_count(hashes[:, None] ^ known_hashes[None, :])
    return (distance <= HASH_DISTANCE) & (thumbs @ known_thumbs.T >= THUMB_CORRELATION) & known_readable[None, :]


def pair_graph(n: int, edges: np.ndarray) -> coo_matrix:
    return coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))


DETAIL_SIZE, DETAIL_SIGMA, DETAIL_CORRELATION = 64, 3.0, 0.88


def copies_in_detail(films: FilmSet, originals: FilmSet) -> np.ndarray:
    """Which of ``films`` copy one of ``originals``: the split's rule, each pair confirmed in detail."""
    hashes, thumbs, readable = film_signatures(films.paths)
    known = film_signatures(originals.paths)
    found, detail = np.zeros(len(films), dtype=bool), _Detail()
    for start in range(0, len(films), _BLOCK):
        rows = slice(start, start + _BLOCK)
        i, j = np.nonzero(same_films(hashes[rows], thumbs[rows], *known) & readable[rows, None])
        pairs = np.stack([start + i, j], axis=1)
        found[pairs[detail.confirmed(pairs, films.paths, originals.paths), 0]] = True
    return found


def repeats_in_detail(films: FilmSet, signatures: tuple | None = None) -> np.ndarray:
    """Pairs (k x 2 indices, each sorted) of ``films`` (their :func:`film_signatures`, if known) that are one film:
    the split's rule, each pair confirmed in detail; a spanning forest of them (:func:`near_duplicates`)."""
    return near_duplicates(films, np.ones(len(films), dtype=bool), signatures, in_detail=True).pairs


# films compared with all their candidates at once: against 3,000 candidates, 0.8 MB of products and the candidates'
# details, 49 MB in single precision (a 24-MB half-precision stack on the way)
_DETAIL_ROWS = 64


class _Detail:
    """Films' fine detail (:func:`_detail`), each read once (kept in half precision, 8 kB a film) and compared in
    blocks: a matrix product, not a pair at a time."""

    def __init__(self) -> None:
        self._read: dict[Path, np.ndarray | None] = {}

    def confirmed(self, pairs: np.ndarray, first: tuple[Path, ...], second: tuple[Path, ...]) -> np.ndarray:
        """Which ``pairs`` (film of ``first``, film of ``second``) correlate in fine detail as a copy's does; a film
        whose detail cannot be read keeps the split's rule's answer: one film."""
        keep = np.zeros(len(pairs), dtype=bool)
        rows = np.unique(pairs[:, 0])
        for chunk in np.array_split(rows, -(-len(rows) // _DETAIL_ROWS)) if len(rows) else ():
            at = np.isin(pairs[:, 0], chunk)
            columns, column = np.unique(pairs[at, 1], return_inverse=True)
            row = np.searchsorted(chunk, pairs[at, 0])
            a, a_read = self._matrix([first[i] for i in chunk])
            b, b_read = self._matrix([second[j] for j in columns])
            keep[at] = ((a @ b.T)[row, column] >= DETAIL_CORRELATION) | ~a_read[row] | ~b_read[column]
        return keep

    def _matrix(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        found = [self._read[p] if p in self._read else self._read.setdefault(p, _detail(p)) for p in paths]
        read = np.array([f is not None for f in found], dtype=bool)
        none = np.zeros(DETAIL_SIZE ** 2, dtype=np.float16)
        return np.stack([none if f is None else f for f in found]).astype(np.float32), read


def _detail(path: Path) -> np.ndarray | None:
    """The film's 64-px thumbnail less its blur, mean-free and of unit norm; None when it cannot be read."""
    grey = film_grey(path)
    if grey is None:
        return None
    small = np.asarray(grey.resize((DETAIL_SIZE, DETAIL_SIZE), Image.Resampling.BOX), dtype=np.float32)
    fine = small - gaussian_filter(small, DETAIL_SIGMA)
    fine -= fine.mean()
    norm = float(np.linalg.norm(fine))
    return (fine / norm).ravel().astype(np.float16) if norm > 0 else None
