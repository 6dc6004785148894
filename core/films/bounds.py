"""What a codestream says it will decode to, read from its header before any decoder runs.

A decoder allocates what the codestream declares, not what the file's size or a DICOM's Rows and Columns
suggest: 35 kB of JPEG can declare 30,000 x 30,000 pixels. ``declared_size`` reads the frame header of a
JPEG (every SOFn, hierarchical DHP and JPEG-LS SOF55), a JPEG 2000 codestream (SIZ, bare or inside a JP2
box file) or a PNG (IHDR); ``check_declared_size`` refuses, naming the file, anything over the pixel limit,
and a JPEG of more scans than :data:`MAX_JPEG_SCANS`: each scan of a progressive JPEG costs the decoder a
pass over the whole image, so 0.5 MB of repeated 75-byte scans kept a 49-megapixel decode busy for 11 s, and
50 MB would keep a core for most of an hour, with nothing able to interrupt it.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from core.errors import UnreadableImage

# Raster formats Pillow may open, for uploads and training folders alike (core/films/read.py): nothing else,
# so a file cannot reach a decoder we did not choose (EPS would reach Ghostscript).
RASTER_FORMATS = ("PNG", "JPEG")
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
FILM_SUFFIXES = RASTER_SUFFIXES | DICOM_SUFFIXES

# A film is grey or colour (with alpha at most); more components only multiply what a decoder allocates.
MAX_COMPONENTS = 4

_JPEG_SOI = b"\xff\xd8"
# Frame headers: SOF0-3, 5-7, 9-11, 13-15 (baseline, extended, progressive, lossless, hierarchical,
# arithmetic), DHP (hierarchical), SOF55 (JPEG-LS). C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE, 0xF7}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM
_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
# Where entropy-coded data (or garbage a decoder skips) ends: 0xFF then neither a stuffed 0x00, a restart
# marker nor a fill byte.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Real encoders write 1-3 scans (baseline) or about 6-12 (progressive); nvImageCodec refuses more than 256
# by default against the same denial of service (cure53's libjpeg-turbo report).
MAX_JPEG_SCANS = 256
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class DeclaredSize:
    """The size a codestream declares: ``codec`` names it for a person."""

    width: int
    height: int
    components: int
    codec: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def declared_size(data: bytes) -> DeclaredSize | None:
    """The largest frame a codestream declares, or None when ``data`` starts with no codestream we know."""
    if data.startswith(_JPEG_SOI):
        return _jpeg(data)
    if data.startswith(_J2K_SOC_SIZ):
        return _j2k_siz(data, 2)
    if data.startswith(_JP2_SIGNATURE):
        return _jp2(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    return None


def check_declared_size(data: bytes, label: str, max_pixels: int) -> None:
    """Raise UnreadableImage when the codestream in ``data`` declares more than ``max_pixels`` or odd components."""
    size = declared_size(data)
    if size is None:
        return
    if size.pixels > max_pixels:
        raise UnreadableImage(
            f"{label} is too large to decode safely: its {size.codec} data declares {size.width}x{size.height} "
            f"pixels, over the {max_pixels // 1_000_000} megapixel limit. Export the film at a lower resolution."
        )
    if size.components > MAX_COMPONENTS:
        raise UnreadableImage(
            f"{label} cannot be decoded: its {size.codec} data declares {size.components} colour components, "
            f"and a film has at most {MAX_COMPONENTS}. Export the film again as PNG, JPEG or DICOM."
        )
    if data.startswith(_JPEG_SOI) and jpeg_scans(data) > MAX_JPEG_SCANS:
        raise UnreadableImage(
            f"{label} is too costly to decode safely: its JPEG data holds more than {MAX_JPEG_SCANS} scans (a "
            "progressive JPEG has about ten). Export the film again as PNG, or as a baseline JPEG."
        )


def jpeg_scans(data: bytes, stop_after: int = MAX_JPEG_SCANS) -> int:
    """How many scans (SOS segments) the JPEG in ``data`` holds up to its end (EOI), counting no further than
    ``stop_after`` + 1. Markers are walked as a decoder walks them: segments skipped by their length, entropy-
    coded data, and any garbage a decoder would pass over with a warning, skipped to the next marker."""
    scans, at, end = 0, 2, len(data)
    while at + 2 <= end and scans <= stop_after:
        if data[at] != 0xFF or data[at + 1] == 0x00:  # not at a marker: on to the next one, as libjpeg resyncs
            found = _JPEG_NEXT_MARKER.search(data, at)
            if found is None:
                break
            at = found.start()
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == _JPEG_EOI:
            break
        if marker in _JPEG_NO_LENGTH:
            at += 2
            continue
        if at + 4 > end:
            break
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2:
            break
        at += 2 + length
        if marker == _JPEG_SOS:  # its entropy-coded data runs to the next marker
            scans += 1
            found = _JPEG_NEXT_MARKER.search(data, at)
            if found is None:
                break
            at = found.start()
    return scans


def _jpeg(data: bytes) -> DeclaredSize | None:
    """Walk the marker segments up to the first scan; every frame header on the way counts."""
    found: list[DeclaredSize] = []
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            break  # not a marker where one must be: the decoder will refuse the stream
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            at += 2
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        if marker in _JPEG_FRAMES and at + 10 <= end:
            height, width = struct.unpack_from(">HH", data, at + 5)
            codec = "JPEG-LS" if marker == 0xF7 else "JPEG"
            found.append(DeclaredSize(width, height, data[at + 9], codec))
        if marker == _JPEG_SOS or length < 2:
            break
        at += 2 + length
    return max(found, key=lambda s: (s.pixels, s.components)) if found else None


def _j2k_siz(data: bytes, at: int) -> DeclaredSize | None:
    """The SIZ segment starting at ``at`` (its marker): reference grid less the image offset, components."""
    if at + 40 > len(data):
        return None
    xsiz, ysiz, x_offset, y_offset = struct.unpack_from(">IIII", data, at + 6)
    (components,) = struct.unpack_from(">H", data, at + 38)
    return DeclaredSize(max(xsiz - x_offset, 0), max(ysiz - y_offset, 0), components, "JPEG 2000")


def _jp2(data: bytes) -> DeclaredSize | None:
    """A JP2 box file: the header box's ``ihdr`` and the codestream's SIZ, whichever declares more."""
    found = []
    for box, start, stop in _boxes(data, 0, len(data)):
        if box == b"jp2h":
            for inner, inner_start, _ in _boxes(data, start, stop):
                if inner == b"ihdr" and inner_start + 10 <= stop:
                    height, width, components = struct.unpack_from(">IIH", data, inner_start)
                    found.append(DeclaredSize(width, height, components, "JPEG 2000"))
        elif box == b"jp2c" and data[start : start + 4] == _J2K_SOC_SIZ:
            size = _j2k_siz(data, start + 2)
            if size is not None:
                found.append(size)
    return max(found, key=lambda s: (s.pixels, s.components)) if found else None


def _boxes(data: bytes, start: int, stop: int):
    """(type, content start, content stop) of each box between ``start`` and ``stop`` (ISO/IEC 15444-1 I.4)."""
    at = start
    while at + 8 <= stop:
        length, box = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1 and at + 16 <= stop:
            (length,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif length == 0:  # the last box runs to the end
            length = stop - at
        if length < header:
            return
        yield box, at + header, min(at + length, stop)
        at += length


def _png(data: bytes) -> DeclaredSize | None:
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    colour_type = data[25]
    components = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 1)
    return DeclaredSize(width, height, components, "PNG")


_DEFLATED = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def check_deflated_dicom(data: bytes, label: str, max_bytes: int) -> None:
    """A deflated DICOM data set is inflated whole before anything in it is read, so 8 MB can become 8 GB:
    inflate it here in small steps, keeping nothing, and refuse it once it passes ``max_bytes``."""
    syntax, start = _file_meta(data)
    if syntax != _DEFLATED:
        return
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    try:
        for at in range(start, len(data), 2**16):
            pending = data[at : at + 2**16]
            while pending:
                total += len(inflater.decompress(pending, 2**22))
                pending = inflater.unconsumed_tail
                if total > max_bytes:
                    raise UnreadableImage(
                        f"{label} is too large to decode safely: its deflated data expands to more than the "
                        f"{max_bytes // 2**20} MB limit. Export the film uncompressed or as JPEG/JPEG 2000."
                    )
            if inflater.eof:
                return
    except zlib.error:
        return  # a damaged stream: pydicom refuses it on its own


def _file_meta(data: bytes) -> tuple[bytes | None, int]:
    """The transfer syntax UID in a DICOM file's meta group (explicit VR little endian), and where it ends."""
    at = 132 if data[128:132] == b"DICM" else 0
    syntax = None
    while at + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, at)
        if group != 2:
            break
        if data[at + 4 : at + 6] in _LONG_VRS:
            if at + 12 > len(data):
                break
            (length,), header = struct.unpack_from("<I", data, at + 8), 12
        else:
            (length,), header = struct.unpack_from("<H", data, at + 6), 8
        if element == 0x0010:
            syntax = data[at + header : at + header + length].rstrip(b"\0 ")
        at += header + length
    return syntax, at
