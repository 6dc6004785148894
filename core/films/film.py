"""A decoded film: one single-channel float image in [0, 1], whatever file it came from.

Only technical, non-identifying metadata travels with it. ``model_pixels`` is the training copy's form
(:mod:`core.films.reference`), computed once per film; the model, the chest-film check and Grad-CAM all
start from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.films.reference import IN_REFERENCE_FORM, REFERENCE_SIZE, reference_form

# Bounds that keep memory and time in check for a hostile or accidental upload.
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_PIXELS = 50_000_000  # ~7000 x 7000; a large detector is ~4300 x 4300


@dataclass(frozen=True)
class Film:
    """A decoded film: ``pixels`` is float32 HxW in [0, 1], 0 = black, 1 = white (bone is bright)."""

    pixels: np.ndarray
    source_format: str
    original_size: tuple[int, int]  # (width, height) as stored, before EXIF rotation
    bit_depth: int
    metadata: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # model_pixels, once computed. Not functools.cached_property: on Python 3.11 it holds one lock for the whole
    # class, so every session's films waited on one film's reference form (50 megapixels: a few hundred ms).
    _reference: list = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def model_pixels(self) -> np.ndarray:
        """The film in the training copy's form (:func:`core.films.reference.reference_form`), once per film (two
        threads asking at once may both compute it; they get the same result).

        ValueError when the pixels break the contract (2-D grey in [0, 1]): read films with ``read_film``."""
        if not self._reference:
            self._reference.append(self._reference_form())
        return self._reference[0]

    def _reference_form(self) -> np.ndarray:
        pixels = self.pixels
        if pixels.ndim != 2:
            raise ValueError(f"film pixels must be 2-D grey, got shape {pixels.shape}")
        if pixels.size == 0 or float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0:
            raise ValueError("film pixels must lie in [0, 1]; read films with core.films.read.read_film")
        return reference_form(pixels, jpeg=self.source_format in IN_REFERENCE_FORM)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the pixels as displayed."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory the film holds once used: its pixels plus its reference form (the same array when the film
        is already in that form), counted before the form is computed so a cache's total does not grow."""
        shape = (REFERENCE_SIZE, REFERENCE_SIZE)
        same = self.pixels.shape == shape and self.source_format in IN_REFERENCE_FORM
        reference = 0 if same else REFERENCE_SIZE * REFERENCE_SIZE * 4  # float32
        return int(self.pixels.nbytes + reference)
