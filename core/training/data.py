"""Training data: patient-disjoint split (near-duplicates together), class weights, the fingerprint of the films."""
from __future__ import annotations

import hashlib
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from core.errors import DatasetError, TriageError, UnreadableImage
from core.films.bounds import RASTER_FORMATS, check_declared_size
from core.films.film import MAX_PIXELS
from core.films.folders import FilmSet
from core.films.read import decode_place, read_film
from core.films.roots import film_label, open_inside_roots
from core.films.tensor import film_bytes
from core.store.records import Fingerprint

# Kermany names carry the patient: personNNN_bacteria_MMM / IM-NNNN-MMMM / NORMAL2-IM-NNNN-MMMM.
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)

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


def _kermany_patient(name: str) -> str | None:
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1).upper()
    return None


def split_words(paths, share: str, source: str) -> str:
    """How a validation ``share`` of ``source`` was split, in words, by how many of its films' names carry a
    patient (a review: the COVID set's names carry none, yet its split was called patient-disjoint)."""
    named = sum(_kermany_patient(p.name) is not None for p in paths)
    if named == len(paths):
        return f"a patient-disjoint {share} of {source}"
    return (f"a {share} of {source}, patient-disjoint for the {named} of {len(paths)} films whose names carry a "
            "patient, film by film for the rest" if named else
            f"a {share} of {source} split film by film (its names carry no patient; copies of a film together)")


def patient_id(path: Path) -> str:
    """The patient a film belongs to; films with no recognisable pattern are their own patient."""
    return _kermany_patient(path.name) or f"{path.parent.name}/{path.stem}"


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
        found = list(pool.map(_signature, paths))
    readable = np.array([s is not None for s in found], dtype=bool)
    hashes = np.array([s[0] if s else 0 for s in found], dtype=np.uint64)
    thumbs = np.stack([s[1] if s else np.zeros(THUMB_SIZE ** 2, np.float32) for s in found]) if found else \
        np.zeros((0, THUMB_SIZE ** 2), np.float32)
    return hashes, thumbs, readable


def _signature(path: Path) -> tuple[int, np.ndarray] | None:
    grey = film_grey(path)
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
            return image.convert("L")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, TriageError):
        pass
    try:
        return Image.fromarray(np.round(read_film(path).model_pixels * 255).astype(np.uint8))
    except (TriageError, ValueError):
        return None


def near_duplicates(films: FilmSet, among: np.ndarray, signatures: tuple | None = None) -> NearDuplicates:
    """Copies of the films marked in ``among`` (a mask) anywhere in ``films`` (their film_signatures, if known)."""
    hashes, thumbs, readable = signatures or film_signatures(films.paths)
    rows = np.flatnonzero(among & readable)
    found = []
    for start in range(0, len(rows), _BLOCK):
        block = rows[start:start + _BLOCK]
        close = same_films(hashes[block], thumbs[block], hashes, thumbs, readable)
        close[np.arange(len(block)), block] = False
        i, j = np.nonzero(close)
        found.append(np.stack([block[i], j], axis=1))
    if not found or not sum(len(f) for f in found):
        return NO_DUPLICATES
    pairs = np.unique(np.sort(np.concatenate(found), axis=1), axis=0)
    members = np.unique(pairs)
    _, component = connected_components(_graph(len(films), pairs), directed=False)
    return NearDuplicates(pairs, len(members), len(np.unique(component[members])))


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


def with_patients_of(films: FilmSet, others: FilmSet) -> tuple[FilmSet, FilmSet]:
    """(``films`` less the films of patients who have films in ``others``, those films): a split root's
    ``val/`` films join validation after the split, and their patients' films in ``train/`` must go with them.
    Only names that carry a patient count: ``train/Normal/01.jpeg`` and ``val/Normal/01.png`` are two films."""
    theirs = {_kermany_patient(path.name) for path in others.paths} - {None}
    moved = np.array([_kermany_patient(path.name) in theirs for path in films.paths], dtype=bool)
    return films.subset(np.flatnonzero(~moved)), films.subset(np.flatnonzero(moved))


def without_copies_of(kept: FilmSet, held_out: FilmSet) -> tuple[FilmSet, int]:
    """``kept`` less its films that copy a held-out film (another collection's copy of a held-out Kermany film
    would put that batch in training), and how many went. A named film goes with its patient, so only ``kept``'s
    unnamed films are compared with named held-out ones (a Kermany-named folder is not hashed); an unnamed held-out
    film is looked for among all of ``kept`` (a review: val/PNEUMONIA/01.jpeg copying a named train/ film)."""
    if not len(kept) or not len(held_out):
        return kept, 0
    unnamed_held = any(_kermany_patient(p.name) is None for p in held_out.paths)
    looked = np.flatnonzero([unnamed_held or _kermany_patient(p.name) is None for p in kept.paths])
    if not len(looked):
        return kept, 0
    copies = looked[copies_of(kept.subset(looked), held_out)]
    if not len(copies):
        return kept, 0
    return kept.subset(np.setdiff1d(np.arange(len(kept)), copies)), len(copies)


def same_films(hashes: np.ndarray, thumbs: np.ndarray, known_hashes: np.ndarray, known_thumbs: np.ndarray,
                known_readable: np.ndarray) -> np.ndarray:
    """films x known films: whether each pair is one film by the rule above (the hash proposes, the thumbnail
    correlation decides); a known film nothing could read matches nothing."""
    distance = np.bitwise_count(hashes[:, None] ^ known_hashes[None, :])
    return (distance <= HASH_DISTANCE) & (thumbs @ known_thumbs.T >= THUMB_CORRELATION) & known_readable[None, :]


def _graph(n: int, edges: np.ndarray) -> coo_matrix:
    return coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))


