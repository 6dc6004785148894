"""How a DICOM's stored values become the grey film the model and the clinician see, where the DICOM standard
(PS3.3 C.7.5.1.1.2, C.7.6.3.1, C.11) says more than rescale and window: padding, 8-bit data without a window,
palette colour, an inverse presentation shape, and window elements that are present but empty. Each DICOM is
written here with hand-computed expectations. Last, headers a review found read wrongly (core.films.grey_levels):
each real film must come out as the same film written plainly, not darker or brighter (a normal film read dark was
urgent, with no warning), and a legitimate layout must not be refused."""
from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from core.films.read import read_film

CONTENT = np.array([[1000, 1250, 1500, 4095], [1750, 2000, 1000, 4095]], dtype=np.uint16)  # 4095: padding


def dicom(stored: np.ndarray, bits: int = 12, photometric: str = "MONOCHROME2", **elements) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    allocated = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype(np.uint8 if allocated == 8 else np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_padding_is_left_out_of_the_stretch_and_shown_black():
    film = read_film(dicom(CONTENT, PixelPaddingValue=4095), name="padded.dcm")
    expected = (CONTENT.astype(np.float64) - 1000) / 1000
    expected[CONTENT == 4095] = 0.0
    np.testing.assert_allclose(film.pixels, expected, atol=1e-6)  # the content spans 0..1, not 0..0.24
    inverted = read_film(dicom(CONTENT, photometric="MONOCHROME1", PixelPaddingValue=4095), name="m1.dcm")
    expected = 1.0 - (CONTENT.astype(np.float64) - 1000) / 1000
    expected[CONTENT == 4095] = 0.0
    np.testing.assert_allclose(inverted.pixels, expected, atol=1e-6)


def test_eight_bit_data_without_a_window_reads_as_the_same_png_does():
    ramp = np.array([[30, 60, 90], [120, 160, 200]], dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    png = read_film(buffer.getvalue(), name="ramp.png").pixels
    np.testing.assert_allclose(read_film(dicom(ramp, bits=8), name="ramp.dcm").pixels, png, atol=1e-6)
    np.testing.assert_allclose(png, ramp / 255.0, atol=1e-6)  # not stretched to 0..1


def test_palette_colour_is_looked_up_not_read_as_grey_indices():
    indices = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    reversed_grey = [255 - 51 * i for i in range(6)]  # index i -> grey 255 - 51 i: a ramp from white to black
    film = read_film(dicom(indices, bits=8, photometric="PALETTE COLOR",
                           RedPaletteColorLookupTableDescriptor=[6, 0, 8],
                           GreenPaletteColorLookupTableDescriptor=[6, 0, 8],
                           BluePaletteColorLookupTableDescriptor=[6, 0, 8],
                           RedPaletteColorLookupTableData=bytes(reversed_grey),
                           GreenPaletteColorLookupTableData=bytes(reversed_grey),
                           BluePaletteColorLookupTableData=bytes(reversed_grey)), name="palette.dcm")
    np.testing.assert_allclose(film.pixels, (255 - 51 * indices) / 255.0, atol=1e-3)


def test_an_inverse_presentation_shape_inverts_a_monochrome2_film_and_monochrome1_once():
    window = {"WindowCenter": 1500, "WindowWidth": 1001}
    plain = read_film(dicom(CONTENT, **window), name="plain.dcm").pixels
    inverse = read_film(dicom(CONTENT, PresentationLUTShape="INVERSE", **window), name="inverse.dcm").pixels
    np.testing.assert_allclose(inverse, 1.0 - plain, atol=1e-6)
    m1 = read_film(dicom(CONTENT, photometric="MONOCHROME1", PresentationLUTShape="INVERSE", **window),
                   name="dx.dcm").pixels
    np.testing.assert_allclose(m1, 1.0 - plain, atol=1e-6)  # DX's usual pairing: one inversion, not two


def test_window_elements_present_but_empty_fall_back_instead_of_refusing_the_film():
    stretched = read_film(dicom(CONTENT), name="plain.dcm").pixels
    empty_window = read_film(dicom(CONTENT, WindowCenter=None, WindowWidth=None), name="empty.dcm").pixels
    np.testing.assert_allclose(empty_window, stretched, atol=1e-6)
    ds = pydicom.dcmread(io.BytesIO(dicom(CONTENT, WindowCenter=1500, WindowWidth=1001)))
    ds.VOILUTSequence = Sequence([])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    windowed = read_film(dicom(CONTENT, WindowCenter=1500, WindowWidth=1001), name="w.dcm").pixels
    np.testing.assert_allclose(read_film(buffer.getvalue(), name="empty-lut.dcm").pixels, windowed, atol=1e-6)
    assert not np.allclose(windowed, stretched)


def test_a_window_is_read_only_when_no_voi_lut_applies():
    """A VOI LUT wins over the window: a malformed window beside it must not refuse the film."""
    ds = pydicom.dcmread(io.BytesIO(dicom(CONTENT)))
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 12])  # LUT Descriptor: 4096 entries from 0, 12-bit output
    item.add_new(0x00283006, "US", list(range(4096)))  # the identity
    ds.VOILUTSequence = Sequence([item])
    ds.add_new(0x00281050, "DS", None)  # WindowCenter present but empty ...
    ds[0x00281050]._value = "abc"  # ... then written as something no number can be read from
    ds.WindowWidth = 1000
    buffer = io.BytesIO()
    ds.save_as(buffer)
    film = read_film(buffer.getvalue(), name="lut-and-bad-window.dcm")
    np.testing.assert_allclose(film.pixels, CONTENT / 4095.0, atol=1e-6)


