"""DICOM films -> :class:`Film`, following the DICOM pixel pipeline.

Stored values -> modality LUT (rescale slope/intercept) -> VOI (window or VOI LUT, when present) ->
[0, 1] -> MONOCHROME1 inverted so that bone is always bright. Only a whitelist of technical tags is
kept: no patient-identifying value ever leaves this module.
"""
from __future__ import annotations

import io
import warnings as _warnings

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core.errors import UnreadableImage
from core.films.film import MAX_PIXELS, Film

# Technical, non-identifying tags the app may show. Nothing outside this list is copied.
SAFE_TAGS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "PhotometricInterpretation",
    "BitsStored",
    "Rows",
    "Columns",
    "NumberOfFrames",
)
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def sniff_headerless_dicom(data: bytes) -> bool:
    """True when bytes without the DICM preamble still parse as DICOM with pixel data."""
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    except (InvalidDicomError, ValueError, TypeError, EOFError, OSError, KeyError, AttributeError):
        return False
    return "Rows" in ds and "Columns" in ds


def read_dicom(data: bytes, label: str) -> Film:
    # pydicom reports recoverable oddities (padding, VR mismatches) as warnings on stderr; the film
    # either decodes or raises UnreadableImage, so they are noise in the CLI and the app.
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return _read_dicom(data, label)


def _read_dicom(data: bytes, label: str) -> Film:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, ValueError, TypeError, EOFError, OSError, KeyError, AttributeError) as exc:
        raise UnreadableImage(f"{label} looks like DICOM but could not be parsed ({exc}).") from exc
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise UnreadableImage(
            f"{label} is a DICOM file without pixel data (for example a structured report). "
            "Export the image series instead."
        )
    rows, cols = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    if rows * cols * samples > MAX_PIXELS:
        raise UnreadableImage(f"{label} is {cols}x{rows} pixels, over the safe decoding limit.")
    _fill_missing_transfer_syntax(ds)
    warnings: list[str] = []
    frames = _int_tag(ds, "NumberOfFrames", 1)
    if frames > 1:
        warnings.append(f"Multi-frame DICOM ({frames} frames): only the first frame is read.")
    arr = _decode_pixels(ds, label)
    try:
        if arr.ndim == 3:  # colour (RGB after pydicom's YBR conversion)
            pixels = _normalise(arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
        else:
            pixels = _greyscale_pipeline(arr, ds)
    except (NotImplementedError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableImage(
            f"{label}: the DICOM's grey-level transforms (rescale, window or VOI LUT) cannot be applied ({exc})."
        ) from exc
    pixels = np.nan_to_num(pixels, nan=0.0).astype(np.float32)
    return Film(
        pixels=np.clip(pixels, 0.0, 1.0),
        source_format="DICOM",
        original_size=(cols, rows),
        bit_depth=_int_tag(ds, "BitsStored", 8),
        metadata=_safe_metadata(ds),
        warnings=tuple(warnings),
    )


def _decode_pixels(ds: pydicom.Dataset, label: str) -> np.ndarray:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        # Only the first frame is decoded: a multi-frame upload must not cost memory for every frame.
        return pixel_array(ds, index=0)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, AttributeError, KeyError) as exc:
        name = syntax.name if syntax is not None else "unknown"
        raise UnreadableImage(
            f"{label}: the DICOM pixel data (transfer syntax '{name}') cannot be decoded here ({exc}). "
            "Export the film uncompressed or as JPEG/JPEG 2000."
        ) from exc


def _int_tag(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer tag, or ``default`` when it is absent or malformed (test files carry values like '1A')."""
    try:
        return int(ds.get(keyword, default) or default)
    except (ValueError, TypeError):
        return default


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


def _greyscale_pipeline(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        lut = ds.VOILUTSequence[0]
        values = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
        pixels = values / float(2 ** int(lut.LUTDescriptor[2]) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        pixels = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), ds.get("VOILUTFunction"))
    else:
        pixels = _normalise(values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def _window(values: np.ndarray, center: float, width: float, function: str | None) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 window, mapped to [0, 1]."""
    width = max(width, 1.0)
    if str(function or "LINEAR").upper() == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    scaled = (values - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0)


def _normalise(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - lo) / (hi - lo)


def _first(value) -> float:
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0]
    return float(value)


def _safe_metadata(ds: pydicom.Dataset) -> dict:
    meta = {"format": "DICOM"}
    for tag in SAFE_TAGS:
        if tag in ds:
            meta[tag] = str(ds.get(tag))
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        meta["TransferSyntax"] = syntax.name
    return meta
