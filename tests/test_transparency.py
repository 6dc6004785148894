"""Transparency in a film (core.films.transparency): read over black where wholly transparent, refused where how
the film looks depends on what it is shown over."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import UnreadableImage
from core.films.read import read_film


def reference(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def test_transparent_regions_are_shown_on_black(plain_film, tmp_path):
    rgba = plain_film.convert("RGBA")
    alpha = np.full((plain_film.height, plain_film.width), 255, dtype=np.uint8)
    alpha[:, : plain_film.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "half-transparent.png")
    film = read_film(tmp_path / "half-transparent.png")
    half = plain_film.width // 2
    assert film.pixels[:, :half].max() == 0.0
    assert np.abs(film.pixels[:, half:] - reference(plain_film)[:, half:]).mean() < 1e-6


def _middle(im: Image.Image) -> int:
    """The grey level at the film's centre: one that occurs inside the chest."""
    return int(np.asarray(im.convert("L"))[im.height // 2, im.width // 2])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_transparent_colour_that_is_black_or_absent_reads_as_the_film(mode, plain_film, tmp_path):
    grey = np.asarray(plain_film.convert("L"))
    absent = next(level for level in range(1, 256) if not (grey == level).any())
    for level in (0, absent):  # over black, black pixels read black either way
        path = tmp_path / f"film-{level}.png"
        plain_film.convert(mode).save(path, transparency=level if mode == "L" else (level,) * 3)
        assert np.abs(read_film(path).pixels - reference(plain_film)).max() < 1e-6


REFUSED = {
    # a review: laid over black at alpha 128, four normal films read urgent at half their brightness
    "half-transparent.png": (lambda p, im: Image.merge("LA", (im.convert("L"), Image.new("L", im.size, 128))).save(p),
                             "semi-transparent"),
    # a review: a grey or colour PNG's one transparent colour (tRNS) was read at its stored grey level
    "grey-trns.png": (lambda p, im: im.convert("L").save(p, transparency=_middle(im)), "transparent grey level"),
    "rgb-trns.png": (lambda p, im: im.convert("RGB").save(p, transparency=(_middle(im),) * 3),
                     "transparent grey level"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_films_whose_look_depends_on_the_background_are_refused(name, tmp_path, plain_film):
    write, reason = REFUSED[name]
    path = tmp_path / name
    write(path, plain_film)
    for source in (path, path.read_bytes()):  # a path, and the same from memory as an upload arrives
        with pytest.raises(UnreadableImage, match=reason) as error:
            read_film(source, name=name)
        assert name in str(error.value)
