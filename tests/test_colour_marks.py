"""Colour burned into a film (arrows, text, a viewer's overlay) is read as grey like the rest, so only a warning
can say it is there (core/films/colour_marks.py): a browser review uploaded a film with a red arrow and was told
nothing. Real colour films of the shared data hold no such marks; the same film with an arrow drawn on it does,
stored as a PNG, a JPEG or a colour DICOM."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.films.colour_marks import MARKS, marks_note
from core.films.read import read_film
from test_dicom_grey import dicom


def _marked(path, fmt: str = "PNG", colour=(255, 0, 0), alpha: int | None = None) -> bytes:
    """The film in colour with an arrow drawn on it (at ``alpha``: an RGBA film whose arrow alone has it)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    arrow = [(rgb.width * 0.2, rgb.height * 0.2), (rgb.width * 0.4, rgb.height * 0.35)]
    if alpha is not None:
        rgb = rgb.convert("RGBA")
    ImageDraw.Draw(rgb).line(arrow, fill=colour if alpha is None else (*colour, alpha), width=max(3, rgb.width // 200))
    out = io.BytesIO()
    rgb.save(out, fmt, quality=90) if fmt == "JPEG" else rgb.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_film_with_a_coloured_arrow_is_told_so_and_its_grey_copy_is_not(normal_film_path, fmt):
    marked = read_film(_marked(normal_film_path, fmt), name=f"arrow.{fmt.lower()}")
    note = marks_note(marked.warnings)
    assert note is not None and note.startswith(f"{MARKS} (0.") and "upload the film as the archive holds it" in note
    with Image.open(normal_film_path) as image:
        grey_rgb = io.BytesIO()
        image.convert("RGB").save(grey_rgb, fmt)  # a grey film stored as colour, as most of the shared sets are
    assert marks_note(read_film(grey_rgb.getvalue(), name="plain").warnings) is None
    grey_arrow = read_film(_marked(normal_film_path, fmt, colour=(255, 255, 255)), name="white-arrow")
    assert marks_note(grey_arrow.warnings) is None  # a white mark is grey: nothing to tell apart from the film


def test_a_colour_stored_under_wholly_transparent_pixels_is_no_mark(normal_film_path):
    hidden = read_film(_marked(normal_film_path, alpha=0), name="hidden.png")
    assert marks_note(hidden.warnings) is None  # shown black over the film, whatever colour the pixels store


def test_real_colour_films_hold_no_marks(data_dir):
    """A seeded sample of the shared sets' colour files (all 5,430 measured: the widest channel gap 23 of 255)."""
    files = sorted(p for p in (data_dir / "covid-3class").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    files += sorted((data_dir / "kermany-224" / "train" / "PNEUMONIA").glob("*.jpeg"))[:200]
    colour = []
    for path in files:
        with Image.open(path) as image:
            if image.mode == "RGB":
                colour.append(path)
    assert len(colour) > 300
    assert [p.name for p in colour if marks_note(read_film(p).warnings)] == []


def test_a_colour_dicom_with_marks_is_told_so(normal_film_path):
    with Image.open(io.BytesIO(_marked(normal_film_path))) as image:
        rgb = np.asarray(image.convert("RGB"))
    film = read_film(dicom(rgb, 8, "RGB", SamplesPerPixel=3, PlanarConfiguration=0), name="marked.dcm")
    assert marks_note(film.warnings) is not None
    grey = np.repeat(rgb.min(axis=2, keepdims=True), 3, axis=2)
    assert marks_note(read_film(dicom(grey, 8, "RGB", SamplesPerPixel=3, PlanarConfiguration=0),
                                name="grey.dcm").warnings) is None


def test_a_routine_call_on_a_marked_film_is_atypical(predictor, normal_film_path):
    prediction = predictor.predict(read_film(_marked(normal_film_path), name="arrow.png"))
    note = marks_note(prediction.warnings)
    assert note is not None and note in prediction.doubts and prediction.atypical
    plain = predictor.predict(read_film(normal_film_path))
    assert marks_note(plain.warnings) is None and marks_note(plain.doubts) is None


def test_thin_coloured_text_on_a_large_film_and_a_deep_colour_dicom_are_told(normal_film_path):
    """A re-read: counted on one pixel in four, one-pixel red text on a 4,000-px film kept a sixteenth of its pixels
    and passed; a 12-bit colour DICOM's gap was read against 65,535, not the span its luma is stretched over."""
    with Image.open(normal_film_path) as image:
        large = np.asarray(image.convert("RGB").resize((4000, 4000)))
    marked = large.copy()
    for row in range(400, 440, 8):
        marked[row, 400:1200] = (255, 0, 0)  # five lines of one-pixel-high "text"
    assert marks_note(read_film(_png(marked), name="thin.png").warnings) is not None
    assert marks_note(read_film(_png(large), name="large.png").warnings) is None
    deep = (marked.astype(np.uint16) * 16)[::4, ::4]  # 12 bits stored in 16: the mark's gap 4,080 of 4,095
    deep[100:104, 100:300] = (4080, 0, 0)
    film = read_film(dicom(deep, 12, "RGB", SamplesPerPixel=3, PlanarConfiguration=0), name="deep.dcm")
    assert marks_note(film.warnings) is not None


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()
