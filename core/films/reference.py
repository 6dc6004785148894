"""The reference form: every film is brought to the form of the 224-px Kermany training copy before a model
sees it. That copy is an antialiased bilinear squash of the whole film to 224 x 224, stored as 8-bit JPEG at
quality 75, and its block noise is texture a CNN learns: a full-resolution film downscaled straight to the
model's size is cleaner and scored systematically lower (docs/measurements.md has the figures). Training
films pass through unchanged; an upload then differs from a training film only in what it shows. All
architectures read at most 224 px, so no detail a model could use is lost.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

REFERENCE_SIZE = 224
REFERENCE_JPEG_QUALITY = 75
IN_REFERENCE_FORM = ("JPEG", "reference form")  # source formats whose 224-px films pass unchanged (core.films.film)


def reference_form(pixels: np.ndarray, jpeg: bool = True) -> np.ndarray:
    """Float HxW in [0, 1] -> the training copy's form: 224 x 224, 8-bit, JPEG quality 75 (as float). A film
    already 224 x 224 passes unchanged only when it is a JPEG (``jpeg``, as the training copies are): a lossless
    224-px PNG or DICOM lacks the block noise and scored 0.01-0.09 lower on every one of 16 films (a review)."""
    if pixels.shape == (REFERENCE_SIZE, REFERENCE_SIZE) and jpeg:
        return pixels
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    image = image.resize((REFERENCE_SIZE, REFERENCE_SIZE), Image.Resampling.BILINEAR)
    eight_bit = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight_bit, mode="L").save(buffer, format="JPEG", quality=REFERENCE_JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L"), dtype=np.float32) / 255.0
