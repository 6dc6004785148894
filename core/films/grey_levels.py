"""A DICOM film's stored values to display grey levels in [0, 1] (PS3.3 C.11): the modality LUT or rescale, then
the VOI LUT or window, else a stretch; MONOCHROME1 and INVERSE inverted once; padding shown black. In place
wherever it can be: a 50-megapixel film is 200 MB per float32 copy. Decoding itself is core.films.dicom's.
"""
from __future__ import annotations

import math

import numpy as np
import pydicom


def int_tag(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer tag, or ``default`` when it is absent or malformed (test files carry values like '1A')."""
    try:
        return int(ds.get(keyword, default) or default)
    except (ValueError, TypeError):
        return default


def greyscale_pipeline(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Stored values -> float32 display values in [0, 1], in place wherever it can be (a 50-megapixel film
    is 200 MB per float32 copy)."""
    padding = _padding(arr, ds)
    values = _modality_values(arr, ds)
    if getattr(ds, "VOILUTSequence", None):  # an empty one, or an empty window, does not apply
        lut = ds.VOILUTSequence[0]
        values, top = _lookup(values, lut, ds.is_little_endian)
        # the depth its entries reach, at most the one it declares: exporters declare 16 bits for 12-bit entries,
        # which read the film at a sixteenth of its brightness (a review; Cornerstone reads it so too)
        values /= float(2 ** min(int(lut.LUTDescriptor[2]), max(int(top).bit_length(), 1)) - 1)
        np.clip(values, 0.0, 1.0, out=values)
    elif (window := _window_pair(ds)) is not None:  # read only when they apply
        _window(values, *window, ds.get("VOILUTFunction"))
    else:
        signed = int_tag(ds, "PixelRepresentation", 0) == 1
        _stretch(values, int_tag(ds, "BitsStored", 16), padding, _rescale(ds), signed)
    # MONOCHROME1 shows its lowest value white; INVERSE asks the same of MONOCHROME2 (PS3.3 C.11.6)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1" or \
            str(getattr(ds, "PresentationLUTShape", "")).upper() == "INVERSE":
        np.subtract(1.0, values, out=values)
    if padding is not None:  # outside the image: black, as viewers show it
        values[padding] = 0.0
    return values


def _window_pair(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The first window (centre, width) the standard allows, else None (the film is stretched): a width under 1
    (LINEAR), or not above 0 (the others), is one some exporters write and that read a film black or
    black-and-white (a review); a later pair of the same element may be usable."""
    centres, widths = _all(getattr(ds, "WindowCenter", None)), _all(getattr(ds, "WindowWidth", None))
    least = 1.0 if str(ds.get("VOILUTFunction") or "LINEAR").upper() == "LINEAR" else np.nextafter(0.0, 1.0)
    return next(((c, w) for c, w in zip(centres, widths) if w >= least and _sane(c) and _sane(w)), None)


def _lookup(values: np.ndarray, lut: pydicom.Dataset, little_endian: bool | None) -> tuple[np.ndarray, float]:
    """A VOI LUT looked up here, whatever its depth: pydicom indexes it in the table's own type, so values past it
    wrapped round (found by reviews: a 12-bit film through a linear 8-bit LUT read black; 16-bit values past 65,535
    after an intercept read 0.2 instead of 1.0). Its entries one to a 16-bit word, or 8-bit ones packed two to a
    word; values outside the table take its ends. Also returns the table's largest entry."""
    entries, first, bits = int(lut.LUTDescriptor[0]) or 65536, int(lut.LUTDescriptor[1]), int(lut.LUTDescriptor[2])
    if not 8 <= bits <= 16:  # PS3.3 C.11.1.1.1, C.11.2.1.2: 8 to 16 bits an entry; read_film words the refusal
        raise NotImplementedError(f"a LUT of {bits} bits per entry")
    data = lut.LUTData
    if isinstance(data, (bytes, bytearray)):
        # 8-bit entries may be packed two to a word (an odd count padded by a byte); deeper ones never are, so a
        # deeper table short of its entries is damaged, not packed (it read near black: a review)
        packed = bits == 8 and len(data) < 2 * entries
        table = np.frombuffer(data, np.uint8 if packed else ("<u2" if little_endian is not False else ">u2"))
    else:
        table = np.atleast_1d(np.asarray(data))
    if len(table) < entries:
        raise ValueError(f"a LUT of {len(table)} of its {entries} entries")
    table = table[:entries].astype(np.float32)
    np.rint(values, out=values)
    values -= first
    np.clip(values, 0, len(table) - 1, out=values)
    return table[values.astype(np.int32)], float(table.max())


def _padding(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Where the stored values are padding (PixelPaddingValue, up to PixelPaddingRangeLimit): None when none are."""
    value, limit = _first(getattr(ds, "PixelPaddingValue", None)), _first(getattr(ds, "PixelPaddingRangeLimit", None))
    if value is None:
        return None
    low, high = sorted((value, value if limit is None else limit))
    padding = (arr >= low) & (arr <= high)
    return padding if padding.any() and not padding.all() else None


def _stretch(values: np.ndarray, bits: int, padding: np.ndarray | None,
             rescale: tuple[float, float] = (1.0, 0.0), signed: bool = False) -> None:
    """No window, in place: 8-bit data over its nominal range (through its rescale), as PNG and JPEG films are read;
    deeper data from its lowest to its highest value, padding left out of both. (The nominal range was once taken
    before the rescale: slope 0.5 read a normal film at half brightness, urgent; found by a review.)"""
    content = True if padding is None else ~padding
    lo, hi = _span(values, content)
    if np.isnan(lo) or np.isnan(hi):  # float pixel data with a NaN: one made the whole film black (a review)
        lo, hi = _span(values, np.isfinite(values) & content)
    slope, intercept = rescale
    first = -(2 ** (bits - 1)) if signed else 0  # signed 8-bit data runs -128..127 (it read as 0..255: a review)
    low, high = sorted((slope * first + intercept, slope * (first + 2 ** bits - 1) + intercept))
    if bits <= 8 and slope and lo >= low and hi <= high:
        lo, hi = low, high
    _normalise(values, lo, hi)


def _span(values: np.ndarray, where) -> tuple[float, float]:
    return float(np.min(values, where=where, initial=np.inf)), float(np.max(values, where=where, initial=-np.inf))


def _bt601(rgb: np.ndarray) -> np.ndarray:
    """Colour to grey: ITU-R BT.601 luma, float32, at the colours' own scale."""
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def luma(rgb: np.ndarray, bits: int) -> np.ndarray:
    """Colour to grey (ITU-R BT.601 luma), stretched as grey values are."""
    grey = _bt601(rgb)
    _stretch(grey, bits, None)
    return grey


def palette_grey(rgb: np.ndarray) -> np.ndarray:
    """A PALETTE COLOR film's looked-up colours to grey over the palette's nominal range (255 or 65535), as an
    8-bit film is read: stretched from its lowest to its highest value, indices 64-192 of a grey palette read
    0-1 where the same film stored grey reads 0.25-0.75 (a review)."""
    return _bt601(rgb) / np.float32(palette_top(rgb))


def palette_top(rgb: np.ndarray) -> float:
    """The nominal maximum of a PALETTE COLOR film's looked-up colours: 255, or their type's maximum."""
    # a palette of 16-bit entries that holds 8-bit values (some writers do, against the standard) reads over 8 bits,
    # not near black (a review of the day's change)
    return 255.0 if rgb.dtype == np.uint8 or (rgb.size and int(rgb.max()) <= 255) else float(np.iinfo(rgb.dtype).max)


def _modality_values(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """The modality LUT (PS3.3 C.11.1): rescale slope and intercept, or a LUT; a new float32 array."""
    values = arr.astype(np.float32)
    if ds.get("ModalityLUTSequence"):  # looked up here: pydicom refused entries of 12 bits, which older files use
        lut = ds.ModalityLUTSequence[0]
        return _lookup(values, lut, ds.is_little_endian)[0]
    slope, intercept = _rescale(ds)
    if (slope, intercept) != (1.0, 0.0):
        values *= slope
        values += intercept
    return values


def _rescale(ds: pydicom.Dataset) -> tuple[float, float]:
    """(slope, intercept); one of them missing is taken at its identity value, not the pair dropped (found by a
    review: RescaleSlope 2 alone was skipped while the window was written for the rescaled values)."""
    if ds.get("ModalityLUTSequence"):
        return 1.0, 0.0
    slope, intercept = _first(ds.get("RescaleSlope")), _first(ds.get("RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _window(values: np.ndarray, center: float, width: float, function: str | None) -> None:
    """DICOM PS3.3 C.11.2.1.2 window, mapped to [0, 1], in place."""
    width = max(width, 1.0)
    if str(function or "LINEAR").upper() == "SIGMOID":
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
        return
    values -= center - 0.5
    values /= width - 1.0 if width > 1 else 1.0
    values += 0.5
    np.clip(values, 0.0, 1.0, out=values)


def _normalise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo``..``hi`` stretched to [0, 1] in place (all zeros when flat)."""
    if hi <= lo:
        values[...] = 0.0
    else:
        values -= lo
        values /= hi - lo
    return values


def _all(value) -> list[float]:
    """Every number of an element (several windows are alternative views, the first the default); [] when absent,
    empty or not numbers."""
    values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    try:
        return [float(v) for v in values if v is not None and v != ""]
    except (TypeError, ValueError):
        return []


def _first(value) -> float | None:
    """A number, or the first of several; None for an element absent or empty, or not a number a film's values can
    take (then it does not apply)."""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    number = None if value is None or value == "" else float(value)
    return number if number is None or _sane(number) else None


def _sane(number: float) -> bool:
    """Finite, and small enough that float32 values scaled or windowed by it stay finite: a RescaleSlope or a
    WindowWidth of NaN, inf or 1e39 made every value NaN or inf, and the film read "almost uniform (blank)" instead
    of the header being set aside (a review)."""
    return math.isfinite(number) and abs(number) <= 1e30
