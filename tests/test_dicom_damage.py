"""DICOM files damaged in ways a decoder reads without a word (a hostile-file review): pixel data longer than the
header's image, more fragments than any film has, a JPEG frame cut short."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit
from test_dicom import STORED, _saved, make_dicom

from core.errors import UnreadableImage
from core.films.read import read_film


def test_pixel_data_longer_than_its_header_says_is_refused(dicom_dir):
    """A hostile-file review: Columns halved, a real film read as two sheared halves with only a "taller than
    usual" warning. Two bytes more than a 4x2 image needs are refused too."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    ds.Columns = ds.Columns // 2
    with pytest.raises(UnreadableImage, match=r"^halved\.dcm cannot be read: its pixel data holds 7,198,310 bytes, "
                                              r"more than the 3,597,200 its header's 920x1955 image needs"):
        read_film(_saved(ds), name="halved.dcm")
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.PixelData = STORED.tobytes() + b"\0\0"
    with pytest.raises(UnreadableImage, match="holds 18 bytes, more than the 16 its header's 4x2 image needs"):
        read_film(_saved(ds), name="longer.dcm")


def test_pixel_data_in_more_fragments_than_a_film_has_is_refused_unread(dicom_dir):
    """A hostile-file review: 2 million empty fragments held a worker to its time limit (7.4 s), then read as "not
    read yet: try again"."""
    from bombs import _header, _write
    from core.films.dicom import MAX_FRAGMENTS

    ds = _header(dicom_dir, (512, 512), JPEGBaseline8Bit)
    item = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # an empty item: the offset table, then fragments
    ds.PixelData = item * (MAX_FRAGMENTS + 2) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    with pytest.raises(UnreadableImage, match=r"^frag\.dcm cannot be read: its pixel data is cut into more than "
                                              r"65,536 fragments"):
        read_film(_write(ds), name="frag.dcm")


def test_a_jpeg_frame_cut_short_is_said_to_be_incomplete(dicom_dir):
    """A security review: a JPEG-baseline DICOM whose frame was cut in half decoded with its lower half flat grey,
    no word said, and read urgent (0.993); the upload check of cut-short JPEGs never saw DICOM frames."""
    from bombs import encapsulated, jpeg

    stream = jpeg(dicom_dir)
    whole = encapsulated(dicom_dir, stream, JPEGBaseline8Bit)
    assert read_film(whole, name="whole.dcm").pixels.shape == (512, 512)
    for cut in (stream[: len(stream) // 2] + b"\xff\xd9", stream[: len(stream) // 2]):  # with its end marker or not
        with pytest.raises(UnreadableImage, match=r"^cut\.dcm is incomplete: its JPEG pixel data stops early"):
            read_film(encapsulated(dicom_dir, cut, JPEGBaseline8Bit), name="cut.dcm")


@pytest.mark.parametrize("element, value", [("RescaleSlope", "NaN"), ("RescaleSlope", "1e39"),
                                            ("RescaleIntercept", "NaN"), ("WindowCenter", "NaN"),
                                            ("WindowWidth", "inf"), ("WindowWidth", "1e39")])
def test_a_grey_level_value_no_film_can_have_is_set_aside(element, value):
    """A hostile-file review: NaN, inf or 1e39 in a rescale or window made every value NaN or inf, and the film
    read "almost uniform (blank)". Such a value does not apply: the film reads as without it."""
    plain = read_film(make_dicom(), name="plain.dcm").pixels  # stretched: no rescale, no window
    ds = pydicom.dcmread(io.BytesIO(make_dicom(window=(2000, 4000) if element.startswith("Window") else None)))
    setattr(ds, element, value)
    film = read_film(_saved(ds), name="odd.dcm")
    assert film.pixels.std() > 0.1 and (film.pixels == plain).all()


def test_samples_a_pixel_no_film_has_are_called_damage_not_size():
    """A hostile-file review: SamplesPerPixel 300 on a small film read "461x489 pixels, over the safe decoding
    limit"."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.SamplesPerPixel = 300
    with pytest.raises(UnreadableImage, match=r"^odd\.dcm looks like DICOM but its image description is damaged: 300 "
                                              r"samples a pixel, where a film has 1 \(grey\) or 3 \(colour\)"):
        read_film(_saved(ds), name="odd.dcm")