def _film(films_dir) -> np.ndarray:
    """A real normal film's 8-bit grey values, 256 x 256."""
    path = sorted((films_dir / "NORMAL").iterdir())[0]
    return np.asarray(Image.open(path).convert("L").resize((256, 256)))


def test_an_8_bit_film_with_a_rescale_reads_over_its_rescaled_range(films_dir):
    """Slope 0.5: values 0..127.5, once divided by 255 (the 8-bit range before the rescale): half as bright."""
    grey = _film(films_dir)
    film = read_film(dicom(grey, 8, RescaleSlope=0.5, RescaleIntercept=0), name="rescaled.dcm")
    np.testing.assert_allclose(film.pixels, grey / 255.0, atol=1e-5)


def test_a_slope_or_an_intercept_alone_still_applies(films_dir):
    """RescaleSlope 2 with no intercept, and a window written for the rescaled values: the rescale was skipped."""
    stored = (_film(films_dir).astype(np.uint16) * 16)  # 12 bits
    film = read_film(dicom(stored, 16, RescaleSlope=2, WindowCenter=4095, WindowWidth=8190), name="slope.dcm")
    assert abs(float(film.pixels.mean()) - float(stored.mean()) / 4095) < 0.01
    film = read_film(dicom(stored, 16, RescaleIntercept=-1000, WindowCenter=1047, WindowWidth=4095),
                     name="intercept.dcm")
    assert abs(float(film.pixels.mean()) - float(stored.mean()) / 4095) < 0.01


def test_uncompressed_ybr_full_422_is_read_not_called_cut_short(films_dir):
    """Two bytes a pixel (Y Y Cb Cr for each pair): it was refused as holding two thirds of its image."""
    grey = _film(films_dir)
    packed = np.empty((grey.shape[0], grey.shape[1] * 2), np.uint8)
    packed[:, 0::4], packed[:, 1::4] = grey[:, 0::2], grey[:, 1::2]  # Y of each pair
    packed[:, 2::4] = packed[:, 3::4] = 128  # no colour
    film = read_film(dicom(packed, 8, "YBR_FULL_422", SamplesPerPixel=3, PlanarConfiguration=0, Columns=grey.shape[1]), name="ybr422.dcm")
    assert film.pixels.shape == grey.shape
    np.testing.assert_allclose(film.pixels, grey / 255.0, atol=2 / 255)  # the same film, not a darker one


def test_an_8_bit_voi_lut_maps_every_stored_value(films_dir):
    """A 12-bit film through a linear 8-bit VOI LUT of 4096 entries: pydicom wrapped stored values past 255 round
    (the film read black and was refused as blank). Entries one to a word (US) or packed two to a word (OW)."""
    stored = _film(films_dir).astype(np.uint16) * 16
    table = np.clip((np.arange(4096) - 200) * 255 / 3700, 0, 255).round().astype(np.uint16)
    expected = table[stored] / 255.0
    for vr, data in (("US", [int(v) for v in table]), ("OW", table.astype(np.uint8).tobytes())):
        item = Dataset()
        item.add_new(0x00283002, "US", [4096, 0, 8])
        item.add_new(0x00283006, vr, data)
        film = read_film(dicom(stored, 16, VOILUTSequence=Sequence([item])), name=f"lut-{vr}.dcm")
        np.testing.assert_allclose(film.pixels, expected, atol=1e-6)
    odd = table[:4095]  # an odd count, packed and padded by a byte: it was read as 16-bit words (a review)
    item = Dataset()
    item.add_new(0x00283002, "US", [4095, 0, 8])
    item.add_new(0x00283006, "OW", odd.astype(np.uint8).tobytes() + b"\0")
    film = read_film(dicom(stored, 16, VOILUTSequence=Sequence([item])), name="lut-odd.dcm")
    np.testing.assert_allclose(film.pixels, odd[np.minimum(stored, 4094)] / 255.0, atol=1e-6)


def test_a_16_bit_voi_lut_maps_values_past_65535_to_its_last_entry():
    """Found by a review: pydicom indexes a 16-bit LUT in uint16, so values an intercept carried past 65,535 wrapped
    round (the right edge of this film read 0.2 instead of 1.0)."""
    stored = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    table = np.linspace(0, 65535, 4096).round().astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])
    item.add_new(0x00283006, "OW", table.tobytes())
    film = read_film(dicom(stored, 16, VOILUTSequence=Sequence([item]), RescaleIntercept="1000",
                           RescaleSlope="1"), name="lut-16.dcm")
    expected = table[np.clip(stored.astype(np.int64) + 1000, 0, 4095)] / 65535.0
    np.testing.assert_allclose(film.pixels, expected, atol=1e-6)
    assert film.pixels[-1, -1] == 1.0


