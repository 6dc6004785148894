"""Colour burned into a film: arrows, rulers, circles or a viewer's overlay saved with the image. A chest film is
grey; the model, the chest-film check and Grad-CAM read its luma, where a red arrow is one more grey stroke, so
nothing else would say it is there. On every file of ../shared/data stored in colour (measured 2026-12-07: 5,430
of them, RGB JPEGs and PNGs of grey films) no pixel's channels differ by more than 60 of 255 (the widest: 23). A
film with at least :data:`MARK_PIXELS` such pixels, counted at most :data:`_SIDE` pixels a side, is said to hold
colour marks: a warning beside its reading, not a refusal (the marks may be small and far from the lungs)."""
from __future__ import annotations

import numpy as np
from PIL import Image

MARK_CHROMA = 60 / 255  # channels further apart than this, as a share of their range: a coloured pixel
MARK_PIXELS = 50  # coloured pixels (of the film at most _SIDE a side) that make marks: a short arrow at 1,024 px
_SIDE = 1024
MARKS = "This film holds colour marks"


def image_marks(image: Image.Image) -> str | None:
    """:func:`colour_marks` of a Pillow image in a colour mode (None for a grey one), on a copy at most
    :data:`_SIDE` pixels a side taken pixel by pixel (no blending: a mark's colour stays its own); wholly
    transparent pixels, whatever colour they store, are not counted."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return None
    step = -(-max(image.size) // _SIDE)
    small = image.resize((max(1, image.width // step), max(1, image.height // step)), Image.Resampling.NEAREST)
    if small.mode == "RGB":
        return colour_marks(np.asarray(small), 255)
    rgba = np.asarray(small.convert("RGBA"))
    return colour_marks(rgba[..., :3], 255, opaque=rgba[..., 3] == 255)


def colour_marks(rgb: np.ndarray, top: float, opaque: np.ndarray | None = None) -> str | None:
    """The warning for colour pixels ``rgb`` (H x W x 3, nominal maximum ``top``), or None when they are grey."""
    step = max(1, -(-max(rgb.shape[:2]) // _SIDE))
    small = rgb[::step, ::step, :3]
    red, green, blue = small[..., 0], small[..., 1], small[..., 2]  # channel by channel: a tenth of ptp(axis=2)
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)  # never negative
    coloured = spread > MARK_CHROMA * top
    if opaque is not None:
        coloured &= opaque[::step, ::step]
    marked = int(np.count_nonzero(coloured))
    if marked < MARK_PIXELS:
        return None
    return (f"{MARKS} ({max(marked / coloured.size, 0.001):.1%} of it: arrows, text or a viewer's overlay saved with "
            "the image). The model learnt from plain grey films and reads the marks as part of the film: where you "
            "can, upload the film as the archive holds it, without marks.")


def marks_note(warnings: tuple[str, ...] | list[str]) -> str | None:
    """Of a film's warnings, the one :func:`colour_marks` wrote, if any."""
    return next((note for note in warnings if note.startswith(MARKS)), None)
