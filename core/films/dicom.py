"""DICOM films -> :class:`Film`, following the DICOM pixel pipeline.

Stored values -> modality LUT (rescale slope/intercept) -> VOI (window or VOI LUT, when present) ->
[0, 1] -> MONOCHROME1 inverted so that bone is always bright (:mod:`core.films.grey_levels`). Only technical
values checked against their value representation are kept (:mod:`core.films.dicom_values`): no
patient-identifying value leaves here.

This runs inside the decoding process (:mod:`core.films.decode_worker`), under its memory limit: pydicom and
its decoders see hostile bytes only there. Messages name the step that failed, never an exception's text,
which can quote element values.
"""
from __future__ import annotations

import io
import struct
import warnings as _warnings
from contextlib import contextmanager
from typing import Callable

import numpy as np
import pydicom
from pydicom.encaps import generate_fragments, generate_frames
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit,
                         JPEGExtended12Bit, RLELossless)

from core.errors import UnreadableImage
from core.films.bounds import check_declared_size, check_deflated_dicom, over_limit
from core.films.dicom_values import header_warnings, shown_values
from core.films.film import MAX_PIXELS, Film
from core.films.colour_marks import colour_marks
from core.films.grey_levels import greyscale_pipeline, int_tag, luma, palette_grey, palette_top
from core.films.truncation import jpeg_cut_short

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# A deflated data set holds its pixels uncompressed: a 50-megapixel 16-bit film is 100 MB, in 8-bit RGB 150 MB.
MAX_INFLATED_BYTES = 256 * 2**20


