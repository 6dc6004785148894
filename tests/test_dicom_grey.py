"""How a DICOM's stored values become the grey film the model and the clinician see, where the DICOM standard
(PS3.3 C.7.5.1.1.2, C.7.6.3.1, C.11) says more than rescale and window: padding, 8-bit data without a window,
palette colour, an inverse presentation shape, and window elements that are present but empty. Each DICOM is
written here with hand-computed expectations."""
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
