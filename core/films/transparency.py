"""Films with transparency a viewer would show over its background: refused where that leaves them with no one
reading (core.films.read). Wholly transparent pixels of an alpha channel or palette are read as shown over black
(read._to_grey_float); pixels half transparent, or a grey or colour PNG's transparent colour (tRNS) where the
film holds it, are not."""
from __future__ import annotations

import numpy as np
from PIL import Image

from core.errors import UnreadableImage


def refuse_transparency(image: Image.Image, label: str) -> None:
    """Raise UnreadableImage, naming the film, when how it looks depends on what it is shown over."""
    _partly_transparent(image, label)
    _transparent_level(image, label)


def has_alpha(image: Image.Image) -> bool:
    """Whether the film carries an alpha channel, or a palette with transparent entries."""
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _partly_transparent(image: Image.Image, label: str) -> None:
    """A film with pixels neither opaque nor wholly transparent has no one reading: laid over black (as a viewer
    shows transparency) a grey film at alpha 128 read at half its brightness, and four normal films urgent with no
    word said (a review). Wholly transparent margins are still shown black."""
    if not has_alpha(image):
        return
    alpha = np.asarray((image.convert("RGBA") if image.mode == "P" else image).getchannel("A"))
    if ((alpha > 0) & (alpha < 255)).any():
        raise UnreadableImage(f"{label} has semi-transparent pixels, so its grey levels depend on what it is shown "
                              "over. Export the film again without transparency (no alpha channel).")


def _transparent_level(image: Image.Image, label: str) -> None:
    """A grey or colour PNG may name one colour transparent (its tRNS chunk): where that colour is in the film, a
    viewer shows what lies behind, so the film has no one reading. It was read at the stored level (a review): a
    white transparent level reads white here and black over a dark viewer. A transparent black, or a colour the
    film does not hold, reads the same either way and is let through."""
    level = image.info.get("transparency")
    if image.mode not in ("L", "RGB") or level is None or level in (0, (0, 0, 0)):
        return
    pixels = np.asarray(image)
    held = (pixels == level) if image.mode == "L" else (pixels == np.asarray(level, dtype=pixels.dtype)).all(axis=-1)
    if not held.any():
        return
    grey = image.mode == "L" or len(set(level)) == 1
    what = f"a transparent grey level ({level if image.mode == 'L' else level[0]})" if grey else \
        f"a transparent colour {tuple(level)}"
    raise UnreadableImage(f"{label} has {what} that occurs in the film, so those pixels look different over each "
                          "background. Export the film again without transparency.")
