"""DICOM stored values to grey levels (core.films.grey_levels), for headers a review found read wrongly: each
film must come out as the same film written plainly, not darker or brighter (a normal film read dark was urgent,
with no warning), and a legitimate layout must not be refused."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from core.films.read import read_film


def _film(films_dir) -> np.ndarray:
    """A real normal film's 8-bit grey values, 256 x 256."""
    path = sorted((films_dir / "NORMAL").iterdir())[0]
    return np.asarray(Image.open(path).convert("L").resize((256, 256)))


def _dicom(pixels: np.ndarray, bits: int, photometric: str = "MONOCHROME2", samples: int = 1, **elements) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_8_bit_film_with_a_rescale_reads_over_its_rescaled_range(films_dir):
    """Slope 0.5: values 0..127.5, once divided by 255 (the 8-bit range before the rescale): half as bright."""
    grey = _film(films_dir)
    film = read_film(_dicom(grey, 8, RescaleSlope=0.5, RescaleIntercept=0), name="rescaled.dcm")
    np.testing.assert_allclose(film.pixels, grey / 255.0, atol=1e-5)


def test_a_slope_or_an_intercept_alone_still_applies(films_dir):
    """RescaleSlope 2 with no intercept, and a window written for the rescaled values: the rescale was skipped."""
    stored = (_film(films_dir).astype(np.uint16) * 16)  # 12 bits
    film = read_film(_dicom(stored, 16, RescaleSlope=2, WindowCenter=4095, WindowWidth=8190), name="slope.dcm")
    assert abs(float(film.pixels.mean()) - float(stored.mean()) / 4095) < 0.01
    film = read_film(_dicom(stored, 16, RescaleIntercept=-1000, WindowCenter=1047, WindowWidth=4095),
                     name="intercept.dcm")
    assert abs(float(film.pixels.mean()) - float(stored.mean()) / 4095) < 0.01


def test_uncompressed_ybr_full_422_is_read_not_called_cut_short(films_dir):
    """Two bytes a pixel (Y Y Cb Cr for each pair): it was refused as holding two thirds of its image."""
    grey = _film(films_dir)
    packed = np.empty((grey.shape[0], grey.shape[1] * 2), np.uint8)
    packed[:, 0::4], packed[:, 1::4] = grey[:, 0::2], grey[:, 1::2]  # Y of each pair
    packed[:, 2::4] = packed[:, 3::4] = 128  # no colour
    film = read_film(_dicom(packed, 8, "YBR_FULL_422", samples=3, Columns=grey.shape[1]), name="ybr422.dcm")
    assert film.pixels.shape == grey.shape
    assert np.corrcoef(film.pixels.ravel(), grey.ravel())[0, 1] > 0.99


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
        film = read_film(_dicom(stored, 16, VOILUTSequence=Sequence([item])), name=f"lut-{vr}.dcm")
        np.testing.assert_allclose(film.pixels, expected, atol=1e-6)
    odd = table[:4095]  # an odd count, packed and padded by a byte: it was read as 16-bit words (a review)
    item = Dataset()
    item.add_new(0x00283002, "US", [4095, 0, 8])
    item.add_new(0x00283006, "OW", odd.astype(np.uint8).tobytes() + b"\0")
    film = read_film(_dicom(stored, 16, VOILUTSequence=Sequence([item])), name="lut-odd.dcm")
    np.testing.assert_allclose(film.pixels, odd[np.minimum(stored, 4094)] / 255.0, atol=1e-6)