def film_groups(films: FilmSet) -> tuple[np.ndarray, NearDuplicates]:
    """The group of every film for the split: its patient, and copies of a film with no patient id in its
    name joined to it (with every film of their patients).

    Only groups that hold a film without a recognised patient id can merge, so a set of Kermany-named
    films keeps exactly its patient groups (today's splits, shipped models' validation films, resumes and
    ensembles stay as they are) and is not even hashed.
    """
    known = [_kermany_patient(p.name) for p in films.paths]
    unnamed = np.array([k is None for k in known], dtype=bool)
    ids = [patient_id(p) for p in films.paths]
    if films.sources is not None and len(set(films.sources)) > 1:  # two sets' "Normal/01" are two films
        ids = [f"{s}:{i}" if u else i for i, u, s in zip(ids, unnamed, films.sources)]
    groups = np.array(ids)
    if not unnamed.any():
        return groups, NO_DUPLICATES
    duplicates = near_duplicates(films, unnamed)
    if not len(duplicates.pairs):
        return groups, duplicates
    names, patient = np.unique(groups, return_inverse=True)
    n = len(films)
    same_patient = np.stack([np.arange(n), n + patient], axis=1)  # each film to a node of its patient
    edges = np.concatenate([same_patient, duplicates.pairs])
    _, component = connected_components(_graph(n + len(names), edges), directed=False)
    component = component[:n]
    touched = np.unique(component[duplicates.pairs[:, 0]])
    for c in touched:  # a merged group is named by its first patient: deterministic, like the others
        members = np.flatnonzero(component == c)
        groups[members] = min(groups[members])
    return groups, duplicates


def patient_split(films: FilmSet, val_fraction: float = 0.2, seed: int = 0,
                  groups: np.ndarray | None = None) -> tuple[FilmSet, FilmSet]:
    """Stratified train/validation split that keeps every patient, and every group of near-duplicates, on
    one side (``groups``: :func:`film_groups`, computed here when not given)."""
    # Stratified group folds give a fraction of 1/k; refuse fractions that would silently become another.
    n_splits = round(1 / val_fraction) if 0.0 < val_fraction < 0.5 else 0
    if n_splits < 3 or abs(1 / n_splits - val_fraction) > 0.02:  # 0.49 gave two folds, against these words
        raise ValueError(f"val_fraction must be 1/k for a whole k >= 3 (e.g. 0.1, 0.2, 0.25), not {val_fraction}")
    counts = films.class_counts()
    if len(films) and min(counts) < n_splits:  # the folds need a film of every class in each of them
        fewest = int(np.argmin(counts))
        raise DatasetError(f"Class {films.classes[fewest]} has only {counts[fewest]} film"
                           f"{'s' * (counts[fewest] != 1)}; a patient-disjoint validation part of 1/{n_splits} "
                           f"needs at least {n_splits} films of every class (a useful model needs hundreds). Add "
                           "films to that class folder.")
    groups = film_groups(films)[0] if groups is None else groups
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_index, val_index = next(folds.split(np.zeros(len(films)), films.labels, groups))
    train, val = films.subset(train_index), films.subset(val_index)
    if min(val.class_counts()) == 0:
        raise DatasetError("The validation split has a class with no films; add films or use a larger fraction.")
    return train, val


def class_weights(films: FilmSet) -> torch.Tensor:
    """Inverse-frequency weights, normalised so the average weighted film counts 1."""
    counts = np.maximum(np.asarray(films.class_counts(), dtype=np.float64), 1.0)
    weights = len(films) / (len(counts) * counts)
    return torch.tensor(weights, dtype=torch.float32)


def content_digest(*sets: FilmSet) -> str:
    """SHA-256 of the films' bytes, in order: what a fingerprint (names, sizes) misses, a film replaced by another
    of the same size (about 0.1 s for 5216 small films from the page cache). Read in pieces, each a regular file
    and no link out of the roots (a FIFO swapped in since the listing hung here: found by a review)."""
    digest = hashlib.sha256()
    for films in sets:
        for path in films.paths:
            try:
                with open_inside_roots(path) as film:
                    digest.update(os.fstat(film.fileno()).st_size.to_bytes(8, "little"))
                    while piece := film.read(1 << 20):
                        digest.update(piece)
            except UnreadableImage as exc:  # a link out of the roots
                raise DatasetError(f"Cannot use {film_label(path)}: {exc}") from None
            except OSError as exc:  # unreadable to the server's account, or removed since its folder was read
                raise DatasetError(f"Cannot use {film_label(path)}: {path.name} cannot be read "
                                   f"({exc.strerror or type(exc).__name__}). Take it out of the folder or make it "
                                   "readable.") from None
    return digest.hexdigest()


def fingerprint(films: FilmSet) -> Fingerprint:
    """Identifies the data a model saw without copying it: names, sizes and labels hashed (and each film's
    source, when the films come from several: one folder's fingerprints stay what they always were)."""
    several = films.sources is not None and len(set(films.sources)) > 1
    digest = hashlib.sha256()
    for i, (path, label) in enumerate(zip(films.paths, films.labels)):
        source = f"{films.sources[i]}:" if several else ""
        try:
            size = path.stat().st_size
        except OSError as exc:  # removed or renamed since its folder was read (a site folder, mid-calibration)
            raise DatasetError(f"Cannot use {film_label(path)}: {path.name} cannot be read "
                               f"({exc.strerror or type(exc).__name__}). Put it back, or run again.") from None
        digest.update(f"{source}{films.classes[label]}/{path.name}:{size}\n".encode(errors="surrogateescape"))
    return Fingerprint(n=len(films), class_counts=dict(zip(films.classes, films.class_counts())),
                       sha256=digest.hexdigest())
