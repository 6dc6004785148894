"""Colour burned into a film: arrows, rulers, circles or a viewer's overlay saved with the image. A chest film is
grey; the model, the chest-film check and Grad-CAM read its luma, where a red arrow is one more grey stroke, so
nothing else would say it is there. On every file of ../shared/data stored in colour (measured 2026-12-07: 5,430
of them, RGB JPEGs and PNGs of grey films) no pixel's channels differ by more than 60 of 255 (the widest: 23). A
film with at least :data:`MARK_PIXELS` cells holding such a pixel (at most :data:`_SIDE` cells a side) is said to hold
colour marks: a warning beside its reading, not a refusal (the marks may be small and far from the lungs)."""
from __future__ import annotations

import numpy as np
from PIL import Image

MARK_CHROMA = 60 / 255  # channels further apart than this, as a share of their range: a coloured pixel
MARK_PIXELS = 50  # coloured cells (at most _SIDE a side, each its widest pixel) that make marks: a short arrow
_SIDE = 1024
MARKS = "This film holds colour marks"


def image_marks(image: Image.Image) -> str | None:
    """:func:`colour_marks` of a Pillow image in a colour mode (None for a grey one), read a strip at a time; wholly
    transparent pixels, whatever colour they store, are not counted."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return None
    step, rows = _cells(image.height, image.width)
    pooled = []
    for top in range(0, image.height, rows):  # a film of one strip (most of them: 256 rows) is read whole, uncropped
        strip = image if rows >= image.height else image.crop((0, top, image.width, min(top + rows, image.height)))
        pixels = np.asarray(strip if strip.mode == "RGB" else strip.convert("RGBA"))
        spread = _spread(pixels)
        if pixels.shape[2] == 4:
            spread[pixels[..., 3] < 255] = 0
        pooled.append(_pooled(spread, step))
    return _said(np.concatenate(pooled), 255)


def colour_marks(rgb: np.ndarray, top: float) -> str | None:
    """The warning for colour pixels ``rgb`` (H x W x 3, channels at most ``top`` apart), or None when they are
    grey."""
    step, rows = _cells(*rgb.shape[:2])
    return _said(np.concatenate([_pooled(_spread(rgb[at:at + rows]), step) for at in range(0, rgb.shape[0], rows)]),
                 top)


def _cells(height: int, width: int) -> tuple[int, int]:
    """(pixels a side of the cells counted: at most _SIDE cells a side, rows read at once: whole cells, ~256)."""
    step = max(1, -(-max(height, width) // _SIDE))
    return step, step * max(1, 256 // step)


def _spread(pixels: np.ndarray) -> np.ndarray:
    """How far apart each pixel's colour channels lie (the first three), in their own type; never negative. Channel by
    channel: a tenth of the time of ptp(axis=2)."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)


def _pooled(spread: np.ndarray, step: int) -> np.ndarray:
    """Each step x step cell's widest spread: a stroke one pixel wide keeps its colour (a re-read: one pixel in
    ``step`` taken, the thin text on a 4,000-px film kept a sixteenth of its pixels)."""
    if step == 1:
        return spread
    height, width = spread.shape
    padded = np.zeros((-(-height // step) * step, -(-width // step) * step), dtype=spread.dtype)
    padded[:height, :width] = spread
    return padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).max(axis=(1, 3))


def _said(pooled: np.ndarray, top: float) -> str | None:
    marked = int(np.count_nonzero(pooled > MARK_CHROMA * top))
    if marked < MARK_PIXELS:
        return None
    return (f"{MARKS} ({max(marked / pooled.size, 0.001):.1%} of it: arrows, text or a viewer's overlay saved with "
            "the image). The model learnt from plain grey films and reads the marks as part of the film: where you "
            "can, upload the film as the archive holds it, without marks.")


def marks_note(warnings: tuple[str, ...] | list[str]) -> str | None:
    """Of a film's warnings, the one :func:`colour_marks` wrote, if any."""
    return next((note for note in warnings if note.startswith(MARKS)), None)