def test_signed_8_bit_data_reads_over_its_signed_range():
    """Found by a review: signed 8-bit values were read over 0..255, so 0..127 came out dark (0-0.49) instead of
    0.5-1.0, and a film with one negative value was stretched instead: its brightness hung on its content."""
    stored = np.array([[0, 32, 64], [96, 127, 10]], dtype=np.int8)
    film = read_film(dicom(stored, 8, PixelRepresentation=1), name="signed.dcm")
    np.testing.assert_allclose(film.pixels, (stored.astype(np.float64) + 128) / 255.0, atol=1e-6)
    negative = stored.copy()
    negative[0, 0] = -128
    film = read_film(dicom(negative, 8, PixelRepresentation=1), name="signed-negative.dcm")
    np.testing.assert_allclose(film.pixels, (negative.astype(np.float64) + 128) / 255.0, atol=1e-6)


def test_a_modality_lut_of_12_bits_an_entry_is_looked_up_as_one_of_16():
    """Older files store modality LUT entries of 12 bits (in 16-bit words): pydicom refused them, so the film was
    unreadable; looked up here they read as the same table of 16 bits does."""
    stored = np.linspace(0, 4095, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    films = []
    for bits in (12, 16):
        table = np.linspace(0, 2 ** bits - 1, 4096).round().astype(np.uint16)
        item = Dataset()
        item.add_new(0x00283002, "US", [4096, 0, bits])
        item.add_new(0x00283006, "OW", table.tobytes())
        item.ModalityLUTType = "US"
        films.append(read_film(dicom(stored, 12, ModalityLUTSequence=Sequence([item])), name=f"lut{bits}.dcm"))
    np.testing.assert_allclose(films[0].pixels, films[1].pixels, atol=1e-3)
    np.testing.assert_allclose(films[1].pixels, stored / 4095.0, atol=1e-3)  # a linear table: the film itself


def test_a_16_bit_lut_short_of_its_entries_is_refused_not_read_as_packed_bytes():
    """Found by a review of the day's change: a 16-bit table two bytes short was taken for 8-bit entries packed two
    to a word and read near black; pydicom had refused it."""
    import pytest

    from core.errors import UnreadableImage

    stored = np.linspace(0, 4095, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    table = np.linspace(0, 65535, 4096).round().astype(np.uint16)
    for sequence in ("VOILUTSequence", "ModalityLUTSequence"):
        item = Dataset()
        item.add_new(0x00283002, "US", [4096, 0, 16])
        item.add_new(0x00283006, "OW", table.tobytes()[:-2])
        with pytest.raises(UnreadableImage, match="grey-level transforms"):
            read_film(dicom(stored, 12, **{sequence: Sequence([item])}), name="short-lut.dcm")


def test_a_window_the_standard_does_not_allow_gives_way_to_the_next_or_to_the_stretch():
    """Found by a review: a width of 0 (some exporters and anonymisers write it) read a 12-bit film as black and
    white, or all one grey; pydicom refuses it. The next pair of the element is used, else the film is stretched."""
    stretched = read_film(dicom(CONTENT), name="plain.dcm").pixels
    for centre, width in (("2048", "0"), ("0", "0"), ("1500", "-10")):
        film = read_film(dicom(CONTENT, WindowCenter=centre, WindowWidth=width), name="zero.dcm")
        np.testing.assert_allclose(film.pixels, stretched, atol=1e-6)
    second = read_film(dicom(CONTENT, WindowCenter=["2048", "1500"], WindowWidth=["0", "1001"]), name="two.dcm")
    np.testing.assert_allclose(second.pixels, np.clip((CONTENT - (1500 - 0.5)) / 1000 + 0.5, 0, 1), atol=1e-6)


def test_a_voi_lut_declared_deeper_than_its_entries_reads_at_their_depth():
    """Found by a review: a table declared 16 bits an entry whose entries stop at 4095 read a film at a sixteenth of
    its brightness (real files declare more than they use); it is scaled by the depth its entries reach."""
    ramp = np.array([[0, 1024, 2048, 4095]], dtype=np.uint16)
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])
    lut.add_new(0x00283006, "OW", np.arange(4096, dtype=np.uint16).tobytes())  # identity, entries up to 4095
    film = read_film(dicom(ramp, VOILUTSequence=Sequence([lut])), name="deep-lut.dcm")
    np.testing.assert_allclose(film.pixels, ramp / 4095.0, atol=1e-6)


def test_one_nan_in_float_pixels_leaves_the_rest_of_the_film_its_grey_levels():
    """Found by a review: np.min and np.max over a float film with one NaN made every pixel NaN, read as black."""
    from core.films.grey_levels import _stretch

    values = np.array([[0.0, 2.0, np.nan], [4.0, 6.0, 8.0]], dtype=np.float32)
    _stretch(values, 32, None)
    np.testing.assert_allclose(values[np.isfinite(values)], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