@contextmanager
def _refusing(message: str):
    """Any failure inside becomes UnreadableImage(message); a MemoryError stays one (the worker reports it).

    pydicom and its decoders fail on damaged files in more ways than they document (BytesLengthException,
    struct.error, unknown value representations, RuntimeError from C decoders), so the step is what we name."""
    try:
        yield
    except (UnreadableImage, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - see above; the text of exc is never shown
        raise UnreadableImage(message) from exc


def decode_dicom(data: bytes, label: str, headerless: bool = False,
                 on_decoding: Callable[[int], None] | None = None) -> Film | None:
    """The film in DICOM ``data``. With ``headerless`` (no DICM magic: maybe a bare data set, maybe not DICOM
    at all), None when the bytes do not read as a DICOM image, so the caller can say what they are not.
    ``on_decoding(samples)`` hears how many samples one frame holds once the header passed its checks, just
    before the pixels are decoded (the decoding process gives a larger film more time)."""
    # pydicom reports recoverable oddities (padding, VR mismatches) as warnings on stderr; the film
    # either decodes or raises UnreadableImage, so they are noise in the CLI and the app.
    check_deflated_dicom(data, label, MAX_INFLATED_BYTES)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        ds = _parse(data, label, headerless)
        del data  # parsed: a large film's bytes need not stay beside its decoded pixels
        if ds is None:
            return None
        return _read_dicom(ds, label, on_decoding)


def _parse(data: bytes, label: str, headerless: bool) -> pydicom.Dataset | None:
    if headerless:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            is_image = "Rows" in ds and "Columns" in ds
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - bytes that do not parse are simply not a bare DICOM data set
            return None
        return ds if is_image else None
    with _refusing(f"{label} looks like DICOM but could not be parsed: the file is damaged. Export it again."):
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _read_dicom(ds: pydicom.Dataset, label: str, on_decoding: Callable[[int], None] | None) -> Film:
    with _refusing(f"{label} looks like DICOM but its image description is damaged. Export it again."):
        if not any(tag in ds for tag in _PIXEL_TAGS):
            raise UnreadableImage(
                f"{label} is a DICOM file without pixel data: a report or other non-image object, or a damaged "
                "file. Export the image series again."
            )
        rows, cols = int_tag(ds, "Rows", 0), int_tag(ds, "Columns", 0)
        samples = int_tag(ds, "SamplesPerPixel", 1)
        if samples not in (1, 3):  # grey or colour; 300 samples a pixel read "461x489 pixels, over the limit"
            raise UnreadableImage(f"{label} looks like DICOM but its image description is damaged: {samples} samples "
                                  "a pixel, where a film has 1 (grey) or 3 (colour). Export it again.")
        if rows * cols * samples > MAX_PIXELS or over_limit(cols, rows, MAX_PIXELS):
            raise UnreadableImage(f"{label} is {cols}x{rows} pixels, over the safe decoding limit. Export the film "
                                  "at a lower resolution.")
        _fill_missing_transfer_syntax(ds)
        metadata = {"format": "DICOM", **shown_values(ds)}
        frames, bit_depth = int_tag(ds, "NumberOfFrames", 1), int_tag(ds, "BitsStored", 8)
    warnings = header_warnings(metadata, frames)
    if on_decoding is not None:
        on_decoding(rows * cols * samples)
    arr = _decode_pixels(ds, label, metadata.get("TransferSyntax", "unknown"))
    with _refusing(f"{label}: the DICOM's grey-level transforms (rescale, window or VOI LUT) cannot be applied. "
                   "Export the film again."):
        for tag in _PIXEL_TAGS:  # the encoded copy: the pipeline below needs the memory more
            if tag in ds:
                del ds[tag]
        if arr.ndim == 3:  # colour (RGB after pydicom's YBR conversion)
            # deeper than 8 bits, luma stretches the film over its own span: the channels' gap is read against it
            span = 255.0 if bit_depth <= 8 else max(float(arr.max()) - float(arr.min()), 1.0)
            warnings.append(colour_marks(arr, span))
            pixels = luma(arr, bit_depth)
        elif str(getattr(ds, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR":  # colour table indices
            rgb = apply_color_lut(arr, ds)
            warnings.append(colour_marks(rgb, palette_top(rgb)))
            pixels = palette_grey(rgb)
        else:
            pixels = greyscale_pipeline(arr, ds)
        if pixels.ndim != 2 or pixels.size == 0:
            raise ValueError("not one grey frame")
        np.nan_to_num(pixels, copy=False, nan=0.0)
        np.clip(pixels, 0.0, 1.0, out=pixels)
    return Film(
        pixels=pixels,
        source_format="DICOM",
        original_size=(cols, rows),
        bit_depth=bit_depth,
        metadata=metadata,
        warnings=tuple(w for w in warnings if w),
    )


_JPEG_SYNTAXES = (JPEGBaseline8Bit, JPEGExtended12Bit)  # decoders fill a cut-short frame silently


def _decode_pixels(ds: pydicom.Dataset, label: str, syntax_name: str) -> np.ndarray:
    # a damaged RLE or JPEG film was told to export itself as JPEG, the very format it was in (a review): with a
    # decoder installed, the file is damaged or a variant of its syntax the decoder lacks (12-bit JPEG, say)
    cannot = (f"{label}: the DICOM pixel data cannot be read: the file is damaged. Export the film again."
              if _is_native(ds) else
              f"{label}: the DICOM pixel data (transfer syntax '{syntax_name}') could not be decoded: the file is "
              "damaged, or uses a variant of that syntax this server's decoder does not read. Export the film "
              "again, uncompressed." if _decoder_installed(ds) else
              f"{label}: the DICOM pixel data (transfer syntax '{syntax_name}') cannot be decoded here. Export the "
              "film uncompressed or as JPEG/JPEG 2000.")
    with _refusing(cannot):
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax.is_encapsulated and "PixelData" in ds:
            _check_fragments(ds.PixelData, label)
            if syntax == RLELossless:
                _check_rle(ds.PixelData, label, int_tag(ds, "Rows", 0), int_tag(ds, "Columns", 0))
        elif "PixelData" in ds:
            _check_complete(ds, label)
        # Only the first frame is decoded: a multi-frame upload must not cost memory for every frame.
        arr = pixel_array(ds, index=0)
    if syntax in _JPEG_SYNTAXES and jpeg_cut_short(_first_frame(ds), arr, any_level=True):
        raise UnreadableImage(f"{label} is incomplete: its JPEG pixel data stops early and its last rows are missing "
                              "(the file was cut short). Upload or export the whole file again.")
    return arr


def _first_frame(ds: pydicom.Dataset) -> bytes:
    """The first frame's JPEG codestream: its fragments, joined (a frame may span several)."""
    frames = int_tag(ds, "NumberOfFrames", 1) or 1
    return bytes(next(generate_frames(ds.PixelData, number_of_frames=frames), b""))


def _decoder_installed(ds: pydicom.Dataset) -> bool:
    """A decoder for the film's compressed transfer syntax is installed here."""
    try:
        return bool(get_decoder(ds.file_meta.TransferSyntaxUID).is_available)
    except Exception:  # noqa: BLE001 - no or a malformed syntax, or none pydicom knows: the codec message stays
        return False


def _is_native(ds: pydicom.Dataset) -> bool:
    """Uncompressed pixel data (a failure to read it is damage, not a codec this build lacks)."""
    try:
        return not ds.file_meta.TransferSyntaxUID.is_encapsulated
    except Exception:  # noqa: BLE001 - no or a malformed syntax: the codec message stays
        return False


def _check_complete(ds: pydicom.Dataset, label: str) -> None:
    """Uncompressed pixel data shorter than its own image: a file cut short (an interrupted copy or upload)."""
    rows, cols = int_tag(ds, "Rows", 0), int_tag(ds, "Columns", 0)
    samples, bits = int_tag(ds, "SamplesPerPixel", 1), int_tag(ds, "BitsAllocated", 0)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
        samples = 2  # Y Y Cb Cr for each two pixels (found by a review: refused as cut short)
    needed = (rows * cols * samples * bits + 7) // 8
    have = len(ds.PixelData)
    if 0 < have < needed:
        raise UnreadableImage(
            f"{label} is incomplete: its pixel data holds {have:,} of the {needed:,} bytes its {cols}x{rows} image "
            "needs (the file was cut short). Upload or export the whole file again."
        )
    frames = max(1, int_tag(ds, "NumberOfFrames", 1))
    if needed and have > needed * frames + 1:  # one byte pads odd data to an even length
        raise UnreadableImage(  # a review: Columns halved, the film read as two sheared halves with no word said
            f"{label} cannot be read: its pixel data holds {have:,} bytes, more than the {needed * frames:,} its "
            f"header's {cols}x{rows} image{f' in {frames} frames' if frames > 1 else ''} needs, so the header does "
            "not describe the data. Export the film again."
        )


MAX_FRAGMENTS = 65_536  # a 200 MB film cut into 4 kB fragments has 51,200; a review's 2 million ran out the clock


def _check_fragments(pixel_data: bytes, label: str) -> None:
    """Each encapsulated fragment that starts a codestream declares its size: refuse a bomb before decoding; and
    more fragments than any film is cut into (2 million empty ones held a worker to its time limit, then read as
    "not read yet: try again", a review)."""
    for count, fragment in enumerate(generate_fragments(pixel_data), 1):
        if count > MAX_FRAGMENTS:
            raise UnreadableImage(f"{label} cannot be read: its pixel data is cut into more than {MAX_FRAGMENTS:,} "
                                  "fragments, far more than a film's. Export the film again.")
        check_declared_size(bytes(fragment), label, MAX_PIXELS, pillow=False)


def _check_rle(pixel_data: bytes, label: str, rows: int, columns: int) -> None:
    """RLE declares no size. No encoder needs more than 2 bytes per pixel byte, so a longer segment is a bomb
    (a 2-byte run expands to 128 bytes): refused unread, with a message that says so. (The decoder, core.films.rle,
    stops at the frame's size in any case.)"""
    most = 2 * rows * columns + 64
    for fragment in list(generate_fragments(pixel_data))[1:]:  # the first item is the offset table
        if len(fragment) < 64:
            continue
        count, *offsets = struct.unpack_from("<16I", fragment)
        ends = [*offsets[: min(count, 15)], len(fragment)]
        if any(end - start > most for start, end in zip(ends, ends[1:])):
            raise UnreadableImage(
                f"{label} is too large to decode safely: its RLE data is longer than a {columns}x{rows} image "
                "could need. Export the film again."
            )


def _fill_missing_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Bare datasets (no file meta) are uncompressed; their encoding is known from how they were read."""
    meta = ds.file_meta if hasattr(ds, "file_meta") else None
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
